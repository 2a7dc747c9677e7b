#!/usr/bin/env bash
# Training on the CUDA backend, compared with the CPU backend: the same plan, the same data,
# the losses step by step. Runs on a real GPU, or (EMULATED=1) on the emulated driver and
# cuBLASLt of tests/gpu, which execute the plan's host kernels: that checks everything the
# backend does on the host (copies, launches, GEMM layouts, issue order, LOAD_BATCH, the
# norm) but not the PTX, which only a GPU runs.
# Usage: gpu_train.sh CASE   (environment: DHXC DHXRUN CHECK SRC WORK MPIRUN; EMULATED=1 with
#                             EMULATED_CUDA EMULATED_CUBLASLT EMULATED_NCCL; GPU_STEPS)
#   losses    the tiny GPT, fp32: per-step training and validation losses within 1e-4 of the
#             CPU backend's (GPU_STEPS steps: 50 on a GPU, 3 emulated)
#   bf16      the tiny GPT in bf16 mixed precision: per-step losses within 2% of the CPU
#             backend's fp32 run, and within 1e-2 of the CPU backend's bf16 run (which
#             emulates the GEMMs in f32; the device rounds its sums in another order); its
#             MFU against the bf16 datasheet peak (losses: the f32 one)
#   resume    a checkpoint written on the device resumes to the uninterrupted run's losses
#   strands   paired strands on the device give the unpaired run's losses exactly; a paired
#             MICRO program loads its micro-batches itself (LOAD_BATCH: copies from
#             page-locked memory on the instruction's stream)
#   dp2 zero2 tp2 pp2  two ranks under MPIRUN (dp 2: the gradients' all-reduce; dp 2 with
#             ZeRO 2: reduce-scatter and all-gather; tp 2; pp 2 with two micro-batches: sends
#             and receives): the losses within 1e-4 of the CPU backend's two ranks. On real
#             GPUs these need two devices (NCCL refuses two ranks on one). Emulated, NCCL is
#             EMULATED_NCCL, which moves the data with MPI when the backend issues each call,
#             blocking until the peers' matching calls: that meets only where every rank issues
#             the operations of different communicators in a compatible order. The backend
#             issues streams in turn (dhx_cuda_issue_order), so ranks with the same programs (dp,
#             tp) issue in the same order, and plain 1F1B at pp 2 meets too; the interleaved
#             schedule (virtual 2) does not: each stage reaches a transfer on one stream before
#             the one its peer waits for on another, which NCCL runs concurrently on their
#             streams but the emulation cannot, so it is not among these cases.
# Where there is no GPU and EMULATED is not set, every case is skipped (exit 77).
set -euo pipefail
case_name=$1
work=$WORK/$case_name
rm -rf "$work" && mkdir -p "$work"
cd "$work"

if [ "${EMULATED:-0}" = 1 ]; then
  export DHX_CUDA_LIBRARY=$EMULATED_CUDA DHX_CUBLASLT_LIBRARY=$EMULATED_CUBLASLT
  export DHX_NCCL_LIBRARY=$EMULATED_NCCL
  export DHX_EMULATED_DEVICE_NAME='NVIDIA H200 (emulated)'  # a name with a datasheet peak
  steps=${GPU_STEPS:-3}
else
  if "$DHXRUN" --backend cuda no_plan_needed 2>err.txt >/dev/null; [ -s err.txt ] &&
     grep -q '^dhxrun: error: --backend cuda: ' err.txt; then
    echo "no CUDA device here: skipped ($(cat err.txt))"; exit 77
  fi
  steps=${GPU_STEPS:-50}
  case $case_name in
    dp2|zero2|tp2|pp2)
      devices=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
      if [ "${devices:-0}" -lt 2 ]; then
        echo "${devices:-0} CUDA device(s) here, two ranks need two: skipped"; exit 77
      fi
      ;;
  esac
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

# peak_is PRECISION METRICS: the run's MFU is against the datasheet peak of PRECISION (f32 or
# bf16: a plan that stores bf16 runs its GEMMs on tensor cores), where the device has one.
peak_is() {
  local source
  source=$(tail -1 "$2" | grep -o '"peak_source":"[^"]*"')
  echo "$source"
  case $source in
    *'"datasheet '*) [[ $source == *"datasheet dense $1 peak"* ]] ;;
    *) [ "${EMULATED:-0}" != 1 ] ;;  # an unlisted GPU: no peak to check (emulated: listed)
  esac
}

two_ranks() {  # two_ranks BACKEND DIR ARGS...: dhxrun on two ranks (emulated kernels: DIR's)
  local backend=$1 dir=$2; shift 2
  # Under the sanitizers: what OpenMPI's plugins allocate at MPI_Init reaches the
  # tests/lsan.supp entries only with full stacks.
  # shellcheck disable=SC2086
  ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0 \
    DHX_EMULATED_KERNELS=$PWD/$dir/kernels.so $MPIRUN -np 2 "$DHXRUN" --backend "$backend" \
    "$dir" --quiet "$@"
}

case $case_name in
  dp2|zero2|tp2|pp2)
    case $case_name in
      dp2) tiny plan --set schedule.parallel.dp=2 ;;
      zero2) tiny plan --set schedule.parallel.dp=2 --set schedule.parallel.zero=2 ;;
      tp2) tiny plan --set schedule.parallel.tp=2 ;;
      pp2) tiny plan --set schedule.parallel.pp=2 ;;  # two micro-batches of 2
    esac
    two_ranks cpu plan --metrics cpu.jsonl
    two_ranks cuda plan --metrics gpu.jsonl
    "$CHECK" same cpu.jsonl gpu.jsonl 1e-4
    ;;
  losses)
    tiny plan
    "$DHXRUN" --backend cpu plan --quiet --metrics cpu.jsonl
    on_device plan --metrics gpu.jsonl
    "$CHECK" same cpu.jsonl gpu.jsonl 1e-4
    peak_is f32 gpu.jsonl
    ;;
  bf16)
    tiny f32
    tiny bf16 --set train.precision=bf16
    "$DHXRUN" --backend cpu f32 --quiet --metrics cpu_f32.jsonl
    "$DHXRUN" --backend cpu bf16 --quiet --metrics cpu_bf16.jsonl
    on_device bf16 --metrics gpu_bf16.jsonl
    "$CHECK" same cpu_f32.jsonl gpu_bf16.jsonl 2e-2
    "$CHECK" same cpu_bf16.jsonl gpu_bf16.jsonl 1e-2
    peak_is bf16 gpu_bf16.jsonl
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
