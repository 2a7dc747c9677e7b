#!/usr/bin/env bash
# Compiles every top-level sample (all of them lower; samples/paper/ holds the GPU-scale ones) at
# dp 1 and 2 (and dp 2 with sharded optimizer state), and the GPT-2-small benchmark plan, then runs the memory verifier on each plan.bin
# as dhxrun would read it. A sample that fails to compile fails the test.
# Environment: DHXC MEMPLAN_TESTS SRC WORK
set -euo pipefail
work="$WORK/compiled"
rm -rf "$work" && mkdir -p "$work"
dirs=()
for file in "$SRC"/samples/*.dhx; do
  name=$(basename "$file" .dhx)
  for layout in 1,0 2,0 2,1; do
    IFS=, read -r dp zero <<<"$layout"
    out="$work/$name.dp$dp.zero$zero"
    # global_batch 16 = micro_batch 8 x dp x accumulation, for both dp
    "$DHXC" "$file" -o "$out" --set schedule.parallel.dp=$dp --set schedule.parallel.zero=$zero \
      --set train.micro_batch=8 --set train.global_batch=16 2>"$out.err" || { cat "$out.err"; exit 1; }
    dirs+=("$out")
  done
done
"$DHXC" "$SRC/bench/cpu_train/gpt2_small.dhx" -o "$work/gpt2_small"
dirs+=("$work/gpt2_small")
# tiny and tiny_llama at two layouts each, and the benchmark
[ ${#dirs[@]} -ge 5 ] || { echo "only ${#dirs[@]} plans compiled"; exit 1; }
"$MEMPLAN_TESTS" memplan_arenas_of_compiled_plans_have_no_live_overlap "${dirs[@]}"
