#!/usr/bin/env bash
# Parity of parallel layouts: a model trained on a (dp, tp, pp) layout must compute the same
# function as on one rank, so its losses over 20 steps match the single-rank run's.
# Usage: layouts.sh CASE   (environment: DHXC DHXRUN CHECK MPIRUN SRC WORK)
#   parity MODEL [--set K=V]... DP,TP,PP[,VIRTUAL|,w]...
#                              each layout against (1,1,1), 1e-4 relative; the --sets apply
#                              to every run (e.g. model.layers=8); w: the pipeline folded into
#                              a W (strands { fold: w })
#   parity_sp_* ...            the same with sequence parallelism (sp: on) on the layouts
#   parity_zeroN_* ...         the same with sharded data parallelism (zero: N, N = 1..3)
#   parity_zeroN_sp_* ...      both
#   resume_across_layouts      a checkpoint of (1,2,1) resumes on (2,1,1), (2,2,1), (1,1,2)
#   resume_sp_on_one_rank      a checkpoint of (1,2,1) with sp: on resumes on (1,1,1)
#   resume_zero3               a zero 3 checkpoint of (2,1,1) resumes on (1,1,1) and under
#                              zero 2; a (1,1,1) checkpoint resumes under zero 3 on (2,1,1)
#   resume_zero                a zero 1 checkpoint of (2,1,1) resumes on (1,2,1) and (1,1,1);
#                              a (1,1,1) checkpoint resumes under zero 1 on (2,1,1)
set -euo pipefail
case_name=$1; shift
work=$WORK/$case_name
rm -rf "$work" && mkdir -p "$work"
cd "$work"

# A byte-level corpus from the license texts every Debian machine has.
# shellcheck disable=SC2046
"$DHXC" data -o "$work/corpus" $(find /usr/share/common-licenses -maxdepth 1 -type f | sort) >/dev/null

# compile MODEL PLAN_DIR DP TP PP [--set ...]: a short run of samples/MODEL.dhx on a layout.
# The global batch (16 sequences) is the same for every layout: only how it is split changes.
# Sequences of 64 tokens, not the sample's 128: parity holds at any length, and it takes a
# quarter off these tests' time.
compile() {
  local model=$1 dir=$2 dp=$3 tp=$4 pp=$5; shift 5
  "$DHXC" "$SRC/samples/$model.dhx" -o "$dir" --set model.seq=64 \
    --set "data.train=\"$work/corpus_train.bin\"" \
    --set "data.val=\"$work/corpus_val.bin\"" --set train.steps=20 --set train.micro_batch=4 \
    --set train.global_batch=16 --set train.val_every=10 --set train.val_batches=2 \
    --set schedule.parallel.dp="$dp" --set schedule.parallel.tp="$tp" \
    --set schedule.parallel.pp="$pp" "$@"
}

run() {  # run PLAN_DIR RANKS [dhxrun options]
  local dir=$1 n=$2; shift 2
  $MPIRUN -np "$n" "$DHXRUN" "$dir" --quiet "$@"
}

# reference MODEL [--set ...]: the single-rank plan `single`, and single.jsonl, the losses of
# its run. Every parity test of a model with the same settings compares against the same run,
# so the first test to need it trains it and the others (concurrent ones wait on the lock)
# copy it. The key holds the binaries' change times and this script's and the sample's text,
# so a rebuild, or a change to how the tests compile, trains a fresh reference.
reference() {
  local refs=$WORK/references key
  mkdir -p "$refs"
  key=$(printf '%s\n' "$@" "$(stat -c %Y "$DHXC" "$DHXRUN")" \
        "$(cat "$0" "$SRC/samples/$1.dhx" | md5sum)" | md5sum | cut -c1-16)
  compile "$1" single 1 1 1 "${@:2}"  # the plan, which some cases run again
  (
    flock 9
    if [ ! -f "$refs/$key.jsonl" ]; then
      run single 1 --metrics "$refs/$key.tmp"
      mv "$refs/$key.tmp" "$refs/$key.jsonl"
    fi
  ) 9>"$refs/$key.lock"
  cp "$refs/$key.jsonl" single.jsonl
}

case $case_name in
  parity_*)
    model=$1; shift
    sets=() extra=() sp=""
    while [[ ${1:-} == --set ]]; do sets+=("$1" "$2"); shift 2; done
    if [[ $case_name =~ ^parity_zero([123])_ ]]; then
      z=${BASH_REMATCH[1]}
      extra+=(--set schedule.parallel.zero="$z") sp+=" with zero: $z"
    fi
    if [[ $case_name =~ ^parity_(zero[123]_)?sp_ ]]; then
      extra+=(--set schedule.parallel.sp=on) sp+=" with sp: on"
    fi
    reference "$model" "${sets[@]}"
    for layout in "$@"; do
      IFS=, read -r dp tp pp virtual <<<"$layout"
      virtual=${virtual:-1}
      name="l$dp$tp$pp$virtual"
      shape=(--set schedule.parallel.virtual="$virtual") what="$virtual chunks per stage"
      if [[ $virtual == w ]]; then
        shape=(--set schedule.strands.fold=w) what="the pipeline folded into a W"
      fi
      compile "$model" "$name" "$dp" "$tp" "$pp" "${shape[@]}" "${sets[@]}" "${extra[@]}"
      run "$name" $((dp * tp * pp)) --metrics "$name.jsonl"
      "$CHECK" same single.jsonl "$name.jsonl" 1e-4
      echo "($dp,$tp,$pp) with $what$sp matches one rank over 20 steps"
    done
    ;;
  resume_across_layouts)
    reference tiny
    compile tiny tp2 1 2 1 --set train.checkpoint_every=10
    run tp2 2 --steps 10 --checkpoint-dir ck
    test -f ck/step_10.safetensors
    compile tiny dp2 2 1 1
    run dp2 2 --resume ck/step_10.safetensors --metrics dp2.jsonl
    "$CHECK" same single.jsonl dp2.jsonl 1e-5 11 20
    compile tiny tp2dp2 2 2 1
    run tp2dp2 4 --resume ck/step_10.safetensors --metrics tp2dp2.jsonl
    "$CHECK" same single.jsonl tp2dp2.jsonl 1e-5 11 20
    compile tiny pp2 1 1 2
    run pp2 2 --resume ck/step_10.safetensors --metrics pp2.jsonl --checkpoint-dir ck_pp
    "$CHECK" same single.jsonl pp2.jsonl 1e-5 11 20
    # and back: a pipeline's checkpoint (every stage's tensors, gathered) on one rank
    run pp2 2 --steps 15 --save pp15.safetensors
    run single 1 --resume pp15.safetensors --metrics back.jsonl
    "$CHECK" same single.jsonl back.jsonl 1e-5 16 20
    echo "a (1,2,1) checkpoint resumes on (2,1,1), (2,2,1) and (1,1,2); a (1,1,2) one on (1,1,1)"
    ;;
  resume_sp_on_one_rank)
    reference tiny
    compile tiny tp2sp 1 2 1 --set schedule.parallel.sp=on --set train.checkpoint_every=10
    run tp2sp 2 --steps 10 --checkpoint-dir ck
    test -f ck/step_10.safetensors
    run single 1 --resume ck/step_10.safetensors --metrics resumed.jsonl
    "$CHECK" same single.jsonl resumed.jsonl 1e-4 11 20
    echo "a (1,2,1) checkpoint with sp: on resumes on (1,1,1) with the single-rank losses"
    ;;
  resume_zero)
    compile tiny single 1 1 1 --set train.checkpoint_every=10
    run single 1 --metrics single.jsonl --checkpoint-dir ck1
    test -f ck1/step_10.safetensors
    compile tiny dp2z1 2 1 1 --set schedule.parallel.zero=1 --set train.checkpoint_every=10
    run dp2z1 2 --steps 10 --checkpoint-dir ck
    test -f ck/step_10.safetensors
    compile tiny tp2 1 2 1
    run tp2 2 --resume ck/step_10.safetensors --metrics tp2.jsonl
    "$CHECK" same single.jsonl tp2.jsonl 1e-5 11 20
    compile tiny one 1 1 1
    run one 1 --resume ck/step_10.safetensors --metrics one.jsonl
    "$CHECK" same single.jsonl one.jsonl 1e-5 11 20
    echo "a zero 1 checkpoint of (2,1,1) resumes on (1,2,1) and (1,1,1) with the single-rank losses"
    run dp2z1 2 --resume ck1/step_10.safetensors --metrics dp2z1.jsonl
    "$CHECK" same single.jsonl dp2z1.jsonl 1e-5 11 20
    echo "a (1,1,1) checkpoint resumes under zero 1 on (2,1,1) with the single-rank losses"
    run dp2z1 2 --init ck1/step_10.safetensors --steps 2  # its weights, fresh moments
    ;;
  resume_zero3)
    compile tiny single 1 1 1 --set train.checkpoint_every=10
    run single 1 --metrics single.jsonl --checkpoint-dir ck1
    compile tiny dp2z3 2 1 1 --set schedule.parallel.zero=3 --set train.checkpoint_every=10
    run dp2z3 2 --steps 10 --checkpoint-dir ck
    test -f ck/step_10.safetensors
    compile tiny one 1 1 1
    run one 1 --resume ck/step_10.safetensors --metrics one.jsonl
    "$CHECK" same single.jsonl one.jsonl 1e-5 11 20
    echo "a zero 3 checkpoint of (2,1,1) resumes on (1,1,1) with the single-rank losses"
    run dp2z3 2 --resume ck1/step_10.safetensors --metrics dp2z3.jsonl
    "$CHECK" same single.jsonl dp2z3.jsonl 1e-5 11 20
    echo "a (1,1,1) checkpoint resumes under zero 3 on (2,1,1) with the single-rank losses"
    compile tiny dp2z2 2 1 1 --set schedule.parallel.zero=2
    run dp2z2 2 --resume ck/step_10.safetensors --metrics dp2z2.jsonl
    "$CHECK" same single.jsonl dp2z2.jsonl 1e-5 11 20
    echo "a zero 3 checkpoint of (2,1,1) resumes under zero 2 with the single-rank losses"
    ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
