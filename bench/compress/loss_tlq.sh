#!/usr/bin/env bash
# bench/compress/loss_tlq.sh: what TLq-HS costs in loss. The tiny GPT (samples/tiny.dhx)
# trained 300 steps on 4 ranks, 2 per node (cpu(ranks: 4, per_node: 2)), dp 4 with zero 1,
# with and without compress { grads: tlq(intra: 8, inter: 4, hadamard: 32, group: 128) }:
# prints the final validation losses and their relative difference.
#   bench/compress/loss_tlq.sh [--set PATH=VALUE]...   (extra settings for both runs)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
work=$build/bench/compress/work
mkdir -p "$work"
[ -f "$root/data/tiny_train.bin" ] || BUILD_DIR=$build bash "$root/scripts/corpus.sh" >/dev/null
mpirun=${MPIRUN:-mpirun --oversubscribe}

final_val() {  # final_val METRICS: the last validation loss
  grep -o '"val_loss":[0-9.eE+-]*' "$1" | tail -1 | cut -d: -f2
}

for mode in off on; do
  grads=off
  [ "$mode" = on ] && grads="tlq(intra: 8, inter: 4, hadamard: 32, group: 128)"
  "$build/bin/dhxc" "$root/samples/tiny.dhx" -o "$work/$mode" \
    --set "cluster=cpu(ranks: 4, per_node: 2)" --set schedule.parallel.dp=4 \
    --set schedule.parallel.zero=1 --set train.micro_batch=4 --set train.steps=300 \
    --set "schedule.compress.grads=$grads" "$@"
  # shellcheck disable=SC2086
  $mpirun -np 4 "$build/bin/dhxrun" "$work/$mode" --quiet --metrics "$work/$mode.jsonl"
done
off=$(final_val "$work/off.jsonl")
on=$(final_val "$work/on.jsonl")
awk -v off="$off" -v on="$on" 'BEGIN {
  printf "final validation loss: uncompressed %.4f, tlq %.4f, relative difference %+.2f%%\n",
         off, on, 100 * (on - off) / off }'
