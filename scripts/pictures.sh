#!/usr/bin/env bash
# Redraws the timelines of docs/parallelism.md (docs/img/parallel-*.svg) from a build folder:
# planned steps of samples/tiny.dhx (dhxc --emit=trace) at dp 2 (zero 0 and 3), tp 2 and pp 4
# (1F1B), and a measured step of a 2-rank tp run (dhxrun --trace) on a corpus made from the licence texts.
#
#   bash scripts/pictures.sh BUILD_DIR        (MPIRUN overrides mpirun)
set -euo pipefail
BUILD=$(cd "${1:?usage: bash scripts/pictures.sh BUILD_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DHXC=$BUILD/bin/dhxc DHXRUN=$BUILD/bin/dhxrun IMG=$ROOT/docs/img
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$IMG"

plan() {  # plan NAME --set ...: the planned step of tiny with these settings
  local name=$1; shift
  "$DHXC" "$ROOT/samples/tiny.dhx" --emit=trace "$@" > "$TMP/$name.json"
}
draw() {  # draw NAME TITLE [trace_svg options]
  local name=$1 title=$2; shift 2
  python3 "$ROOT/scripts/trace_svg.py" "$TMP/$name.json" -o "$IMG/$name.svg" --phases \
    --title "$title" "$@"
  echo "$IMG/$name.svg: $(wc -c < "$IMG/$name.svg") bytes"
}

plan parallel-dp --set schedule.parallel.dp=2
draw parallel-dp "Data parallelism: tiny, dp 2, one planned step"
plan parallel-zero3 --set schedule.parallel.dp=2 --set schedule.parallel.zero=3
draw parallel-zero3 "Sharded parameters (zero 3): tiny, dp 2, one planned step"
plan parallel-tp --set schedule.parallel.dp=1 --set schedule.parallel.tp=2
draw parallel-tp "Tensor parallelism: tiny, tp 2, one planned step"
plan parallel-pp-1f1b --set schedule.parallel.dp=1 --set schedule.parallel.pp=4 \
  --set train.global_batch=32 --set train.micro_batch=4
draw parallel-pp-1f1b "Pipeline parallelism (1F1B): tiny, pp 4, 8 micro-batches, one planned step"

# The measured step: step 2 of a 3-step run (step 1 includes first-touch costs).
corpus=$(find /usr/share/common-licenses -maxdepth 1 -type f 2>/dev/null | sort)
[ -n "$corpus" ] || corpus=$(ls "$ROOT"/docs/*.md)
# shellcheck disable=SC2086
"$DHXC" data -o "$TMP/corp" $corpus > /dev/null
"$DHXC" "$ROOT/samples/tiny.dhx" -o "$TMP/plan" --set schedule.parallel.dp=1 \
  --set schedule.parallel.tp=2 --set "data.train=\"$TMP/corp_train.bin\"" \
  --set "data.val=\"$TMP/corp_val.bin\""
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 \
  ${MPIRUN:-mpirun} --oversubscribe -np 2 "$DHXRUN" "$TMP/plan" --steps 3 --threads 1 \
  --trace "$TMP/parallel-tp-measured.json" --trace-steps 2 --quiet
draw parallel-tp-measured \
  "Tensor parallelism: tiny, tp 2, step 2 measured by dhxrun --trace (2 CPU ranks)"
