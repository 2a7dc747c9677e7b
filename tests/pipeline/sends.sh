#!/usr/bin/env bash
# A pipeline stage's gradient sends free their bytes within the step: the compute stream waits
# for each where a message arrives that the receiving stage sent after receiving it
# (compiler/graph/pipeline.c, plan_gradient_settles), not at the end of the step. So no rank's
# arena grows with the micro-batches per step beyond their input and loss slots: from 16 to 32
# micro-batches every rank of 1F1B (pp 2 and 3, paired), interleaved 1F1B and the W (pp 2 and
# 3) grows by less than two of the tiny GPT's 256 KiB residual gradients, where waiting at the
# end grows the senders by sixteen (the paired W of three stages: less than eight from 32 to 64,
# below). Compiling a plan also runs the cross-rank
# verifier on it, which proves the earlier waits cannot hang (no plan directory is written:
# the kernels' code generation would only take time).
# Usage: sends.sh   (environment: DHXC SRC WORK)
set -euo pipefail
work=$WORK/sends
rm -rf "$work" && mkdir -p "$work"
cd "$work"

# arenas MICRO [--set ...]: each rank's arena in bytes, space-separated, at MICRO micro-batches
arenas() {
  local micro=$1; shift
  "$DHXC" "$SRC/samples/tiny.dhx" --set schedule.parallel.dp=1 --set schedule.parallel.tp=1 \
    --set train.micro_batch=4 --set train.global_batch=$((4 * micro)) "$@" --emit=schedule |
    awk '/^rank [0-9]+:/ { for (i = 1; i < NF; i++) if ($i == "arena") printf "%s ", $(i + 1) }'
}

limit=$((2 * 256 * 1024)) few_micro=16 many_micro=32
check() {
  local name=$1; shift
  read -r -a few <<< "$(arenas $few_micro "$@")"
  read -r -a many <<< "$(arenas $many_micro "$@")"
  [[ ${#few[@]} -ge 2 && ${#few[@]} == "${#many[@]}" ]] || { echo "$name: no arenas"; exit 1; }
  for r in "${!few[@]}"; do
    local grew=$((many[r] - few[r]))
    if ((grew >= limit)); then
      echo "$name: rank $r's arena grew by $grew bytes from $few_micro to $many_micro micro-batches"
      exit 1
    fi
  done
  echo "$name: arenas at $few_micro micro-batches ${few[*]}, at $many_micro ${many[*]}"
}

pp3=(--set schedule.parallel.pp=3 --set model.layers=6)
pair=(--set schedule.strands.pair=on --set schedule.strands.search=none)
w=(--set schedule.strands.fold=w)
check "1F1B pp 2" --set schedule.parallel.pp=2
check "1F1B pp 3" "${pp3[@]}"
check "1F1B pp 3, paired" "${pp3[@]}" "${pair[@]}"
check "interleaved pp 2, virtual 2" --set schedule.parallel.pp=2 --set schedule.parallel.virtual=2
check "W pp 2" --set schedule.parallel.pp=2 "${w[@]}"
check "W pp 3" "${pp3[@]}" "${w[@]}"
# Paired strands in a W of three stages: the placement of the two strands' tensors (two-ended,
# under ceilings tried in steps of 5%, memplan.c) moves the arena by up to about five residual
# gradients from one count of micro-batches to the next, whichever way the strands are
# assigned. Compared at 32 and 64, where a send waited for at the end of the step would grow
# its sender by 32, the bound is 8.
limit=$((8 * 256 * 1024)) few_micro=32 many_micro=64
check "W pp 3, paired" "${pp3[@]}" "${w[@]}" "${pair[@]}"
