#!/usr/bin/env bash
# Paired strands change when things run, never what they compute: the losses of a run with
# strands { pair: on, search: off } equal the unpaired run's bit for bit, and so do those of
# search: dp, whose events only change when ops run.
# Usage: strands.sh CASE   (environment: DHXC DHXRUN CHECK DROP MPIRUN SRC WORK)
#   pair_* MODEL DP,TP,PP...   each layout paired and unpaired, 20 steps, compared exactly
#                              (DP,TP,PP+dp: paired with search: dp as well)
#                              (pair_*_sp_zero: with sp: on and zero: 1 on both)
#   dropped_gradient           a paired plan with one gradient contribution zeroed
#                              (drop_gradient) must NOT match: the comparison can fail
set -euo pipefail
case_name=$1; shift
work=$WORK/$case_name
rm -rf "$work" && mkdir -p "$work"
cd "$work"
# shellcheck disable=SC2046
"$DHXC" data -o "$work/corpus" $(find /usr/share/common-licenses -maxdepth 1 -type f | sort) >/dev/null

compile() {  # compile MODEL DIR DP TP PP [--set ...]: 4 micro-batches of 4 per rank and step
  local model=$1 dir=$2 dp=$3 tp=$4 pp=$5; shift 5
  "$DHXC" "$SRC/samples/$model.dhx" -o "$dir" --set "data.train=\"$work/corpus_train.bin\"" \
    --set "data.val=\"$work/corpus_val.bin\"" --set train.steps=20 --set train.micro_batch=4 \
    --set train.global_batch=$((16 * dp)) --set train.val_every=10 --set train.val_batches=2 \
    --set schedule.parallel.dp="$dp" --set schedule.parallel.tp="$tp" \
    --set schedule.parallel.pp="$pp" "$@"
}
paired=(--set schedule.strands.pair=on --set schedule.strands.search=off)
run() { local dir=$1 n=$2; shift 2; $MPIRUN -np "$n" "$DHXRUN" "$dir" --quiet "$@"; }

case $case_name in
  pair_*)
    model=$1; shift
    extra=()
    if [[ $case_name == *_sp_zero ]]; then
      extra=(--set schedule.parallel.sp=on --set schedule.parallel.zero=1)
    fi
    for layout in "$@"; do
      IFS=, read -r dp tp pp <<<"${layout%+dp}"
      n=$((dp * tp * pp))
      compile "$model" "off$dp$tp$pp" "$dp" "$tp" "$pp" "${extra[@]}"
      compile "$model" "on$dp$tp$pp" "$dp" "$tp" "$pp" "${extra[@]}" "${paired[@]}"
      run "off$dp$tp$pp" "$n" --metrics "off$dp$tp$pp.jsonl"
      run "on$dp$tp$pp" "$n" --metrics "on$dp$tp$pp.jsonl"
      "$CHECK" same "off$dp$tp$pp.jsonl" "on$dp$tp$pp.jsonl" 0
      echo "($dp,$tp,$pp): paired strands give the unpaired losses bit for bit"
      if [[ $layout == *+dp ]]; then  # the overlap search's events: the same losses again
        compile "$model" "dp$dp$tp$pp" "$dp" "$tp" "$pp" "${extra[@]}" \
          --set schedule.strands.pair=on --set schedule.strands.search=dp
        run "dp$dp$tp$pp" "$n" --metrics "dp$dp$tp$pp.jsonl"
        "$CHECK" same "off$dp$tp$pp.jsonl" "dp$dp$tp$pp.jsonl" 0
        echo "($dp,$tp,$pp): paired strands aligned by the overlap search (dp) too"
        # greedy: compiled only (dhxc -o checks that the ranks cannot hang)
        compile "$model" "greedy$dp$tp$pp" "$dp" "$tp" "$pp" "${extra[@]}" \
          --set schedule.strands.pair=on --set schedule.strands.search=greedy
      fi
    done
    ;;
  dropped_gradient)
    compile tiny off 1 1 1
    compile tiny on 1 1 1 "${paired[@]}"
    "$DROP" on
    run off 1 --metrics off.jsonl
    run on 1 --metrics on.jsonl
    if "$CHECK" same off.jsonl on.jsonl 0 > compare.txt; then
      cat compare.txt
      echo "a plan that drops a gradient contribution matched the unpaired run"
      exit 1
    fi
    echo "dropping one gradient contribution breaks the equality, as it must"
    ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
