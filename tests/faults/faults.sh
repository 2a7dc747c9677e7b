#!/usr/bin/env bash
# Fault-injection cases for dhxrun (tests/faults/CMakeLists.txt names them).
# Usage: faults.sh CASE   (environment: DHXC DHXRUN CHECK MPIRUN SRC WORK)
#
# The model is samples/tiny.dhx made small (2 layers, width 64, sequences of 64), so a step
# takes milliseconds and a run of a few hundred steps lasts long enough to be interrupted at a
# random step. $RANDOM is seeded from FAULTS_SEED when set, and the seed is printed.
set -euo pipefail
case_name=$1
work=$WORK/$case_name
rm -rf "$work" && mkdir -p "$work"
cd "$work"
seed=${FAULTS_SEED:-$$}
RANDOM=$seed
echo "faults: case $case_name, seed $seed"

corpus() {
  # shellcheck disable=SC2046
  "$DHXC" data -o "$work/tiny" $(find /usr/share/common-licenses -maxdepth 1 -type f | sort) >/dev/null
}

small() {  # small PLAN_DIR DP [--set ...]
  local dir=$1 dp=$2; shift 2
  "$DHXC" "$SRC/samples/tiny.dhx" -o "$dir" --set "data.train=\"$work/tiny_train.bin\"" \
    --set "data.val=\"$work/tiny_val.bin\"" --set model.layers=2 --set model.hidden=64 \
    --set model.heads=2 --set model.ffn=256 --set model.seq=64 --set train.micro_batch=4 \
    --set train.global_batch=$((4 * dp)) --set schedule.parallel.dp="$dp" \
    --set train.val_every=0 "$@"
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

# rank_pid, ended_ranks_status, ends_within (mpirun's shutdown race).
source "$SRC/tests/mpirun_wait.sh"

# interrupted_run RANK: SIGINT to RANK of 2 at a random step, then --resume latest; the
# combined metrics equal those of an uninterrupted run exactly.
interrupted_run() {
  local target=$1 steps=300
  corpus
  small plan 2 --set train.steps=$steps --set train.checkpoint_every=50
  $MPIRUN -np 2 "$DHXRUN" plan --metrics full.jsonl --quiet --checkpoint-dir ck_full
  local at=$((RANDOM % 40 + 5))
  $MPIRUN -np 2 "$DHXRUN" plan --metrics run.jsonl --checkpoint-dir ck >out.txt 2>err.txt &
  local mpid=$!
  wait_lines run.jsonl $at 60
  kill -INT "$(rank_pid $mpid "$target")"
  ends_within 60 $mpid
  cat err.txt
  [ "$rc" = 130 ] || { echo "expected exit 130 after SIGINT, got $rc"; exit 1; }
  grep -q "stopped by SIGINT (rank $target) after step" err.txt
  local done_steps; done_steps=$(sed -nE 's/.*after step ([0-9]+);.*/\1/p' err.txt)
  test -f "ck/step_$done_steps.safetensors"
  [ "$done_steps" -lt $steps ] || { echo "the run finished before the signal"; exit 1; }
  grep -q "interrupted by SIGINT after step $done_steps" out.txt
  $MPIRUN -np 2 "$DHXRUN" plan --metrics run.jsonl --checkpoint-dir ck --resume latest >out2.txt
  grep -q "resuming from ck/step_$done_steps.safetensors" out2.txt
  # one run, one file: steps 1..300 once each, identical to the uninterrupted run
  [ "$(grep -c '"step":' run.jsonl)" -eq $steps ]
  "$CHECK" same full.jsonl run.jsonl 0 | tail -1
}

# killed_rank N: kill -9 one rank of N mid-step; every rank is gone within 30 s, named
killed_rank() {
  local n=$1
  corpus
  small plan "$n" --set train.steps=100000
  $MPIRUN -np "$n" "$DHXRUN" plan --metrics m.jsonl >out.txt 2>err.txt &
  local mpid=$!
  wait_lines m.jsonl $((RANDOM % 10 + 3)) 60
  local victim=$((RANDOM % n)) r ranks=()
  for ((r = 0; r < n; r++)); do ranks+=("$(rank_pid $mpid $r)"); done
  kill -9 "${ranks[$victim]}"
  ends_within 30 $mpid
  [ "$rc" != 0 ] || { echo "mpirun exited 0 after a rank was killed"; exit 1; }
  cat err.txt
  grep -q -E "rank $victim .*(exited on signal 9|Killed)" err.txt ||
    { echo "the killed rank $victim is not named"; exit 1; }
  # mpirun is gone; its ranks follow within moments (a killed process is reaped by init)
  local left i
  for ((i = 0; i < 50; i++)); do
    left=0
    for r in "${ranks[@]}"; do
      if [ -e "/proc/$r" ] && ! grep -q '^State:.*Z' "/proc/$r/status" 2>/dev/null; then left=$r; fi
    done
    [ "$left" = 0 ] && return 0
    sleep 0.1
  done
  echo "rank pid $left left running"; exit 1
}

case $case_name in
  sigint_rank0) interrupted_run 0 ;;
  sigint_rank1) interrupted_run 1 ;;
  sigint_mpirun)
    # Ctrl-C on mpirun: it sends SIGTERM to every rank; the run still ends with a checkpoint.
    corpus
    small plan 2 --set train.steps=100000
    $MPIRUN -np 2 "$DHXRUN" plan --save ck/int.safetensors --metrics m.jsonl >out.txt 2>err.txt &
    mpid=$!
    wait_lines m.jsonl 5 60
    kill -INT $mpid
    ends_within 30 $mpid
    cat err.txt
    [ "$rc" != 0 ] || { echo "expected a non-zero exit"; exit 1; }
    grep -q "stopped by SIGTERM" err.txt
    test -f ck/int.safetensors
    $MPIRUN -np 2 "$DHXRUN" plan --resume ck/int.safetensors --steps "$(($(grep -c '"step":' m.jsonl) + 2))" --quiet
    ;;
  kill_of_2) killed_rank 2 ;;
  kill_of_4) killed_rank 4 ;;
  stuck_rank)
    # SIGSTOP freezes a rank (threads and all): the watchdog of rank 0 names it.
    corpus
    small plan 3 --set train.steps=100000
    $MPIRUN -np 3 "$DHXRUN" plan --metrics m.jsonl --step-timeout 3 >out.txt 2>err.txt &
    mpid=$!
    wait_lines m.jsonl 5 60
    victim=$((RANDOM % 2 + 1))
    vpid=$(rank_pid $mpid $victim)
    kill -STOP "$vpid"
    ends_within 30 $mpid
    kill -9 "$vpid" 2>/dev/null || true
    cat err.txt
    [ "$rc" != 0 ] || { echo "expected a non-zero exit"; exit 1; }
    grep -q "rank $victim stopped responding" err.txt
    ;;
  corrupt_checkpoints)
    corpus
    small plan 1 --set train.steps=30 --set train.checkpoint_every=10
    "$DHXRUN" plan --checkpoint-dir ck --steps 30 --metrics full.jsonl --quiet
    # step_30 truncated, step_20 with one flipped bit: latest is step_10
    size=$(stat -c %s ck/step_30.safetensors)
    truncate -s $((size / 2)) ck/step_30.safetensors
    python3 - ck/step_20.safetensors <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) - 1000] ^= 0x10
open(p, 'wb').write(b)
PY
    cp ck/step_20.safetensors flipped.safetensors  # the resumed run rewrites ck/step_20
    "$DHXRUN" plan --checkpoint-dir ck --resume latest --metrics m.jsonl >out.txt 2>err.txt
    cat err.txt
    grep -q "skipping ck/step_30.safetensors" err.txt
    grep -q "skipping ck/step_20.safetensors" err.txt
    grep -q "resuming from ck/step_10.safetensors" out.txt
    "$CHECK" same full.jsonl m.jsonl 0 11 30 | tail -1
    # --resume of the corrupt file itself is an error, before step 1
    if "$DHXRUN" plan --resume flipped.safetensors >out.txt 2>err.txt; then exit 1; fi
    cat err.txt
    grep -q "flipped.safetensors: checksum mismatch" err.txt && ! grep -q "^step" out.txt
    ;;
  unwritable_outputs)
    corpus
    small plan 1 --set train.steps=30
    touch afile
    for opt in "--save afile/x.safetensors" "--metrics afile/m.jsonl" "--checkpoint-dir afile/ck"; do
      # shellcheck disable=SC2086
      if "$DHXRUN" plan $opt >out.txt 2>err.txt; then echo "accepted $opt"; exit 1; fi
      cat err.txt
      grep -q "dhxrun: error: afile" err.txt
      if grep -q "^step" out.txt; then echo "trained before failing on $opt"; exit 1; fi
    done
    if "$DHXRUN" plan --save ck >out.txt 2>err.txt; then :; fi
    mkdir -p dir.safetensors
    if "$DHXRUN" plan --save dir.safetensors >out.txt 2>err.txt; then exit 1; fi
    grep -q "is a directory" err.txt
    # a missing directory is created, the run saved
    "$DHXRUN" plan --save new/dirs/x.safetensors --steps 2 --quiet
    test -f new/dirs/x.safetensors
    ;;
  nonfinite)
    corpus
    # a learning rate of 1e30 blows the weights up within a step or two
    small plan 1 --set train.steps=10 --set "train.optimizer=adamw(lr: 1e30)" --set train.warmup=0
    if "$DHXRUN" plan --metrics m.jsonl >out.txt 2>err.txt; then echo "a diverged run exited 0"; exit 1; fi
    cat err.txt
    grep -q -E "dhxrun: error: step [0-9]+: the (loss|gradient norm) is not finite" err.txt
    python3 - m.jsonl <<'PY'
import json, sys
def strict(c): raise ValueError("not JSON: " + c)
rows = [json.loads(l, parse_constant=strict) for l in open(sys.argv[1])]
bad = [r for r in rows if "nonfinite" in r]
assert bad and (bad[-1]["loss"] is None or bad[-1]["grad_norm"] is None), rows
print("metrics are strict JSON;", len(bad), "non-finite line(s)")
PY
    small skip 1 --set train.steps=10 --set "train.optimizer=adamw(lr: 1e30)" --set train.warmup=0 \
      --set train.skip_nonfinite=true
    "$DHXRUN" skip --metrics s.jsonl >out.txt
    grep -q "skipped as non-finite" out.txt
    grep -q '"skipped":true' s.jsonl
    ;;
  init_and_nan_weights)
    corpus
    small plan 1 --set train.steps=20
    "$DHXRUN" plan --steps 10 --save trained.safetensors --metrics first.jsonl --quiet
    "$DHXRUN" plan --init trained.safetensors --steps 1 --metrics init.jsonl >out.txt
    grep -q "weights from trained.safetensors (fresh optimizer state)" out.txt
    # trained weights start lower than the seed's initialisation did
    python3 - first.jsonl init.jsonl <<'PY'
import json, sys
first = json.loads(open(sys.argv[1]).readline())["loss"]
init = json.loads(open(sys.argv[2]).readline())["loss"]
assert init < first - 0.5, (first, init)
print("first loss from the seed %.4f, from the trained weights %.4f" % (first, init))
PY
    # a checkpoint holding NaN (written without a checksum, as other tools do) is refused
    python3 - trained.safetensors nan.safetensors <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
data = bytearray(b[8 + n:])
h["__metadata__"] = {k: v for k, v in h["__metadata__"].items() if k in ("format", "model", "step")}
name = next(k for k in h if k != "__metadata__" and not k.endswith((".adam_m", ".adam_v")))
off = h[name]["data_offsets"][0]
data[off + 4:off + 8] = struct.pack("<f", float("nan"))
j = json.dumps(h).encode()
j += b" " * (-len(j) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(j)) + j + data)
PY
    for opt in --resume --init; do
      if "$DHXRUN" plan $opt nan.safetensors >out.txt 2>err.txt; then echo "$opt accepted NaN weights"; exit 1; fi
      cat err.txt
      grep -q "nan.safetensors: parameter '.*' holds a non-finite value" err.txt
      if grep -q "^step" out.txt; then exit 1; fi
    done
    ;;
  checkpoint_default_dir)
    corpus
    small plan 1 --set train.steps=4 --set train.checkpoint_every=2
    "$DHXRUN" plan >out.txt
    grep -q "a checkpoint every 2 steps in plan/checkpoints" out.txt
    test -f plan/checkpoints/step_2.safetensors && test -f plan/checkpoints/step_4.safetensors
    ;;
  warnings)
    corpus
    head -c $((1024 + 2 * 3000)) tiny_train.bin > short.bin
    python3 - short.bin <<'PY'
import struct, sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[8:12] = struct.pack('<i', (len(b) - 1024) // 2)
open(p, 'wb').write(b)
PY
    small plan 1 --set train.steps=5 --set train.warmup=1000 --set model.vocab=512 \
      --set model.seq=1024 --set train.val_every=5 --set train.val_batches=4
    "$DHXRUN" plan --train short.bin --val short.bin --steps 1 >out.txt 2>err.txt
    cat err.txt
    grep -q "warning: the training data holds 3000 tokens, 2 sequences of 1024+1, but one step reads 4" err.txt
    grep -q "warning: the vocabulary has 512 entries but the largest token" err.txt
    grep -q "warning: warmup (1000 steps) is longer than the run (5 steps)" err.txt
    grep -q "warning: the validation data holds 3000 tokens" err.txt
    ;;
  host_memory)
    # a model whose arena cannot fit: refused before anything is allocated
    corpus
    "$DHXC" "$SRC/samples/tiny.dhx" -o big --set "data.train=\"$work/tiny_train.bin\"" \
      --set model.hidden=4096 --set model.heads=32 --set model.ffn=16384 --set model.layers=48 \
      --set model.seq=2048 --set schedule.parallel.dp=1 --set train.global_batch=8 \
      2>/dev/null || true
    test -f big/plan.bin || { echo "dhxc did not write the big plan"; exit 1; }
    if "$DHXRUN" big >out.txt 2>err.txt; then echo "ran a plan that does not fit"; exit 1; fi
    cat err.txt
    grep -q "not enough host memory: each rank needs" err.txt
    ;;
  summary)
    corpus
    small plan 2 --set train.steps=6 --set train.val_every=3
    $MPIRUN -np 2 "$DHXRUN" plan --metrics m.jsonl --save out/final.safetensors >out.txt
    cat out.txt
    grep -q -E '^step    1/6 \| .* tok/s \| .* elapsed, ETA ' out.txt
    grep -q "dhxrun: finished after step 6 (6 steps run here)" out.txt
    grep -q -E "throughput +[0-9]+ tokens/s mean, [0-9]+ median" out.txt
    grep -q -E "compute +.* achieved, MFU [0-9.]+% of " out.txt
    grep -q -E "memory +[0-9.]+ MiB peak resident" out.txt
    grep -q -E "loss +[0-9.]+ train, [0-9.]+ val" out.txt
    grep -q "wrote       out/final.safetensors" out.txt
    python3 - m.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
s = rows[-1]
assert s["summary"] and s["last_step"] == 6 and s["mfu"] > 0 and s["final_val_loss"] > 0, s
assert "out/final.safetensors" in s["paths"], s
print("summary:", s)
PY
    ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
echo "faults: $case_name passed"
