#!/usr/bin/env bash
# bench/compress/loss.sh: what qWD (compress { params: qwd(bits: 4, group: 2048) }) costs in
# loss and saves on the wire. Trains the tiny GPT (samples/tiny.dhx) for STEPS steps (default
# 300) at dp 4, zero 1, with and without qWD, and prints the final validation losses, their
# relative difference, and the data-parallel parameter bytes each rank sends per step.
# Minutes on a laptop; not a test. Usage: bench/compress/loss.sh [STEPS] (BUILD_DIR, MPIRUN)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
mpirun=${MPIRUN:-mpirun --oversubscribe}
steps=${1:-300}
work=$build/bench/compress/work
mkdir -p "$work"
[ -f "$root/data/tiny_train.bin" ] || BUILD_DIR=$build bash "$root/scripts/corpus.sh" >/dev/null

field() {  # field FILE LINE_KEY FIELD: FIELD of the first line holding LINE_KEY
  grep -m1 -F "$2" "$1" | sed -E "s/.*\"$3\":\"?([^,}\"]*).*/\\1/"
}

for mode in plain qwd; do
  sets=()
  [ "$mode" = qwd ] && sets=(--set 'schedule.compress.params=qwd(bits: 4, group: 2048)')
  "$build/bin/dhxc" "$root/samples/tiny.dhx" -o "$work/$mode" \
    --set "data.train=\"$root/data/tiny_train.bin\"" --set "data.val=\"$root/data/tiny_val.bin\"" \
    --set schedule.parallel.dp=4 --set schedule.parallel.zero=1 --set train.micro_batch=4 \
    --set train.global_batch=16 --set train.steps="$steps" "${sets[@]}"
  $mpirun -np 4 "$build/bin/dhxrun" "$work/$mode" --quiet --metrics "$work/$mode.jsonl"
done

plain=$(field "$work/plain.jsonl" '"summary":true' final_val_loss)
qwd=$(field "$work/qwd.jsonl" '"summary":true' final_val_loss)
plain_bytes=$(field "$work/plain.jsonl" '"step":2,' comm_bytes_dp_params)
qwd_bytes=$(field "$work/qwd.jsonl" '"step":2,' comm_bytes_dp_params)
echo "tiny GPT, dp 4, zero 1, $steps steps"
echo "final validation loss: plain $plain, qwd $qwd"
awk -v a="$plain" -v b="$qwd" 'BEGIN {printf "relative difference: %.2e\n", (b - a) / a}'
echo "dp_params bytes per step and rank: plain $plain_bytes, qwd $qwd_bytes"
awk -v a="$plain_bytes" -v b="$qwd_bytes" \
  'BEGIN {printf "qwd sends %.2fx less than f32 pieces, %.2fx less than bf16 pieces\n", a / b, a / 2 / b}'
echo "replicas equal at the end: $(field "$work/qwd.jsonl" '"summary":true' replicas_equal)"
