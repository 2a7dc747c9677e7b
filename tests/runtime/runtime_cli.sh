#!/usr/bin/env bash
# dhxrun end to end on the toy plan (tests/runtime/testlib.h: linear regression from one-hot
# tokens, GEMMs + the test kernels, AdamW, all-reduce on a communication stream at dp 2).
# Usage: runtime_cli.sh CASE   (environment: DHXRUN TOY MPIRUN WORK)
set -euo pipefail
case_name=$1
work=$WORK/$case_name
rm -rf "$work" && mkdir -p "$work"
cd "$work"

"$TOY" shard train.bin 20000 1
"$TOY" shard val.bin 4000 9

expect_fail() {  # expect_fail PATTERN CMD...: fails with exit 1 and says PATTERN on stderr
  local pattern=$1; shift
  local rc=0
  "$@" >out.txt 2>err.txt || rc=$?
  if [ "$rc" -ne 1 ]; then echo "expected exit 1 (got $rc): $*"; cat out.txt err.txt; exit 1; fi
  if ! grep -q -F -- "$pattern" err.txt; then
    echo "expected '$pattern' in the error of: $*"; cat err.txt; exit 1
  fi
  if [ "$(grep -c 'dhxrun: error' err.txt)" -ne 1 ]; then
    echo "expected the error once: $*"; cat err.txt; exit 1
  fi
  head -1 err.txt
}

json_field() {  # json_field FILE STEP FIELD: the value of FIELD on the line of STEP
  grep "\"step\":$2," "$1" | sed -E "s/.*\"$3\":([^,}]*).*/\\1/"
}

case $case_name in
  trains_toy_plan)
    "$TOY" plan p --steps 40
    "$DHXRUN" p --train train.bin --val val.bin --metrics m.jsonl > out.txt
    cat out.txt
    grep -q -E '^dhxrun: toy \| 1 ranks x [0-9]+ threads \| 272 params \| 64 tokens/step' out.txt
    grep -q -E '^step    1/40 \| loss [0-9]+\.[0-9]{4} \| lr [0-9]\.[0-9]{2}e-[0-9]{2} \| norm [0-9]+\.[0-9]{3} \| [0-9]+\.[0-9] ms \| [0-9]+ tok/s \| [0-9:]+( s)? elapsed, ETA [0-9:]+( s)?$' out.txt
    grep -q -E '^step   10/40 \| .* tok/s \| val [0-9]+\.[0-9]{4} \| .* elapsed' out.txt
    [ "$(grep -c '^step' out.txt)" -eq 40 ]
    grep -q '^dhxrun: finished after step 40 (40 steps run here)' out.txt
    [ "$(grep -c '"step":' m.jsonl)" -eq 40 ]
    tail -1 m.jsonl | grep -q '^{"summary":true,"outcome":"finished","last_step":40,'
    [ "$(grep -c '"val_loss"' m.jsonl)" -eq 4 ]   # steps 10, 20, 30, 40
    [ "$(json_field m.jsonl 7 comm_bytes)" = 0 ]
    # the learning rate follows the schedule: warm-up over 3 steps to 0.05
    [ "$(json_field m.jsonl 3 lr)" = 0.05 ]
    "$TOY" falls m.jsonl
    # --quiet prints nothing; --steps stops early on the same schedule (a prefix of the run)
    "$DHXRUN" p --train train.bin --steps 5 --metrics m5.jsonl --quiet > quiet.txt
    [ ! -s quiet.txt ]
    "$TOY" same m5.jsonl m.jsonl 0
    [ "$(json_field m5.jsonl 5 lr)" = "$(json_field m.jsonl 5 lr)" ]
    # --threads does not change the numbers
    "$DHXRUN" p --train train.bin --steps 5 --threads 3 --metrics m5t.jsonl --quiet
    "$TOY" same m5.jsonl m5t.jsonl 0
    ;;
  dp2_matches_single_rank)
    # Same global batch (8 sequences): 1 rank x 2 micro-batches of 4, or 2 ranks x 1 of 4.
    "$TOY" plan p1 --dp 1 --steps 20
    "$TOY" plan p2 --dp 2 --steps 20
    "$DHXRUN" p1 --train train.bin --val val.bin --metrics m1.jsonl --quiet
    $MPIRUN -np 2 "$DHXRUN" p2 --train train.bin --val val.bin --metrics m2.jsonl --quiet
    "$TOY" same m1.jsonl m2.jsonl 1e-5
    # each rank sends 2(p-1)/p of the 272 gradient floats per step
    [ "$(json_field m2.jsonl 3 comm_bytes)" = 1088 ]
    v1=$(json_field m1.jsonl 20 val_loss) v2=$(json_field m2.jsonl 20 val_loss)
    awk -v a="$v1" -v b="$v2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 * a) }'
    ;;
  resume_reproduces_losses)
    "$TOY" plan p --steps 10 --checkpoint-every 5
    "$DHXRUN" p --train train.bin --metrics full.jsonl --checkpoint-dir ck/nested --quiet
    test -f ck/nested/step_5.safetensors && test -f ck/nested/step_10.safetensors
    "$DHXRUN" p --train train.bin --steps 5 --save half.safetensors --metrics first.jsonl --quiet
    "$DHXRUN" p --train train.bin --resume half.safetensors --metrics second.jsonl --quiet
    [ "$(head -c 9 second.jsonl)" = '{"step":6' ] && [ "$(grep -c '"step":' second.jsonl)" -eq 5 ]
    "$TOY" same first.jsonl full.jsonl 0
    "$TOY" same second.jsonl full.jsonl 0
    # the periodic checkpoint resumes the same way, and at dp 2 (every rank reads it)
    "$DHXRUN" p --train train.bin --resume ck/nested/step_5.safetensors --metrics third.jsonl --quiet
    "$TOY" same third.jsonl full.jsonl 0
    "$TOY" plan p2 --dp 2 --steps 10 --checkpoint-every 5
    $MPIRUN -np 2 "$DHXRUN" p2 --train train.bin --metrics full2.jsonl --checkpoint-dir ck2 --quiet
    $MPIRUN -np 2 "$DHXRUN" p2 --train train.bin --resume ck2/step_5.safetensors --metrics r2.jsonl --quiet
    "$TOY" same r2.jsonl full2.jsonl 0
    ;;
  version_says_openblas_threads_sleep_when_idle)
    # dhxrun starts itself again with OPENBLAS_THREAD_TIMEOUT=4, which OpenBLAS reads as it
    # loads (blas_threads.c); a value the user set is kept.
    env -u OPENBLAS_THREAD_TIMEOUT "$DHXRUN" --version > out.txt
    cat out.txt
    grep -q -E '^OpenBLAS .*; idle threads: OPENBLAS_THREAD_TIMEOUT=4$' out.txt
    OPENBLAS_THREAD_TIMEOUT=9 "$DHXRUN" --version | grep -q 'OPENBLAS_THREAD_TIMEOUT=9$'
    ;;
  errors_are_clear)
    "$TOY" plan p --steps 2
    "$DHXRUN" --help | grep -q -- '--checkpoint-dir DIR'
    expect_fail "unknown option '--bogus'" "$DHXRUN" p --bogus
    expect_fail "--steps: 'abc' is not a positive integer" "$DHXRUN" p --steps abc
    expect_fail "missing PLAN_DIR" "$DHXRUN"
    expect_fail "nowhere/plan.bin: cannot open" "$DHXRUN" nowhere --train train.bin
    cp -r p broken
    head -c 1000 p/plan.bin > broken/plan.bin
    expect_fail "broken/plan.bin: truncated: 1000 bytes, header says" "$DHXRUN" broken --train train.bin
    cp p/plan.bin broken/plan.bin
    printf '\x5a' | dd of=broken/plan.bin bs=1 seek=3000 conv=notrunc status=none
    expect_fail "broken/plan.bin: checksum mismatch (file is corrupted)" "$DHXRUN" broken --train train.bin
    cp p/plan.bin broken/plan.bin
    rm broken/kernels.so
    expect_fail "broken/kernels.so: cannot load the plan's kernels" "$DHXRUN" broken --train train.bin
    # (through a file: grep -m1 stopping early would kill ldconfig with SIGPIPE, which
    # pipefail turns into a failure of the test whenever ldconfig is still writing)
    ldconfig -p > libs.txt
    libm=$(grep -m1 -o '/.*libm\.so\.6$' libs.txt)
    cp "$libm" broken/kernels.so
    expect_fail "kernel 'onehot' (symbol dhxk_onehot) is missing" "$DHXRUN" broken --train train.bin
    expect_fail "no training data" "$DHXRUN" p
    expect_fail "missing.bin: cannot open" "$DHXRUN" p --train missing.bin
    head -c 4096 /dev/urandom > garbage.bin
    expect_fail "garbage.bin: bad magic" "$DHXRUN" p --train garbage.bin
    head -c 2000 train.bin > short.bin
    expect_fail "short.bin: truncated: header says 20000 tokens but the file holds 488" "$DHXRUN" p --train short.bin
    expect_fail "garbage.bin: bad magic" "$DHXRUN" p --train train.bin --val garbage.bin
    expect_fail "garbage.bin: header length" "$DHXRUN" p --train train.bin --resume garbage.bin
    touch afile
    expect_fail "afile: the directory of the metrics file is not a directory" "$DHXRUN" p --train train.bin --metrics afile/m.jsonl
    # several ranks: the same problem is reported once, and every rank exits 1
    "$TOY" plan p2 --dp 2 --steps 2
    expect_fail "garbage.bin: bad magic" $MPIRUN -np 2 "$DHXRUN" p2 --train garbage.bin
    expect_fail "the plan is for 1 ranks, but 2 were started" $MPIRUN -np 2 "$DHXRUN" p --train train.bin
    expect_fail "the plan is for 2 ranks, but 1 were started" "$DHXRUN" p2 --train train.bin
    ;;
  net_emulate_overrides_the_plan)
    # The plan's network, --net-emulate's in its place, and none: the header line and the
    # summary's net_bandwidth / net_latency say which the run emulated (timings are not checked).
    "$TOY" plan p2 --dp 2 --steps 2 --bandwidth 2e9 --latency 1e-5
    $MPIRUN -np 2 "$DHXRUN" p2 --train train.bin --metrics plan.jsonl > out.txt
    grep -q -x "dhxrun: network emulated at 2 GB/s with 10 us latency per message (the plan's cluster)" out.txt
    grep -q '"net_bandwidth":2e+09,"net_latency":1e-05' plan.jsonl
    $MPIRUN -np 2 "$DHXRUN" p2 --train train.bin --net-emulate 50MB/s,200us --metrics slow.jsonl > out.txt
    grep -q -x "dhxrun: network emulated at 50 MB/s with 200 us latency per message (--net-emulate)" out.txt
    grep -q '"net_bandwidth":5e+07,"net_latency":0.0002' slow.jsonl
    [ "$(json_field slow.jsonl 2 comm_bytes)" = 1088 ]  # the same exchanges, only slower
    $MPIRUN -np 2 "$DHXRUN" p2 --train train.bin --net-emulate="1.5 GB/s, 2 ms" > out.txt
    grep -q -x "dhxrun: network emulated at 1.5 GB/s with 2 ms latency per message (--net-emulate)" out.txt
    $MPIRUN -np 2 "$DHXRUN" p2 --train train.bin --net-emulate off --metrics off.jsonl > out.txt
    grep -q -x "dhxrun: network not emulated (--net-emulate off)" out.txt
    grep -q '"net_bandwidth":0,"net_latency":0' off.jsonl
    $MPIRUN -np 2 "$DHXRUN" p2 --train train.bin --net-emulate 1GB/s,1us --quiet > quiet.txt
    [ ! -s quiet.txt ]
    "$TOY" plan p --steps 2   # no network in the plan: no line
    "$DHXRUN" p --train train.bin > out.txt
    if grep -q "network" out.txt; then cat out.txt; exit 1; fi
    "$DHXRUN" --help | grep -q -- '--net-emulate BW,LAT'
    expect_fail "--net-emulate: '1GB/s' is not BANDWIDTH,LATENCY (as in 1GB/s,20us) or off" \
      "$DHXRUN" p --net-emulate 1GB/s
    expect_fail "--net-emulate: bandwidth 'fast' is not a positive number with a unit" \
      "$DHXRUN" p --net-emulate fast,20us
    expect_fail "--net-emulate: bandwidth '1 Gb' is not a positive number" "$DHXRUN" p --net-emulate "1 Gb,20us"
    expect_fail "--net-emulate: bandwidth '0GB/s' is not a positive number" "$DHXRUN" p --net-emulate 0GB/s,20us
    expect_fail "--net-emulate: bandwidth '-1MB/s' is not a positive number" "$DHXRUN" p --net-emulate -1MB/s,20us
    expect_fail "--net-emulate: latency '20' is not a time from 0 to 60 s with a unit" \
      "$DHXRUN" p --net-emulate 1GB/s,20
    expect_fail "--net-emulate: latency '2 min' is not a time" "$DHXRUN" p --net-emulate "1GB/s,2 min"
    expect_fail "--net-emulate: latency '-1us' is not a time" "$DHXRUN" p --net-emulate 1GB/s,-1us
    expect_fail "--net-emulate needs a value" "$DHXRUN" p --net-emulate
    ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
echo "$case_name: passed"
