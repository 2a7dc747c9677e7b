#!/usr/bin/env bash
# bench/strands_cpu: paired strands against the unpaired schedule on the CPU backend, under an
# emulated network whose communication takes about as long as the computation.
#
#   bench/strands_cpu/run.sh            (BUILD_DIR=build by default; STEPS=6)
#
# 1. Calibrates: the unpaired plan runs with no emulated network and dhxrun --profile gives its
#    compute per step C; the bandwidth is set so that the bytes a rank sends per step take C.
# 2. At that network and at half and twice its speed: the unpaired and the paired plan run
#    (median step time over the steps after the first), the unpaired run's profile gives its
#    compute and communication per step measured alone, limit = max(compute, communication),
#    and dhxc --simulate --profile predicts both step times from that profile.
# 3. Prints, last, `strands: off=<ms> on=<ms> limit=<ms>` at the calibrated network.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
steps=${STEPS:-6}
work=$build/bench/strands_cpu/work
rm -rf "$work" && mkdir -p "$work"
cd "$work"
[ -f "$root/data/tiny_train.bin" ] || BUILD_DIR=$build bash "$root/scripts/corpus.sh" >/dev/null
dhxc=$build/bin/dhxc dhxrun=$build/bin/dhxrun report=$build/bin/strands_report
# The harness runs as whatever user the machine gives it, two ranks on however many cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun=(mpirun -np 2 --oversubscribe)
model=$root/bench/strands_cpu/gpt_tp2.dhx
common=(--set "data.train=\"$root/data/tiny_train.bin\"" --set train.steps="$steps")
# `on` lets the two strand streams run free (search: none), taking a rank's core in the turns
# dhxc chose for the cluster's network (plan.h: turn), so each network compiles its own;
# `on_dp` holds them to the overlap search's alignment.
paired=(--set schedule.strands.pair=on --set schedule.strands.search=none)
paired_dp=(--set schedule.strands.pair=on --set schedule.strands.search=dp)
"$dhxc" "$model" -o off "${common[@]}" 2>/dev/null

run() {  # run PLAN NET OUT [dhxrun options...]
  local plan=$1 net=$2 out=$3; shift 3
  "${mpirun[@]}" "$dhxrun" "$plan" --quiet --net-emulate "$net" --metrics "$out.jsonl" "$@"
}
simulate() {  # simulate NET_BPS PROFILE [dhxc options...]: the simulated step in ms
  local bps=$1 prof=$2; shift 2
  "$dhxc" "$model" --simulate --json "${common[@]}" --profile "$prof" \
    --set "cluster=cpu(net: $bps B/s, latency: 20 us)" "$@" 2>/dev/null > sim.json
  "$report" sim-ms sim.json
}

run off off calibrate --profile calibrate.json
read -r compute0 _ < <("$report" limit calibrate.json)
bytes=$("$report" bytes calibrate.jsonl)
base_bps=$(awk -v b="$bytes" -v c="$compute0" 'BEGIN { printf "%.0f", b / (c / 1e3) }')
echo "compute alone: $compute0 ms per step; rank 0 sends $bytes bytes per step"
echo "calibrated network: $base_bps B/s with 20 us latency per message"
echo
printf '%-12s %8s %8s %8s %8s %8s %7s %8s %8s %8s %8s\n' network off_ms on_ms on_dp_ms \
  compute comm on/off limit_ms on/limit sim_off sim_on
last=""
for factor in 2 1 0.5; do  # communication takes about factor x compute
  bps=$(awk -v b="$base_bps" -v f="$factor" 'BEGIN { printf "%.0f", b / f }')
  net="${bps}B/s,20us"
  cluster=(--set "cluster=cpu(net: $bps B/s, latency: 20 us)")
  "$dhxc" "$model" -o on "${common[@]}" "${cluster[@]}" "${paired[@]}" 2>/dev/null
  "$dhxc" "$model" -o on_dp "${common[@]}" "${cluster[@]}" "${paired_dp[@]}" 2>/dev/null
  run off "$net" "off_$factor" --profile "off_$factor.json"
  run on "$net" "on_$factor"
  run on_dp "$net" "on_dp_$factor"
  off=$("$report" step-ms "off_$factor.jsonl")
  on=$("$report" step-ms "on_$factor.jsonl")
  on_dp=$("$report" step-ms "on_dp_$factor.jsonl")
  read -r compute comm < <("$report" limit "off_$factor.json")
  sim_off=$(simulate "$bps" "off_$factor.json")
  sim_on=$(simulate "$bps" "off_$factor.json" "${paired[@]}")
  row=$(awk -v off="$off" -v on="$on" -v dp="$on_dp" -v c="$compute" -v m="$comm" \
    -v so="$sim_off" -v sn="$sim_on" -v net="$((bps / 1000000)) MB/s" 'BEGIN {
      limit = c > m ? c : m
      printf "%-12s %8.1f %8.1f %8.1f %8.1f %8.1f %7.2f %8.1f %8.2f %8.1f %8.1f", net, off, on,
        dp, c, m, on / off, limit, on / limit, so, sn }')
  echo "$row"
  if [ "$factor" = 1 ]; then
    last=$(awk -v off="$off" -v on="$on" -v c="$compute" -v m="$comm" -v so="$sim_off" \
      -v sn="$sim_on" 'BEGIN { limit = c > m ? c : m
        printf "simulated vs measured: off %+.1f%%, on %+.1f%%\n", 100 * (so / off - 1),
          100 * (sn / on - 1)
        printf "strands: off=%.1f on=%.1f limit=%.1f", off, on, limit }')
  fi
done
echo
echo "$last"
