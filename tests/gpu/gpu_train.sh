#!/usr/bin/env bash
# Training on the CUDA backend, compared with the CPU backend: the same plan, the same data,
# the losses step by step. Runs on a real GPU, or (EMULATED=1) on the emulated driver and
# cuBLASLt of tests/gpu, which execute the plan's host kernels: that checks everything the
# backend does on the host (copies, launches, GEMM layouts, issue order, LOAD_BATCH, the
# norm) but not the PTX, which only a GPU runs.
# Usage: gpu_train.sh CASE   (environment: DHXC DHXRUN CHECK SRC WORK; EMULATED=1 with
#                             EMULATED_CUDA EMULATED_CUBLASLT; GPU_STEPS)
#   losses    the tiny GPT, fp32: per-step training and validation losses within 1e-4 of the
#             CPU backend's (GPU_STEPS steps: 50 on a GPU, 3 emulated)
#   resume    a checkpoint written on the device resumes to the uninterrupted run's losses
#   strands   paired strands on the device give the unpaired run's losses exactly; a paired
#             MICRO program loads its micro-batches itself (LOAD_BATCH: copies from
#             page-locked memory on the instruction's stream)
# Where there is no GPU and EMULATED is not set, every case is skipped (exit 77).
set -euo pipefail
case_name=$1
work=$WORK/$case_name
rm -rf "$work" && mkdir -p "$work"
cd "$work"

if [ "${EMULATED:-0}" = 1 ]; then
  export DHX_CUDA_LIBRARY=$EMULATED_CUDA DHX_CUBLASLT_LIBRARY=$EMULATED_CUBLASLT
  steps=${GPU_STEPS:-3}
else
  if "$DHXRUN" --backend cuda no_plan_needed 2>err.txt >/dev/null; [ -s err.txt ] &&
     grep -q '^dhxrun: error: --backend cuda: ' err.txt; then
    echo "no CUDA device here: skipped ($(cat err.txt))"; exit 77
  fi
  steps=${GPU_STEPS:-50}
fi

# shellcheck disable=SC2046
"$DHXC" data -o "$work/corpus" $(find /usr/share/common-licenses -maxdepth 1 -type f | sort) >/dev/null

tiny() {  # tiny DIR [--set ...]: the tiny GPT on one rank, small batches
  local dir=$1; shift
  "$DHXC" "$SRC/samples/tiny.dhx" -o "$dir" --set "data.train=\"$work/corpus_train.bin\"" \
    --set "data.val=\"$work/corpus_val.bin\"" --set schedule.parallel.dp=1 \
    --set train.steps="$steps" --set train.warmup=0 --set train.micro_batch=2 \
    --set train.global_batch=4 --set train.val_every="$steps" --set train.val_batches=1 "$@" \
    > /dev/null
}

on_device() {  # on_device DIR ARGS...: dhxrun on the CUDA backend (emulated kernels: DIR's)
  local dir=$1; shift
  DHX_EMULATED_KERNELS=$PWD/$dir/kernels.so "$DHXRUN" --backend cuda "$dir" --quiet "$@"
}

case $case_name in
  losses)
    tiny plan
    "$DHXRUN" --backend cpu plan --quiet --metrics cpu.jsonl
    on_device plan --metrics gpu.jsonl
    "$CHECK" same cpu.jsonl gpu.jsonl 1e-4
    ;;
  resume)
    tiny plan --set train.checkpoint_every=2
    on_device plan --metrics full.jsonl --checkpoint-dir ckpt
    test -f ckpt/step_2.safetensors
    on_device plan --resume ckpt/step_2.safetensors --metrics resumed.jsonl
    "$CHECK" same full.jsonl resumed.jsonl 0 3 "$steps"
    ;;
  strands)
    tiny unpaired
    tiny paired --set schedule.strands.pair=on
    on_device unpaired --metrics unpaired.jsonl
    on_device paired --metrics paired.jsonl
    "$CHECK" same unpaired.jsonl paired.jsonl 0
    ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
echo "$case_name: the CUDA backend matches"
