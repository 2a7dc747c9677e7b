#!/usr/bin/env bash
# dhxrun --trace cases (tests/trace/CMakeLists.txt names them).
# Usage: trace.sh CASE   (environment: DHXC DHXRUN CHECK TRACE_CHECK MPIRUN SRC WORK)
#
# The model is samples/tiny.dhx made small (2 layers, width 64, sequences of 64) on 2 ranks with
# dp 2 and 2 micro-batches per step, so a step takes milliseconds.
set -euo pipefail
case_name=$1
work=$WORK/$case_name
rm -rf "$work" && mkdir -p "$work"
cd "$work"

corpus() {  # a byte-level corpus from the license texts every Debian machine has
  # shellcheck disable=SC2046
  "$DHXC" data -o "$work/tiny" $(find /usr/share/common-licenses -maxdepth 1 -type f | sort) >/dev/null
}

small=(--set "data.train=\"$work/tiny_train.bin\"" --set "data.val=\"$work/tiny_val.bin\""
       --set model.layers=2 --set model.hidden=64 --set model.heads=2 --set model.ffn=256
       --set model.seq=64 --set train.micro_batch=4 --set train.global_batch=16
       --set schedule.parallel.dp=2)
accum=2  # global_batch / (micro_batch * dp)

plan() {  # plan DIR [--set ...]: the small model; its schedule listing in DIR.schedule
  local dir=$1; shift
  "$DHXC" "$SRC/samples/tiny.dhx" -o "$dir" "${small[@]}" "$@" 2>/dev/null
  "$DHXC" "$SRC/samples/tiny.dhx" --emit=schedule "${small[@]}" "$@" >"$dir.schedule" 2>/dev/null
}

check() { python3 "$TRACE_CHECK" "$@"; }

expect_fail() {  # expect_fail PATTERN CMD...: fails before step 1, saying PATTERN on stderr
  local pattern=$1; shift
  if "$@" >out.txt 2>err.txt; then echo "expected failure: $*"; cat out.txt; exit 1; fi
  if ! grep -q -- "$pattern" err.txt; then
    echo "expected '$pattern' in the error of: $*"; cat err.txt; exit 1
  fi
  if grep -q "^step" out.txt; then echo "trained before failing: $*"; exit 1; fi
  head -2 err.txt
}

# wait_lines FILE N SECONDS: until FILE has N lines, or fail
wait_lines() {
  local i
  for ((i = 0; i < $3 * 20; i++)); do
    if [ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$2" ]; then return 0; fi
    sleep 0.05
  done
  echo "timed out waiting for $2 lines in $1"; exit 1
}

# A traced 2-rank run of steps 2..3 of 4, with an evaluation at step 2 inside the window.
traced_run() {
  corpus
  plan plan --set train.steps=4 --set train.val_every=2
  $MPIRUN -np 2 "$DHXRUN" plan --trace out/trace.json --trace-steps 2:3 --quiet
}

case $case_name in
  valid)
    traced_run
    check valid out/trace.json 2
    ;;
  cover)
    traced_run
    check cover out/trace.json plan.schedule 2 3 $accum
    grep -q '"cat":"eval"' out/trace.json || { echo "the evaluation of step 2 is missing"; exit 1; }
    ;;
  nooverlap)
    traced_run
    check nooverlap out/trace.json
    ;;
  flows)
    traced_run
    check flows out/trace.json 2
    ;;
  default_window)
    corpus
    plan plan --set train.steps=6 --set train.val_every=0 --set train.checkpoint_every=3
    $MPIRUN -np 2 "$DHXRUN" plan --trace first.json --checkpoint-dir ck --quiet
    check cover first.json plan.schedule 1 2 $accum
    $MPIRUN -np 2 "$DHXRUN" plan --trace resumed.json --resume ck/step_3.safetensors --quiet
    check cover resumed.json plan.schedule 4 5 $accum
    # a window larger than the run is cut to the run's steps
    $MPIRUN -np 2 "$DHXRUN" plan --trace tail.json --trace-steps 5:9 --quiet
    check cover tail.json plan.schedule 5 6 $accum
    ;;
  bad_options)
    corpus
    plan plan --set train.steps=4 --set train.val_every=0
    expect_fail "--trace-steps: '5:2' is not a window" "$DHXRUN" plan --trace t.json --trace-steps 5:2
    expect_fail "--trace-steps: '0:2' is not a window" "$DHXRUN" plan --trace t.json --trace-steps 0:2
    expect_fail "--trace-steps: '2:x' is not a window" "$DHXRUN" plan --trace t.json --trace-steps 2:x
    expect_fail "--trace-steps needs --trace" "$DHXRUN" plan --trace-steps 1:2
    expect_fail "--trace needs a value" "$DHXRUN" plan --trace
    expect_fail "--trace-steps 7:9 holds none of the steps this run takes (1..4)" \
      $MPIRUN -np 2 "$DHXRUN" plan --trace t.json --trace-steps 7:9
    expect_fail "--trace-steps 3:4 holds none of the steps this run takes (1..2)" \
      $MPIRUN -np 2 "$DHXRUN" plan --trace t.json --trace-steps 3:4 --steps 2
    plan long --set train.steps=100000 --set train.val_every=0
    expect_fail "--trace-steps: steps 1..100000 would record" \
      $MPIRUN -np 2 "$DHXRUN" long --trace t.json --trace-steps 1:100000
    touch afile
    expect_fail "dhxrun: error: afile: the directory of the trace file is not a directory" \
      $MPIRUN -np 2 "$DHXRUN" plan --trace afile/t.json
    mkdir -p dir.json
    expect_fail "dir.json: the trace file is a directory" $MPIRUN -np 2 "$DHXRUN" plan --trace dir.json
    test ! -e t.json
    ;;
  unchanged)
    corpus
    plan plan --set train.steps=6 --set train.val_every=2
    $MPIRUN -np 2 "$DHXRUN" plan --metrics plain.jsonl --save plain.safetensors --quiet
    $MPIRUN -np 2 "$DHXRUN" plan --metrics traced.jsonl --save traced.safetensors --quiet \
      --trace t.json --trace-steps 1:6
    "$CHECK" same plain.jsonl traced.jsonl 0 | tail -1
    fields() { grep '"step":' "$1" | grep -o -E '"(loss|val_loss|grad_norm|lr)":[^,}]*'; }
    diff <(fields plain.jsonl) <(fields traced.jsonl)
    cmp plain.safetensors traced.safetensors
    echo "losses, gradient norms and final weights are identical with and without --trace"
    ;;
  interrupted)
    corpus
    plan plan --set train.steps=100000 --set train.val_every=0
    $MPIRUN -np 2 "$DHXRUN" plan --metrics m.jsonl --trace t.json --trace-steps 2:3 \
      >out.txt 2>err.txt &
    mpid=$!
    wait_lines m.jsonl 5 120
    # Ctrl-C on mpirun: it sends SIGTERM to every rank, which stop after their step
    kill -INT $mpid
    rc=0; wait $mpid || rc=$?
    cat err.txt
    [ "$rc" != 0 ] || { echo "expected a non-zero exit"; exit 1; }
    grep -q "stopped by SIGTERM" err.txt
    check valid t.json 2
    check cover t.json plan.schedule 2 3 $accum
    # a run that stops on an error (a loss that blows up) writes the steps it traced
    plan diverge --set train.steps=10 --set train.val_every=0 --set train.warmup=0 \
      --set "train.optimizer=adamw(lr: 1e30)"
    if $MPIRUN -np 2 "$DHXRUN" diverge --trace d.json --trace-steps 1:10 >out.txt 2>err.txt; then
      echo "a diverged run exited 0"; exit 1
    fi
    grep -q "is not finite" err.txt
    last=$(grep -o -E '"step":[0-9]+' d.json | cut -d: -f2 | sort -n | tail -1)
    check cover d.json diverge.schedule 1 "$last" $accum
    echo "the diverged run's trace holds steps 1..$last"
    ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
