#!/usr/bin/env bash
# bench/paper_table: the DHelix paper's configurations (samples/paper) simulated two ways with
# dhxc --simulate, beside the gains the paper published:
#
#   baseline  Megatron-style: 1F1B, no strands (strands { pair: off }, fold off)
#   dhx       the sample as written: paired strands and the overlap search; with a pipeline
#             (pp > 1), the W fold (fold: w) where the layers divide into 2·pp chunks, and
#             search: none (the overlap search is refused in a pipeline; the pipelined samples
#             say so already, and the sets below keep any other sample to it)
#   free      the same with the strands running free (search: none), as dhx already is in a
#             pipeline: faster on one stage, but it holds two micro-batches' activations where
#             the search holds about one
#
# Beside each step, its largest arena against the baseline's (mem).
#
#   bench/paper_table/run.sh [SAMPLE.dhx ...]      (BUILD_DIR=build by default)
#
# Where this build cannot lower part of a sample's strands block yet, the simulation leaves it
# out (dhxc says so on stderr) and the row says what was left out instead of a gain.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
dhxc=$build/bin/dhxc
work=$build/bench/paper_table/work
mkdir -p "$work"

# Published speedups over Megatron-LM (DHelix, 64 GPUs; ../shared papers summary): A40 per
# model, A800 a range over its models, H100 none (the faster network leaves less to hide).
published() {
  case $1 in
    llama_8b_a40x64) echo "1.31x" ;;
    llama_25b_a40x64) echo "1.40x" ;;
    llama_39b_a40x64) echo "1.27x" ;;
    gpt_6.7b_a40x64) echo "1.26x" ;;
    gpt_18b_a40x64) echo "1.40x" ;;
    gpt_30b_a40x64) echo "1.36x" ;;
    *a800x64*) echo "1.02-1.29x" ;;
    *) echo "-" ;;
  esac
}

step_of() {  # step_of JSON_FILE: step_time_s
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step_time_s"])' "$1"
}
memory_of() {  # memory_of JSON_FILE: peak_memory_bytes
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["peak_memory_bytes"])' "$1"
}

samples=("$@")
if [ ${#samples[@]} -eq 0 ]; then
  samples=("$root"/samples/paper/*.dhx)
fi
printf '%-26s %-9s %8s %8s %6s %6s %8s %6s %6s %10s  %s\n' sample layout base_s dhx_s gain mem \
  free_s gain mem published note
for f in "${samples[@]}"; do
  name=$(basename "$f" .dhx)
  layout=$(grep -o 'parallel {[^}]*}' "$f" | grep -o 'dp: [0-9]*, tp: [0-9]*, pp: [0-9]*' |
           tr -d 'dtp: ' | sed 's/.*/(&)/')
  "$dhxc" "$f" --simulate --json --set schedule.strands.pair=off \
    --set schedule.strands.fold=off >"$work/$name.base.json" 2>"$work/$name.base.err"
  pp=$(grep -o 'pp: [0-9]*' "$f" | head -1 | tr -dc '0-9')
  layers=$(grep -o 'layers: [0-9]*' "$f" | head -1 | tr -dc '0-9')
  dhx_sets=() note=""
  if (( ${pp:-1} > 1 )) && grep -q "strands" "$f"; then
    dhx_sets=(--set schedule.strands.search=none --set schedule.strands.fold=off)
    note="search: none (refused in a pipeline)"
    if (( layers % (2 * pp) == 0 )); then
      dhx_sets=(--set schedule.strands.search=none --set schedule.strands.fold=w)
      note="fold: w, $note"
    fi
  fi
  "$dhxc" "$f" --simulate --json "${dhx_sets[@]}" >"$work/$name.dhx.json" \
    2>"$work/$name.dhx.err"
  if (( ${pp:-1} == 1 )) && grep -q "strands" "$f"; then
    "$dhxc" "$f" --simulate --json --set schedule.strands.search=none >"$work/$name.free.json" \
      2>"$work/$name.free.err"
  else
    cp "$work/$name.dhx.json" "$work/$name.free.json"
  fi
  base=$(step_of "$work/$name.base.json")
  dhx=$(step_of "$work/$name.dhx.json")
  free=$(step_of "$work/$name.free.json")
  base_mem=$(memory_of "$work/$name.base.json")
  dhx_mem=$(memory_of "$work/$name.dhx.json")
  free_mem=$(memory_of "$work/$name.free.json")
  if grep -q "simulating without strand interleaving" "$work/$name.dhx.err"; then
    note="${note:+$note; }strands left out (pipeline + search): dhx = baseline"
  fi
  if ! grep -q "strands" "$f"; then note="no strands block"; fi
  awk -v n="$name" -v l="$layout" -v b="$base" -v d="$dhx" -v fr="$free" -v bm="$base_mem" \
    -v dm="$dhx_mem" -v fm="$free_mem" -v p="$(published "$name")" -v note="$note" 'BEGIN {
      printf "%-26s %-9s %8.2f %8.2f %5.2fx %+5.1f%% %8.2f %5.2fx %+5.1f%% %10s  %s\n", n, l, b,
        d, b / d, 100 * (dm / bm - 1), fr, b / fr, 100 * (fm / bm - 1), p, note }'
done
