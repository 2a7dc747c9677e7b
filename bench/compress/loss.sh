#!/usr/bin/env bash
# bench/compress/loss.sh: what SDP4Bit's compression costs in loss and saves on the wire. Trains
# the tiny GPT (samples/tiny.dhx) for STEPS steps (default 300) on 4 ranks, 2 per node
# (cpu(ranks: 4, per_node: 2)), dp 4, plain and compressed:
#   zero 1  with both techniques: params: qwd(bits: 4, group: 2048) and grads: tlq(intra: 8,
#           inter: 4, hadamard: 32, group: 128)
#   zero 3  with TLq-HS (qWD needs the whole replica that zero 3 does not keep)
# and prints the final validation losses, their relative difference, and the data-parallel
# parameter and gradient bytes each rank sends per step, in all and across nodes (the mean over
# ranks), against the bf16 equivalent (half the plain f32 run's). Minutes; not a test.
#   bench/compress/loss.sh [STEPS]      (BUILD_DIR, MPIRUN)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
# The harness runs as whatever user the machine gives it, four ranks on however many cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun=${MPIRUN:-mpirun --oversubscribe}
steps=${1:-300}
work=$build/bench/compress/work
mkdir -p "$work"
[ -f "$root/data/tiny_train.bin" ] || BUILD_DIR=$build bash "$root/scripts/corpus.sh" >/dev/null
qwd='schedule.compress.params=qwd(bits: 4, group: 2048)'
tlq='schedule.compress.grads=tlq(intra: 8, inter: 4, hadamard: 32, group: 128)'

field() {  # field FILE LINE_KEY FIELD: FIELD of the first line holding LINE_KEY
  grep -m1 -F "$2" "$1" | sed -E "s/.*\"$3\":\"?([^,}\"]*).*/\\1/"
}

train() {  # train NAME ZERO [--set ...]
  local name=$1 zero=$2; shift 2
  "$build/bin/dhxc" "$root/samples/tiny.dhx" -o "$work/$name" \
    --set "data.train=\"$root/data/tiny_train.bin\"" --set "data.val=\"$root/data/tiny_val.bin\"" \
    --set "cluster=cpu(ranks: 4, per_node: 2)" --set schedule.parallel.dp=4 \
    --set schedule.parallel.zero="$zero" --set train.micro_batch=4 --set train.global_batch=16 \
    --set train.steps="$steps" "$@" 2>/dev/null
  # shellcheck disable=SC2086
  $mpirun -np 4 "$build/bin/dhxrun" "$work/$name" --quiet --metrics "$work/$name.jsonl"
}

report() {  # report PLAIN PACKED WHAT
  local a=$work/$1.jsonl b=$work/$2.jsonl
  local la lb
  la=$(field "$a" '"summary":true' final_val_loss)
  lb=$(field "$b" '"summary":true' final_val_loss)
  echo "$3, $steps steps"
  awk -v a="$la" -v b="$lb" 'BEGIN {printf "  final validation loss: plain %.4f, compressed %.4f (%+.2f%%)\n", a, b, 100 * (b - a) / a}'
  for kind in dp_params dp_grads inter_node_dp_params inter_node_dp_grads; do
    local ba bb
    ba=$(field "$a" '"step":2,' "comm_bytes_$kind")
    bb=$(field "$b" '"step":2,' "comm_bytes_$kind")
    awk -v k="$kind" -v a="$ba" -v b="$bb" 'BEGIN {
      if (b > 0) printf "  %s bytes per step and rank: plain %d, compressed %d: %.2fx below f32, %.2fx below bf16\n", k, a, b, a / b, a / 2 / b
      else printf "  %s bytes per step and rank: plain %d, compressed %d\n", k, a, b }'
  done
}

train plain1 1
train both1 1 --set "$qwd" --set "$tlq"
train plain3 3
train tlq3 3 --set "$tlq"
report plain1 both1 "tiny GPT, 2 nodes of 2, dp 4, zero 1, qWD + TLq-HS"
report plain3 tlq3 "tiny GPT, 2 nodes of 2, dp 4, zero 3, TLq-HS"
