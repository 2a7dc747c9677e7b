#!/bin/bash
# check_layers.sh SOURCE_DIR [TREE_DIR] — fails when a compiler layer includes a header of a
# layer above it (or beside it). The layers, bottom up, and what each may include:
#
#   base     runtime/base: the plan's vocabulary (dtypes, argument kinds, registers, programs)
#   front    syntax, configuration, diagnostics
#   ir       tensors, nodes, low-level ops, the op table        (front, base)
#   codegen  kernels through LLVM                               (ir, front, base, runtime)
#   graph    elaboration and the passes over the op lists       (codegen, ir, front, base)
#   sema     checks on the definitions and the graph            (graph and below, runtime)
#   cost     instruction times from a plan and its cluster      (front, base, runtime)
#   plan     the pipeline per rank, the plan writer, verifiers  (cost, sema and below, runtime)
#   driver   dhxc's command line                                (everything)
#
# "runtime" is the plan library (runtime/plan.h and its helpers): code that writes or reads a
# plan. Headers are named without a path (the build's include directories find them), so an
# include with a path is an error too, except within a folder. TREE_DIR (default SOURCE_DIR)
# is where the files are read, so the test can be proven on a copy with a bad include.
set -u
src=$1
tree=${2:-$1}

declare -A dir_of=(
  [base]=runtime/base [runtime]=runtime [front]=compiler/front [ir]=compiler/ir
  [codegen]=compiler/codegen [graph]=compiler/graph [sema]=compiler/sema
  [cost]=compiler/cost [plan]=compiler/plan [driver]=compiler/driver
)
declare -A may_include=(
  [front]="front"
  [ir]="ir front base"
  [codegen]="codegen ir front base runtime"
  [graph]="graph codegen ir front base"
  [sema]="sema graph codegen ir front base runtime"
  [cost]="cost front base runtime"
  [plan]="plan cost sema graph codegen ir front base runtime"
  [driver]="driver plan cost sema graph codegen ir front base runtime"
)

# The layer whose folder holds header $1, or "" (a system or generated header).
owner_of() {
  for l in base runtime front ir codegen graph sema cost plan driver; do
    [ -f "$src/${dir_of[$l]}/$1" ] && { echo "$l"; return; }
  done
}

bad=0
for layer in front ir codegen graph sema cost plan driver; do
  for f in "$tree/${dir_of[$layer]}"/*.[ch]; do
    [ -f "$f" ] || continue
    rel=${dir_of[$layer]}/$(basename "$f")
    while IFS=: read -r line inc; do
      name=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]*)".*/\1/' <<<"$inc")
      if [[ $name == */* ]]; then
        echo "$rel:$line: includes \"$name\" by a path; name the header and let the" \
             "layer's include directories find it"
        bad=1
        continue
      fi
      [ -f "$tree/${dir_of[$layer]}/$name" ] && continue  # its own layer
      owner=$(owner_of "$name")
      [ -z "$owner" ] && continue
      if [[ " ${may_include[$layer]} " != *" $owner "* ]]; then
        echo "$rel:$line: layer '$layer' includes \"$name\" of layer '$owner'" \
             "(it may include: ${may_include[$layer]})"
        bad=1
      fi
    done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
  done
done
[ $bad = 0 ] && echo "layering: every include is of the same or a lower layer"
exit $bad
