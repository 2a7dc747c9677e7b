#!/usr/bin/env bash
# Compiles every top-level sample (all of them lower; samples/paper/ holds the GPU-scale ones) on
# every kind of layout: data parallelism (with and without sharded optimizer state), tensor
# parallelism (with and without sequence parallelism), pipelines (plain, interleaved, mixed with
# the others), and the GPT-2-small benchmark plan, then runs the memory verifier on every rank of
# each plan.bin as dhxrun would read it. A sample that fails to compile fails the test.
# Environment: DHXC MEMPLAN_TESTS SRC WORK
set -euo pipefail
work="$WORK/compiled"
rm -rf "$work" && mkdir -p "$work"
# dp,tp,pp,virtual,zero,sp
layouts=(1,1,1,1,0,off 2,1,1,1,0,off 2,1,1,1,1,off 1,2,1,1,0,off 1,2,1,1,0,on 1,1,2,1,0,off
         1,1,2,2,0,off 1,1,4,1,0,off 2,1,2,1,1,off 1,2,2,1,0,on)
dirs=()
for file in "$SRC"/samples/*.dhx; do
  name=$(basename "$file" .dhx)
  for layout in "${layouts[@]}"; do
    IFS=, read -r dp tp pp virtual zero sp <<<"$layout"
    out="$work/$name.dp$dp.tp$tp.pp$pp.v$virtual.zero$zero.sp$sp"
    # global_batch 16 = micro_batch 4 x dp x micro-batches per step, for every dp
    "$DHXC" "$file" -o "$out" --set schedule.parallel.dp=$dp --set schedule.parallel.tp=$tp \
      --set schedule.parallel.pp=$pp --set schedule.parallel.virtual=$virtual \
      --set schedule.parallel.zero=$zero --set schedule.parallel.sp=$sp \
      --set train.micro_batch=4 --set train.global_batch=16 2>"$out.err" || { cat "$out.err"; exit 1; }
    dirs+=("$out")
  done
done
"$DHXC" "$SRC/bench/cpu_train/gpt2_small.dhx" -o "$work/gpt2_small"
dirs+=("$work/gpt2_small")
# tiny and tiny_llama on every layout, and the benchmark
[ ${#dirs[@]} -ge $((2 * ${#layouts[@]} + 1)) ] || { echo "only ${#dirs[@]} plans compiled"; exit 1; }
"$MEMPLAN_TESTS" memplan_arenas_of_compiled_plans_have_no_live_overlap "${dirs[@]}"
