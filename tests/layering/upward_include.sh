#!/bin/bash
# upward_include.sh SOURCE_DIR WORK_DIR — copies the compiler's folders to WORK_DIR, adds an
# include of a higher layer's header to one lower-layer file at a time, and expects
# check_layers.sh to refuse each copy (and to accept the unchanged one). One copy serves every
# case: the file is restored after each.
set -u
src=$1 work=$2
check=$(dirname "$0")/check_layers.sh
rm -rf "$work" && mkdir -p "$work/compiler" "$work/runtime"
cp -r "$src/compiler/." "$work/compiler/" && cp -r "$src/runtime/base" "$work/runtime/"
bash "$check" "$src" "$work" >/dev/null || { echo "the unchanged copy was refused"; exit 1; }
status=0
for case in "compiler/ir/graph.c passes.h" "compiler/ir/graph.h sema.h" \
            "compiler/graph/lower.c sema.h" "compiler/graph/elaborate.c compile.h" \
            "compiler/codegen/codegen.c lower.h" "compiler/front/diag.c graph.h" \
            "compiler/ir/ops.c plan.h" "compiler/graph/fuse.c plan.h" \
            "compiler/cost/cost.c simulate.h" "compiler/cost/cost.c graph.h" \
            "compiler/ir/ops.c ../graph/lower.h"; do
  set -- $case
  printf '#include "%s"\n' "$2" >> "$work/$1"
  if bash "$check" "$src" "$work" >/dev/null; then
    echo "not refused: $1 including \"$2\""
    status=1
  else
    echo "refused: $1 including \"$2\""
  fi
  cp "$src/$1" "$work/$1"  # the unchanged copy again, for the next case
done
exit $status
