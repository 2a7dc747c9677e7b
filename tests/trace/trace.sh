#!/usr/bin/env bash
# dhxrun --trace cases (tests/trace/CMakeLists.txt names them).
# Usage: trace.sh CASE   (environment: DHXC DHXRUN CHECK TRACE_CHECK PROFILE_CHECK MPIRUN SRC
#                        WORK)
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

# ends_within (mpirun's shutdown race).
source "$SRC/tests/mpirun_wait.sh"

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
    ends_within 60 $mpid
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
  profile)
    # tp 2 with sp: every layer gathers and scatters, so compute and collectives are both timed.
    corpus
    tp=(--set schedule.parallel.dp=1 --set schedule.parallel.tp=2 --set schedule.parallel.sp=on
        --set train.steps=4)
    plan plan "${tp[@]}"
    $MPIRUN -np 2 "$DHXRUN" plan --quiet --net-emulate 200MB/s,20us --profile out/profile.json
    python3 "$PROFILE_CHECK" valid out/profile.json 2 2 4 200e6
    sim() {  # sim PROFILE NET: dhxc --simulate of the same plan, its step time on stdout
      "$DHXC" "$SRC/samples/tiny.dhx" --simulate --json "${small[@]}" "${tp[@]}" \
        --set "cluster=cpu(net: $2, latency: 20 us)" --profile "$1" 2>sim.err |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["step_time_s"])'
    }
    measured=$(sim out/profile.json "200 MB/s")
    grep -q "profile out/profile.json times" sim.err || { cat sim.err; exit 1; }
    if grep -q "another network" sim.err; then cat sim.err; exit 1; fi
    # The profile is what times the plan: GEMMs of 0.25 s each make a step of many seconds.
    python3 "$PROFILE_CHECK" slow-gemms out/profile.json slow.json 0.25
    slow=$(sim slow.json "200 MB/s")
    gemms=$(grep -c "gemm" plan.schedule || true)
    python3 -c "import sys; m, s, g = $measured, $slow, $gemms
if not (m < 5 and s >= 0.25 * g / 2): sys.exit('step %g s with the measured profile, %g s with slow GEMMs (%d GEMM lines)' % (m, s, g))
print('simulated step: %.3f s measured, %.1f s with 0.25 s GEMMs' % (m, s))"
    # Measured on another network: the collectives are the model's, and dhxc says so.
    sim out/profile.json "1 GB/s" >/dev/null
    grep -q "another network, so communication is timed by the model" sim.err || { cat sim.err; exit 1; }
    # Paired strands running free defer their backward's collectives, whose records are their
    # posts: the profile leaves them out (each collective still takes its bytes on the link),
    # and times exactly the others.
    plan paired "${tp[@]}" --set train.val_every=0 --set schedule.strands.pair=on \
      --set schedule.strands.search=none
    $MPIRUN -np 2 "$DHXRUN" paired --quiet --net-emulate 200MB/s,20us --profile out/paired.json
    python3 "$PROFILE_CHECK" valid out/paired.json 2 2 4 200e6
    python3 "$PROFILE_CHECK" deferred out/paired.json paired.schedule 3
    ;;
  profile_bad)
    corpus
    plan plan --set train.steps=2
    sim() { "$DHXC" "$SRC/samples/tiny.dhx" --simulate "${small[@]}" --profile "$1"; }
    expect_fail "--profile: missing.json: cannot open the profile" sim missing.json
    echo '{"writer": "dhxrun --profile", "ops": [' > broken.json
    expect_fail "--profile: broken.json: not valid JSON" sim broken.json
    echo '{"writer": "someone else", "ops": {}}' > other.json
    expect_fail "not a profile written by dhxrun --profile (field 'writer')" sim other.json
    echo '{"writer": "dhxrun --profile", "ops": {"gemm nn m=1 n=1 k=1 batch=1x1": {"seconds": -1}}}' > neg.json
    expect_fail "'seconds' is not a non-negative number" sim neg.json
    expect_fail "--profile go with --simulate" "$DHXC" "$SRC/samples/tiny.dhx" -o x --profile neg.json
    expect_fail "--trace-steps needs --trace FILE or --profile FILE" "$DHXRUN" plan --trace-steps 1
    ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
