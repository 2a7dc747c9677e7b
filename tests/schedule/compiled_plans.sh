#!/usr/bin/env bash
# The samples compiled by dhxc, across ranks.
#   verify: tiny and tiny_llama at dp 1 and 2 (-o), then `schedule_tests
#           verify_ranks_accepts_compiled_samples` on the plan dirs: read as dhxrun reads them,
#           verified across ranks, and run with durations.
#   trace:  the same samples at dp 2 with two micro-batches per step through --emit=trace, and
#           check_trace.py on the JSON; and tiny at pp 2, whose MICRO covers the step's 4
#           micro-batches, so the step runs it once.
# Environment: DHXC SCHEDULE_TESTS SRC WORK
set -euo pipefail
mode=$1
work="$WORK/$mode"
rm -rf "$work" && mkdir -p "$work"
here=$(dirname "$0")
dirs=()
for name in tiny tiny_llama; do
  file="$SRC/samples/$name.dhx"
  if [ "$mode" = verify ]; then
    for dp in 1 2; do
      out="$work/$name.dp$dp"
      # global_batch 16 = micro_batch 8 x dp x accumulation, for both dp
      "$DHXC" "$file" -o "$out" --set schedule.parallel.dp=$dp --set train.micro_batch=8 \
        --set train.global_batch=16 2>"$out.err" || { cat "$out.err"; exit 1; }
      dirs+=("$out")
    done
  else
    out="$work/$name.trace.json"
    "$DHXC" "$file" --emit=trace --set schedule.parallel.dp=2 --set train.micro_batch=4 \
      --set train.global_batch=16 >"$out" 2>"$out.err" || { cat "$out.err"; exit 1; }
    python3 "$here/check_trace.py" "$out" 2 2
  fi
done
if [ "$mode" = trace ]; then
  out="$work/tiny.pp2.trace.json"
  "$DHXC" "$SRC/samples/tiny.dhx" --emit=trace --set schedule.parallel.dp=1 \
    --set schedule.parallel.pp=2 --set train.micro_batch=4 --set train.global_batch=16 \
    >"$out" 2>"$out.err" || { cat "$out.err"; exit 1; }
  python3 "$here/check_trace.py" "$out" 2 1
fi
if [ "$mode" = verify ]; then
  "$SCHEDULE_TESTS" verify_ranks_accepts_compiled_samples "${dirs[@]}"
fi
