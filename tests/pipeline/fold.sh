#!/usr/bin/env bash
# W-folded pipelines (strands { fold: w }) as compiled plans, without training:
#   placement   stage g holds layer chunks g and 2pp-1-g (pp 2 and 3, one layer per chunk):
#               stage 0 the embeddings, the first and the last block, the loss and every load;
#               no stage sends to or receives from itself (the bottom hands over in place)
#   plans       plans for pp 2, 3 and 4, paired or not, over 1, 2 and 5 micro-batches per step
#               compile (dhxc -o runs the cross-rank verifier, which proves they cannot hang)
#   refusals    given stage sizes with fold: w, and paired strands with zero: 2 in a W of
#               three stages, are refused with the reason
# Usage: fold.sh CASE   (environment: DHXC SRC WORK)
set -euo pipefail
case_name=$1
work=$WORK/fold_$case_name
rm -rf "$work" && mkdir -p "$work"
cd "$work"

# dhxc_w PP [--set ...] ...: samples/tiny.dhx on PP stages folded into a W, one rank per stage.
dhxc_w() {
  local pp=$1; shift
  "$DHXC" "$SRC/samples/tiny.dhx" --set schedule.parallel.dp=1 --set schedule.parallel.tp=1 \
    --set schedule.parallel.pp="$pp" --set schedule.strands.fold=w --set train.micro_batch=4 \
    --set train.global_batch=16 "$@"
}

# The gpt blocks whose parameters each rank holds: "RANK: B B".
blocks_per_rank() {
  awk '/^rank [0-9]+:/ { r = $2 + 0 }
       / param / && match($0, /gpt_block\.[0-9]+\./) {
         print r, substr($0, RSTART + 10, RLENGTH - 11) }' "$1" | sort -u -n -k1,1 -k2,2 |
    awk '{ line[$1] = line[$1] " " $2 } END { for (r in line) print r ":" line[r] }' | sort -n
}

# Ranks with at least one line matching PATTERN in their section of the schedule.
ranks_with() {
  awk -v pat="$2" '/^rank [0-9]+:/ { r = $2 + 0; seen = 1 } seen && $0 ~ pat { print r }' "$1" |
    sort -u -n |
    tr '\n' ' '
}

case $case_name in
  placement)
    for pp in 2 3; do
      dhxc_w "$pp" --set model.layers=$((2 * pp)) --emit=schedule > "s$pp.txt"
      want=$(for ((s = 0; s < pp; s++)); do echo "$s: $s $((2 * pp - 1 - s))"; done)
      got=$(blocks_per_rank "s$pp.txt")
      if [[ $got != "$want" ]]; then
        printf 'pp %d: blocks per rank\n%s\nwanted\n%s\n' "$pp" "$got" "$want"; exit 1
      fi
      for pat in "param .*embedding" "xent_fwd" "# load micro-batch"; do
        got=$(ranks_with "s$pp.txt" "$pat")
        [[ $got == "0 " ]] || { echo "pp $pp: '$pat' on ranks $got, not rank 0 only"; exit 1; }
      done
      # send/recv (buffer, count, peer, tag): the peer is never the rank itself
      awk '/^rank [0-9]+:/ { r = $2 + 0 }
           / (send|recv) +comm / { split($0, a, /[(),]/); if (a[4] + 0 == r) { print; bad = 1 } }
           END { exit bad }' "s$pp.txt"
      echo "pp $pp: stage g holds blocks g and $((2 * pp - 1))-g; stage 0 loads, embeds and" \
        "computes the loss; no transfer to itself"
    done
    ;;
  plans)
    for pp in 2 3 4; do
      for pair in off on; do
        for micro in 1 2 5; do
          [[ $pair == on && $micro == 1 ]] && continue  # pairing needs two micro-batches
          [[ $pair == off && $micro == 2 ]] && continue
          dhxc_w "$pp" --set model.layers=$((2 * pp)) --set train.global_batch=$((4 * micro)) \
            --set schedule.strands.pair=$pair --set schedule.strands.search=none -o "p"
        done
        echo "pp $pp, pair: $pair: plans of up to 5 micro-batches compile and verify"
      done
    done
    ;;
  refusals)
    if dhxc_w 2 --set "schedule.parallel.stages=(3,1)" -o p 2> stages.txt; then
      echo "stages with fold: w was accepted"; exit 1
    fi
    grep -q "fold: w cuts the layers into 2 \* pp equal chunks" stages.txt ||
      { cat stages.txt; exit 1; }
    echo "given stage sizes are refused with the reason"
    ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
