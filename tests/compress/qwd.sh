#!/usr/bin/env bash
# qWD (compress { params: qwd(...) }) on the tiny GPT at dp 2.
# Usage: qwd.sh CASE   (environment: DHXC DHXRUN CHECK MPIRUN SRC WORK)
#   qwd_vs_plain ZERO   zero 1 or 2, 6 steps with and without qwd: losses within 2e-3 of each
#                       other, the replicas' weights bitwise equal, the data-parallel parameter
#                       bytes per step exactly the formulas (plain: f32 pieces; qwd: 4-bit codes
#                       and f32 scales), qwd >= 3.5x below bf16 pieces
#   qwd_resume          (2 layers) a run resumed from its step-3 checkpoint ends bitwise where the
#                       uninterrupted run does
#   qwd_resume_across   (2 layers) checkpoints move to and from plans without qwd, and convert
#   qwd_refused         zero 3 and zero 0 refuse params: qwd at the field, saying why
set -euo pipefail
case_name=$1; shift
work=$WORK/$case_name${1:+_$1}
rm -rf "$work" && mkdir -p "$work"
cd "$work"

# shellcheck disable=SC2046
"$DHXC" data -o "$work/corpus" $(find /usr/share/common-licenses -maxdepth 1 -type f | sort) >/dev/null

QWD='schedule.compress.params=qwd(bits: 4, group: 2048)'

compile() {  # compile DIR ZERO [--set ...]: the tiny GPT at dp 2, 8 sequences per step
  local dir=$1 zero=$2; shift 2
  "$DHXC" "$SRC/samples/tiny.dhx" -o "$dir" --set "data.train=\"$work/corpus_train.bin\"" \
    --set "data.val=\"$work/corpus_val.bin\"" --set train.steps=6 --set train.warmup=2 \
    --set train.micro_batch=4 --set train.global_batch=8 --set train.val_every=0 \
    --set schedule.parallel.dp=2 --set schedule.parallel.zero="$zero" "$@"
}

run() {  # run PLAN_DIR RANKS [dhxrun options]
  local dir=$1 n=$2; shift 2
  $MPIRUN -np "$n" "$DHXRUN" "$dir" --quiet "$@"
}

field() {  # field FILE STEP|summary FIELD: the value of FIELD on that line
  local key="\"step\":$2,"
  [ "$2" = summary ] && key='"summary":true'
  grep "$key" "$1" | sed -E "s/.*\"$3\":\"?([^,}\"]*).*/\\1/"
}

# The tiny GPT's parameter tensors (vocab 256, seq 128, hidden 128, 4 layers, ffn 512), by
# element count: embeddings, per layer two layernorms, qkv, projection, two MLP linears (each
# weight then bias), the final layernorm and the output projection.
tiny_tensors() {
  echo 32768 16384
  for _ in 1 2 3 4; do echo 128 128 49152 384 16384 128 128 128 65536 512 65536 128; done
  echo 128 128 32768
}

case $case_name in
  qwd_vs_plain)
    zero=$1
    compile plain "$zero"
    compile qwd "$zero" --set "$QWD"
    run plain 2 --metrics plain.jsonl
    run qwd 2 --metrics qwd.jsonl
    "$CHECK" same plain.jsonl qwd.jsonl 2e-3
    [ "$(field qwd.jsonl summary replicas_equal)" = true ]
    [ "$(field plain.jsonl summary replicas_equal)" = true ]
    # Every tensor splits evenly into two pieces of whole 16-element blocks, so the pieces
    # hold the parameters without padding: an all-gather over 2 ranks sends one piece.
    n=$("$DHXC" "$SRC/samples/tiny.dhx" --emit=graph | sed -nE '1s/.* ([0-9]+) parameters/\1/p')
    [ "$(tiny_tensors | tr ' ' '\n' | awk '{s += $1} END {print s}')" = "$n" ]
    groups=$(tiny_tensors | tr ' ' '\n' | awk '{p = $1 / 2; g += p >= 2048 ? p / 2048 : 1} END {print g}')
    plain_bytes=$(field plain.jsonl 3 comm_bytes_dp_params)
    qwd_bytes=$(field qwd.jsonl 3 comm_bytes_dp_params)
    [ "$plain_bytes" = $((n / 2 * 4)) ]                  # (p-1)/p of n f32
    [ "$qwd_bytes" = $((n / 2 / 2 + groups * 4)) ]      # 4 bits per element + a scale a group
    [ "$(field qwd.jsonl 3 comm_bytes_dp_grads)" = "$(field plain.jsonl 3 comm_bytes_dp_grads)" ]
    total=0
    for k in tp pp dp_grads dp_params other; do total=$((total + $(field qwd.jsonl 3 comm_bytes_$k))); done
    [ "$total" = "$(field qwd.jsonl 3 comm_bytes)" ]
    ratio=$(awk -v b="$((n / 2 * 2))" -v q="$qwd_bytes" 'BEGIN {printf "%.3f", b / q}')
    awk -v r="$ratio" 'BEGIN {exit !(r >= 3.5)}'
    echo "zero $zero: qwd losses within 2e-3 of plain over 6 steps, replicas equal; dp_params" \
         "$plain_bytes -> $qwd_bytes bytes per step, ${ratio}x below bf16 pieces"
    ;;
  qwd_resume)
    compile qwd 1 --set "$QWD" --set train.checkpoint_every=3 --set model.layers=2
    run qwd 2 --metrics full.jsonl --checkpoint-dir ck
    test -f ck/step_3.safetensors
    run qwd 2 --resume ck/step_3.safetensors --metrics resumed.jsonl
    "$CHECK" same full.jsonl resumed.jsonl 0 4 6
    [ "$(field resumed.jsonl summary params_xxh64)" = "$(field full.jsonl summary params_xxh64)" ]
    echo "resumed from step 3: losses 4..6 and the final weights bitwise equal"
    ;;
  qwd_resume_across)
    # A checkpoint without masters (plain zero 1) resumes under qwd: the masters start as the
    # weights, so the updates after it (the loss of step 5) are the plain run's. A qwd
    # checkpoint resumes on a plan without masters (one rank) from the replicas' weights.
    compile qwd 1 --set "$QWD" --set train.checkpoint_every=3 --set model.layers=2
    run qwd 2 --steps 4 --metrics full.jsonl --checkpoint-dir ck
    compile plain 1 --set train.checkpoint_every=3 --set model.layers=2
    run plain 2 --steps 5 --metrics plain.jsonl --checkpoint-dir ck_plain
    run qwd 2 --resume ck_plain/step_3.safetensors --steps 5 --metrics from_plain.jsonl
    "$CHECK" same plain.jsonl from_plain.jsonl 2e-3 4 5
    [ "$(field from_plain.jsonl summary replicas_equal)" = true ]
    "$DHXC" "$SRC/samples/tiny.dhx" -o one --set "data.train=\"$work/corpus_train.bin\"" \
      --set "data.val=\"$work/corpus_val.bin\"" --set train.steps=6 --set train.warmup=2 \
      --set train.micro_batch=4 --set train.global_batch=8 --set train.val_every=0 \
      --set schedule.parallel.dp=1 --set model.layers=2
    run one 1 --resume ck/step_3.safetensors --steps 4 --metrics one.jsonl
    "$CHECK" same full.jsonl one.jsonl 1e-4 4 4
    "$DHXC" convert --from dhx --to hf-gpt2 ck/step_3.safetensors hf.safetensors  # no masters
    echo "plain zero 1 checkpoints resume under qwd; qwd checkpoints resume on one rank and convert"
    ;;
  qwd_refused)
    for z in 3 0; do
      if compile z$z "$z" --set "$QWD" 2>err$z.txt; then echo "zero $z: compiled"; exit 1; fi
      cat err$z.txt
      # at the params field of the --set (column 19: after "schedule.compress.")
      grep -q "^<--set #[0-9]*>:1:19: error: qwd compresses the all-gather of the updated" err$z.txt
    done
    grep -q "zero: 3 keeps no whole replica to take the difference against" err3.txt
    grep -q "zero: 0 shards no parameters" err0.txt
    echo "zero 3 and zero 0 refuse params: qwd"
    ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
