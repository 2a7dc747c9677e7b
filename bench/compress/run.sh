#!/usr/bin/env bash
# bench/compress: SDP4Bit's compression on the simulated clusters of its evaluation. For GPT
# models from 1.3B to 18B parameters, sharded data parallelism (zero 1) on sequences of 1024,
# prints the simulated step time and exposed communication without compression and with both of
# SDP4Bit's techniques (qWD weights at 4 bits, TLq-HS gradients at 8 bits in a node and 4
# across), the speedup, the same compressed layout with paired strands (search: dp: where the
# saved bytes that remain exposed get hidden), and the speedup SDP4Bit published for the same
# model and cluster (end-to-end TFLOP/s per GPU).
#
#   bench/compress/run.sh          (BUILD_DIR=build by default)
#
# The clusters (a100x4_slingshot.dhx, h800x8_ib.dhx) say what they assume of the networks. The
# layouts follow the paper where it gives them (6.7B at tp 4, 18B at tp 8 on the H800s) and
# otherwise use the smallest tensor-parallel degree that fits (tp 4 from 6.7B on).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
dhxc=$build/bin/dhxc
here=$root/bench/compress
compress=(--set 'schedule.compress.params=qwd(bits: 4, group: 2048)'
          --set 'schedule.compress.grads=tlq(intra: 8, inter: 4, group: 128, hadamard: 32)')

sim() {  # sim FILE [options...]: the simulated step time and exposed communication, seconds
  "$dhxc" "$@" --simulate --json 2>/dev/null |
    sed -E 's/.*"step_time_s":([0-9.eE+-]+).*"exposed_comm_s":([0-9.eE+-]+).*/\1 \2/'
}
paired=(--set schedule.strands.pair=on --set schedule.strands.search=dp)

# cluster file, model, layers, hidden, heads, tp, micro_batch, published speedup
configs=(
  "a100x4_slingshot 1.3B 24 2048 16 1 4 2.39"
  "a100x4_slingshot 2.7B 32 2560 32 1 4 2.43"
  "a100x4_slingshot 6.7B 32 4096 32 4 1 3.44"
  "a100x4_slingshot 13B 40 5120 40 4 1 2.68"
  "a100x4_slingshot 18B 40 6144 48 4 1 2.92"
  "h800x8_ib 1.3B 24 2048 16 1 2 1.53"
  "h800x8_ib 2.7B 32 2560 32 1 2 1.63"
  "h800x8_ib 6.7B 32 4096 32 4 1 2.97"
  "h800x8_ib 13B 40 5120 40 4 1 3.85"
  "h800x8_ib 18B 40 6144 48 8 1 4.08"
)
printf '%-17s %-5s %-14s %8s %8s %8s %8s %9s %8s %8s %8s\n' cluster model layout plain_s \
  exposed sdp4bit exposed speedup paired exposed published
for c in "${configs[@]}"; do
  read -r file model layers hidden heads tp micro published <<< "$c"
  gpus=$([ "$file" = h800x8_ib ] && echo 128 || echo 64)
  dp=$((gpus / tp))
  sp=$([ "$tp" -gt 1 ] && echo on || echo off)
  opts=("$here/$file.dhx" --set model.layers="$layers" --set model.hidden="$hidden"
        --set model.heads="$heads" --set schedule.parallel.tp="$tp"
        --set schedule.parallel.dp="$dp" --set schedule.parallel.sp="$sp"
        --set train.micro_batch="$micro")
  read -r plain plain_x < <(sim "${opts[@]}")
  read -r packed packed_x < <(sim "${opts[@]}" "${compress[@]}")
  # Pairing runs two micro-batches side by side: with one per rank, half-size ones.
  pair_micro=$micro
  [ $((256 / (micro * dp))) -ge 2 ] || pair_micro=$((micro / 2))
  read -r both both_x < <(sim "${opts[@]}" "${compress[@]}" "${paired[@]}" \
                             --set train.micro_batch="$pair_micro")
  awk -v f="$file" -v m="$model" -v l="dp $dp tp $tp" -v a="$plain" -v ax="$plain_x" \
      -v b="$packed" -v bx="$packed_x" -v c="$both" -v cx="$both_x" -v p="$published" 'BEGIN {
    printf "%-17s %-5s %-14s %8.3f %8.3f %8.3f %8.3f %8.2fx %8.3f %8.3f %7.2fx\n", f, m, l, a, ax,
      b, bx, a / b, c, cx, p }'
done
