#!/usr/bin/env bash
# Memory cases: what `dhxc --emit=memory` says about a cpu cluster against what the plan makes
# dhxrun allocate, and the warning when this machine cannot hold it.
# Usage: memory.sh CASE   (environment: DHXC MEMORY_CHECK SRC WORK)
set -euo pipefail
case_name=$1
work="$WORK/$case_name"
rm -rf "$work" && mkdir -p "$work" && cd "$work"

case $case_name in
  arena)
    # Six layouts of two models: the report's total is each rank's arena in plan.bin, and no
    # row is negative (ZeRO 3's sharded weights count as the pieces the arena holds); the last
    # two pair strands, on one stage with the overlap search and in a W-folded pipeline.
    n=0
    while IFS='|' read -r file sets; do
      n=$((n + 1))
      read -r -a args <<<"$sets"
      "$DHXC" "$SRC/$file" --emit=memory "${args[@]}" >report$n.txt
      grep -q "per rank (host memory)" report$n.txt || { cat report$n.txt; exit 1; }
      if grep -qE '^  [a-z]+ +-' report$n.txt; then cat report$n.txt; exit 1; fi
      "$DHXC" "$SRC/$file" -o plan$n "${args[@]}"
      "$MEMORY_CHECK" plan$n report$n.txt
    done <<'CASES'
samples/tiny.dhx|
samples/tiny.dhx|--set schedule.parallel.dp=1 --set train.micro_batch=4 --set train.global_batch=4
samples/tiny_llama.dhx|--set model.layers=2
samples/tiny.dhx|--set schedule.parallel.zero=3
samples/tiny.dhx|--set schedule.parallel.dp=1 --set train.micro_batch=4 --set train.global_batch=16 --set schedule.strands.pair=on --set schedule.strands.search=dp
samples/tiny.dhx|--set schedule.parallel.dp=1 --set schedule.parallel.pp=2 --set train.micro_batch=4 --set train.global_batch=32 --set schedule.strands.pair=on --set schedule.strands.search=none --set schedule.strands.fold=w
CASES
    ;;
  host)
    # A model whose arena (about 8 TiB per rank) no test machine has.
    "$DHXC" check "$SRC/samples/tiny.dhx" --set model.vocab=65536 --set model.hidden=262144 \
      --set model.heads=64 --set model.ffn=1024 --set model.layers=1 2>err.txt
    grep -E "warning: each rank needs [0-9.]+ GiB of host memory; this machine has [0-9.]+ GiB available" \
      err.txt || { cat err.txt; exit 1; }
    ;;
  *)
    echo "unknown case $case_name"; exit 2 ;;
esac
