#!/usr/bin/env bash
# bench/plan_scale: how long dhxc takes to lower, verify and write the plan of an 80-layer,
# 8192-hidden model (tp 8, pp 8) as the data-parallel degree grows: 64 ranks per dp.
#
#   bash bench/plan_scale/run.sh [DP...]      default: 1 2 4 16 (16 = 1024 ranks)
#
# Prints, per layout, the ranks, dhxc's wall time per pass (dhxc --time-passes), the total and
# the size of plan.bin, then the time per rank relative to the smallest layout: time growing
# no faster than linearly in ranks shows as a flat or falling ratio. The goal for 1024 ranks is
# under one second; a 4096-rank run (dp 64) needs about four times the disk of 1024.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
work=${WORK:-$build/bench/plan_scale/work}
mkdir -p "$work"
dps=("$@")
[ ${#dps[@]} -gt 0 ] || dps=(1 2 4 16)
base_per_rank=""
printf '%6s %6s %10s %12s %14s\n' dp ranks "seconds" "plan MiB" "s per rank"
for dp in "${dps[@]}"; do
  ranks=$((dp * 64))
  global=$((dp * 8))  # 8 micro-batches per step on every layout
  rm -rf "$work/plan"
  start=$(date +%s.%N)
  "$build/bin/dhxc" "$root/bench/plan_scale/big.dhx" -o "$work/plan" --time-passes \
    --set schedule.parallel.dp="$dp" --set cluster.ranks="$ranks" \
    --set train.global_batch="$global" 2>"$work/passes_$dp.txt" || {
      cat "$work/passes_$dp.txt"; exit 1; }
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
  mib=$(( $(stat -c %s "$work/plan/plan.bin") / 1048576 ))
  per=$(awk -v s="$secs" -v r="$ranks" 'BEGIN { print s / r }')
  [ -n "$base_per_rank" ] || base_per_rank=$per
  printf '%6d %6d %10.2f %12d %14.5f  (x%.2f of the first)\n' "$dp" "$ranks" "$secs" "$mib" \
    "$per" "$(awk -v p="$per" -v b="$base_per_rank" 'BEGIN { print p / b }')"
  grep "pass" "$work/passes_$dp.txt" | sed 's/^dhxc: /         /'
done
rm -rf "$work/plan"
