#!/usr/bin/env bash
# bench/cpu_train: training tokens/s of a GPT-2-small-shaped model on one rank using both
# cores, the FLOP/s it achieves, and the OpenBLAS sgemm ceiling measured in the same run.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
work=$build/bench/cpu_train/work
mkdir -p "$work"
[ -f "$root/data/tiny_train.bin" ] || BUILD_DIR=$build bash "$root/scripts/corpus.sh" >/dev/null
"$build/bin/dhxc" "$root/bench/cpu_train/gpt2_small.dhx" -o "$work/plan" \
  --set "data.train=\"$root/data/tiny_train.bin\"" "$@"
"$build/bin/dhxrun" "$work/plan" --metrics "$work/metrics.jsonl"
"$build/bin/cpu_train" "$work/plan" "$work/metrics.jsonl"
