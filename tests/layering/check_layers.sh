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

# owner_of HEADER: sets `owner` to the layer whose folder holds it, or "" (a system or
# generated header). In the shell itself, and remembered: a fork per include made the check
# slow.
declare -A owner_cache=()
owner_of() {
  if [[ -v owner_cache[$1] ]]; then owner=${owner_cache[$1]}; return; fi
  owner=""
  for l in base runtime front ir codegen graph sema cost plan driver; do
    [ -f "$src/${dir_of[$l]}/$1" ] && { owner=$l; break; }
  done
  owner_cache[$1]=$owner
}

bad=0
for layer in front ir codegen graph sema cost plan driver; do
  dir=$tree/${dir_of[$layer]}
  compgen -G "$dir/*.[ch]" >/dev/null || continue
  # One grep over the layer's files (FILE:LINE:TEXT): a fork per file made the check slow.
  while IFS=: read -r f line inc; do
    rel=${dir_of[$layer]}/${f##*/}
    [[ $inc =~ include[[:space:]]*\"([^\"]*)\" ]] && name=${BASH_REMATCH[1]}
    if [[ $name == */* ]]; then
      echo "$rel:$line: includes \"$name\" by a path; name the header and let the" \
           "layer's include directories find it"
      bad=1
      continue
    fi
    [ -f "$dir/$name" ] && continue  # its own layer
    owner_of "$name"
    [ -z "$owner" ] && continue
    if [[ " ${may_include[$layer]} " != *" $owner "* ]]; then
      echo "$rel:$line: layer '$layer' includes \"$name\" of layer '$owner'" \
           "(it may include: ${may_include[$layer]})"
      bad=1
    fi
  done < <(grep -HnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$dir"/*.[ch])
done
[ $bad = 0 ] && echo "layering: every include is of the same or a lower layer"
exit $bad
