#!/usr/bin/env bash
# scripts/gpu-check.sh — every check DHX runs on an NVIDIA GPU, in one command, ending with a
# summary to paste into docs/gpu-validation.md.
#
#   scripts/gpu-check.sh                 build (build-gpu/), prepare the plans and data into
#                                        build-gpu/gpu-check, and run the checks
#   scripts/gpu-check.sh --prepare DIR   build and prepare only, into DIR: dhxrun and the tools
#                                        with the shared libraries they need (MPI, OpenBLAS,
#                                        cJSON: not the GPU's), the compiled plans, the data and
#                                        this script, for a GPU machine that lacks the build
#                                        dependencies (LLVM, flex, bison, OpenMPI, OpenBLAS)
#   DIR/gpu-check.sh --run DIR           there: the checks, from what DIR holds
#   --emulated                           with --run or alone: on the emulated driver and
#                                        cuBLASLt of tests/gpu instead of a GPU (a dry run of
#                                        this script on any machine; the figures mean nothing)
#
# The checks (each PASS, FAIL or SKIP with its figures in the summary):
#   device      name, driver, memory; dhxrun --version (the libraries it loads)
#   kernels     bench/kernels_gpu: every kernel's output against the CPU backend's (fp32: 1e-5
#               relative; bf16 plans: 1e-2) on the tiny GPT eight ways (plain, paired, bf16, and
#               on a GPU cluster: fused attention and cuBLASLt epilogues, f32 and bf16, and f32
#               with attention heads of 64, 128 and 256); on
#               GPT-2 124M (--time-only): each kernel's GB/s against the measured copy bandwidth
#   losses      the tiny GPT, STEPS steps (50): per-step losses within 1e-4 of the CPU backend
#               (fp32; the GPU cluster's plan too), and in bf16 mixed precision (both clusters)
#               within 2% of the CPU backend's fp32 losses
#   resume      a checkpoint written on the GPU resumes to the uninterrupted losses, bitwise
#   strands     paired strands on the GPU give the unpaired losses, bitwise
#   gpt2        GPT-2 124M (samples/gpu/gpt2_124m.dhx), GPT2_STEPS steps (20): tokens/s and
#               MFU against the device's datasheet peak for the plan's precision (dhxrun's
#               summary: runtime/gpu_peaks.c)
#   sanitizer   compute-sanitizer memcheck and racecheck on two steps of the tiny GPT (the CPU
#               cluster's plan and the GPU cluster's bf16 one)
#
# Environment: BUILD_DIR (default build-gpu), STEPS, GPT2_STEPS, SUMMARY (the summary's file;
# default DIR/summary.md), CHECK_TIMEOUT (seconds any one run may take, 300: a hang fails),
# DHX_NCCL_LIBRARY / DHX_CUBLASLT_LIBRARY (found among Python's nvidia-* packages when unset).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=all dir="" emulated=0
while [ $# -gt 0 ]; do
  case $1 in
    --prepare) mode=prepare; dir=${2:?--prepare DIR}; shift 2 ;;
    --run) mode=run; dir=${2:?--run DIR}; shift 2 ;;
    --emulated) emulated=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# ---- prepare: build here, compile the plans and the data ---------------------------------
prepare() {
  local root build
  root=$(cd "$here/.." && pwd)
  build=${BUILD_DIR:-$root/build-gpu}
  dir=${dir:-$build/gpu-check}
  mkdir -p "$dir"/{bin,lib,plans,data}
  dir=$(cd "$dir" && pwd)
  echo "gpu-check: building in $build"
  if [ ! -f "$build/CMakeCache.txt" ]; then  # a build folder given in BUILD_DIR keeps its type
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null || return 1
  fi
  cmake --build "$build" -j"$(nproc)" --target dhxc dhxrun metrics_check kernels_gpu \
    emulated_cuda emulated_cublaslt > /dev/null || return 1
  local bin=$build/bin
  cp "$bin/dhxrun" "$bin/metrics_check" "$bin/kernels_gpu" "$dir/bin/"
  cp "$(find "$build" -name 'libemulated_cuda.so' | head -1)" \
     "$(find "$build" -name 'libemulated_cublaslt.so' | head -1)" "$dir/lib/"
  # Open MPI's components (it loads them at MPI_Init) and the shared libraries everything needs
  # beyond the C library's own.
  local mpi_components
  mpi_components=$(dirname "$(find /usr/lib -path '*openmpi*' -name mca_ess_singleton.so | head -1)")
  cp -r "$mpi_components" "$dir/lib/mpi-components"
  mkdir -p "$dir/share" && cp -r "$(ompi_info --path pkgdatadir --parsable | cut -d: -f3)" \
    "$dir/share/openmpi"  # its messages
  ldd "$dir/bin/dhxrun" "$dir/bin/kernels_gpu" "$dir/lib/mpi-components"/*.so |
    awk '$3 ~ /^\// {print $3}' | sort -u |
    grep -v -E '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' |
    while read -r lib; do cp -L "$lib" "$dir/lib/"; done
  cp "$here/gpu-check.sh" "$dir/"
  # shellcheck disable=SC2046
  "$bin/dhxc" data -o "$dir/data/corpus" $(find /usr/share/common-licenses -maxdepth 1 -type f |
    sort) > /dev/null || return 1
  # The plans name no data: every run gives the folder's (so the folder may move). The
  # learning rate is half the sample's: on this corpus step 19's batch spikes the loss, and at
  # 2e-3 the spike magnifies bf16's rounding to 5% for a step, at 1e-3 to 3e-4.
  local tiny=("$root/samples/tiny.dhx" --set schedule.parallel.dp=1
              --set train.steps="${STEPS:-50}" --set train.warmup=$(( ${STEPS:-50} >= 20 ? 5 : 0 ))
              --set train.optimizer.lr=1e-3 --set train.micro_batch=4
              --set train.global_batch=8 --set train.val_every=25 --set train.val_batches=2)
  # The same model on a GPU cluster: fused attention and cuBLASLt epilogues, bf16 by default.
  sed -e 's/^use std\.gpt$/&\nuse std.clusters/' \
      -e 's|^cluster = cpu(.*)|cluster = hgx_h200(per_node: 1)|' "$root/samples/tiny.dhx" \
      > "$dir/plans/tiny_gpu.dhx"
  local tiny_gpu=("$dir/plans/tiny_gpu.dhx" "${tiny[@]:1}")
  # Its attention rows are 32 wide (4 heads of 128); with 2 heads and 1 they are 64 and 128,
  # and with a width of 256 in one head 256: the PTX's attention keeps rows of up to 128 in
  # registers and larger ones in memory.
  local hs
  for hs in 64 128 256; do
    sed -e "s/hidden: 128, heads: 4/hidden: $(( hs < 128 ? 128 : hs )), heads: $(( hs < 128 ? 128 / hs : 1 ))/" \
      "$dir/plans/tiny_gpu.dhx" > "$dir/plans/tiny_gpu_hs$hs.dhx"
  done
  "$bin/dhxc" "${tiny[@]}" -o "$dir/plans/tiny" > /dev/null &&
  "$bin/dhxc" "${tiny[@]}" -o "$dir/plans/tiny_ckpt" \
    --set train.checkpoint_every=$(( ${STEPS:-50} / 2 )) > /dev/null &&
  "$bin/dhxc" "${tiny[@]}" -o "$dir/plans/tiny_paired" --set schedule.strands.pair=on > /dev/null &&
  "$bin/dhxc" "${tiny[@]}" -o "$dir/plans/tiny_2steps" --set train.steps=2 > /dev/null &&
  "$bin/dhxc" "${tiny_gpu[@]}" -o "$dir/plans/tiny_gpu_2steps" --set train.steps=2 > /dev/null &&
  "$bin/dhxc" "${tiny[@]}" -o "$dir/plans/tiny_bf16" --set train.precision=bf16 > /dev/null &&
  "$bin/dhxc" "${tiny_gpu[@]}" -o "$dir/plans/tiny_gpu" --set train.precision=f32 > /dev/null &&
  "$bin/dhxc" "${tiny_gpu[@]}" -o "$dir/plans/tiny_gpu_bf16" > /dev/null &&
  for hs in 64 128 256; do
    "$bin/dhxc" "$dir/plans/tiny_gpu_hs$hs.dhx" "${tiny[@]:1}" -o "$dir/plans/tiny_gpu_hs$hs" \
      --set train.precision=f32 > /dev/null || return 1
  done &&
  "$bin/dhxc" "$root/samples/gpu/gpt2_124m.dhx" --set train.steps="${GPT2_STEPS:-20}" \
    -o "$dir/plans/gpt2" > /dev/null || return 1
  tar -cJf "$dir.tar.xz" -C "$(dirname "$dir")" "$(basename "$dir")"
  echo "gpu-check: prepared $dir ($(du -sh "$dir" | cut -f1); packed: $dir.tar.xz," \
       "$(du -sh "$dir.tar.xz" | cut -f1))"
}

# ---- run: the checks ----------------------------------------------------------------------
summary_line() { printf '| %s | %s | %s |\n' "$1" "$2" "$3" | tee -a "$SUMMARY"; }

# A library of Python's nvidia-* wheels (the GPU image's PyTorch brings NCCL and cuBLAS).
find_python_lib() {
  python3 -c "import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))" 2>/dev/null |
    while read -r site; do find "$site/nvidia" -name "$1" 2>/dev/null | head -1; done | head -1
}

json_field() {  # json_field FILE KEY: the number KEY of the summary line (the file's last)
  tail -1 "$1" | grep -o "\"$2\":[-0-9.eE+]*" | head -1 | cut -d: -f2
}

run_checks() {
  dir=$(cd "$dir" && pwd)
  local bin=$dir/bin plans=$dir/plans work=$dir/work
  rm -rf "$work" && mkdir -p "$work"
  SUMMARY=${SUMMARY:-$dir/summary.md}
  : > "$SUMMARY"
  export LD_LIBRARY_PATH=$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export OMPI_MCA_ess_singleton_isolated=1  # one rank, no mpirun: no daemon to start
  export OMPI_MCA_mca_base_component_path=$dir/lib/mpi-components OPAL_PKGDATADIR=$dir/share/openmpi
  local data=(--train "$dir/data/corpus_train.bin" --val "$dir/data/corpus_val.bin")
  if [ "$emulated" = 1 ]; then
    export DHX_CUDA_LIBRARY=$dir/lib/libemulated_cuda.so
    export DHX_CUBLASLT_LIBRARY=$dir/lib/libemulated_cublaslt.so
  else
    : "${DHX_NCCL_LIBRARY:=$(find_python_lib 'libnccl.so*')}"
    : "${DHX_CUBLASLT_LIBRARY:=$(find_python_lib 'libcublasLt.so*')}"
    [ -n "$DHX_NCCL_LIBRARY" ] && export DHX_NCCL_LIBRARY || unset DHX_NCCL_LIBRARY
    [ -n "$DHX_CUBLASLT_LIBRARY" ] && export DHX_CUBLASLT_LIBRARY || unset DHX_CUBLASLT_LIBRARY
  fi
  local device driver="" memory=""
  if [ "$emulated" = 1 ]; then
    device="emulated (host)"
  elif command -v nvidia-smi > /dev/null; then
    IFS=',' read -r device driver memory < <(nvidia-smi --query-gpu=name,driver_version,memory.total \
      --format=csv,noheader | head -1)
  else
    device="unknown (no nvidia-smi)"
  fi
  {
    echo "## $(date -u +%Y-%m-%d): $device${driver:+, driver$driver}${memory:+,$memory}"
    echo
    echo '```'
    "$bin/dhxrun" --version
    echo '```'
    echo
    echo "| check | result | figures |"
    echo "|---|---|---|"
  } | tee "$SUMMARY"
  limit() {  # limit COMMAND...: COMMAND, stopped after CHECK_TIMEOUT seconds (a hang fails)
    timeout -k 10 "${CHECK_TIMEOUT:-300}" "$@"
  }
  gpu() {  # gpu PLAN ARGS...: dhxrun on the GPU (emulated: the plan's host kernels)
    local plan=$1; shift
    DHX_EMULATED_KERNELS=$plans/$plan/kernels.so limit "$bin/dhxrun" --backend cuda \
      "$plans/$plan" --quiet "${data[@]}" "$@"
  }

  # kernels: parity on the tiny GPT (plain, and paired: several streams and LOAD_BATCH),
  # bandwidth on GPT-2 124M
  local plan rows worst tol
  for plan in tiny tiny_paired tiny_bf16 tiny_gpu tiny_gpu_bf16 tiny_gpu_hs64 tiny_gpu_hs128 \
              tiny_gpu_hs256; do
    tol=1e-5
    case $plan in *bf16) tol=1e-2 ;; esac
    if DHX_EMULATED_KERNELS=$plans/$plan/kernels.so limit "$bin/kernels_gpu" "$plans/$plan" --tol $tol \
         > "$work/kernels_$plan.txt" 2>&1; then
      rows=$(grep -c '^{"kernels_gpu":"parity"' "$work/kernels_$plan.txt")
      worst=$(grep -o '"max_rel":[0-9.e+-]*' "$work/kernels_$plan.txt" | cut -d: -f2 | sort -g | tail -1)
      summary_line "kernels ($plan)" PASS "$rows kernels and GEMM shapes of BEGIN, MICRO, STEP and EVAL within $tol of the CPU backend (worst $worst)"
    else
      summary_line "kernels ($plan)" FAIL "kernels_$plan.txt: $(grep -m1 -E 'MISMATCH|ERROR|error' "$work/kernels_$plan.txt")"
    fi
  done
  if [ "$emulated" = 0 ]; then
    if limit "$bin/kernels_gpu" --time-only "$plans/gpt2" > "$work/kernels_time.txt" 2>&1; then
      local copy at80 all
      copy=$(grep -m1 -o 'copy [0-9.]* GB/s' "$work/kernels_time.txt")
      all=$(grep -c '^{"kernels_gpu":"bandwidth"' "$work/kernels_time.txt")
      at80=$(grep '^{"kernels_gpu":"bandwidth"' "$work/kernels_time.txt" |
             grep -o '"pct_of_copy":[0-9.]*' | cut -d: -f2 | awk '$1 >= 80' | wc -l)
      summary_line bandwidth DONE "GPT-2 124M: $at80 of $all kernel launches at 80% or more of the device's $copy (cost-model bytes); table in kernels_time.txt"
    else
      summary_line bandwidth FAIL "see kernels_time.txt"
    fi
  fi

  # losses: the tiny GPT against the CPU backend
  if limit "$bin/dhxrun" --backend cpu "$plans/tiny" --quiet "${data[@]}" --metrics "$work/cpu.jsonl" &&
     gpu tiny --metrics "$work/gpu.jsonl" &&
     "$bin/metrics_check" same "$work/cpu.jsonl" "$work/gpu.jsonl" 1e-4 > "$work/losses.txt" 2>&1; then
    summary_line losses PASS "final loss CPU $(json_field "$work/cpu.jsonl" final_loss), GPU $(json_field "$work/gpu.jsonl" final_loss)"
  else
    summary_line losses FAIL "$(tail -2 "$work/losses.txt" 2>/dev/null | tr '\n' ' ')"
  fi

  # The other plans' losses against the CPU backend's fp32 ones: the GPU cluster's (fused
  # attention, epilogues) in f32 to 1e-4, and both bf16 mixed-precision plans to 2%.
  local against
  for against in "tiny_gpu 1e-4 f32" "tiny_bf16 2e-2 bf16" "tiny_gpu_bf16 2e-2 bf16"; do
    set -- $against
    if gpu "$1" --metrics "$work/gpu_$1.jsonl" &&
       "$bin/metrics_check" same "$work/cpu.jsonl" "$work/gpu_$1.jsonl" "$2" \
         > "$work/losses_$1.txt" 2>&1; then
      summary_line "losses ($1)" PASS "within $2 of the CPU's fp32; final loss CPU $(json_field "$work/cpu.jsonl" final_loss), GPU $3 $(json_field "$work/gpu_$1.jsonl" final_loss)"
    else
      summary_line "losses ($1)" FAIL "$(tail -2 "$work/losses_$1.txt" 2>/dev/null | tr '\n' ' ')"
    fi
  done

  # resume: bitwise on the device, from the checkpoint half-way
  local steps half
  steps=$(grep -c '"step"' "$work/gpu.jsonl" 2>/dev/null)
  half=$(( ${steps:-0} / 2 ))
  if gpu tiny_ckpt --metrics "$work/full.jsonl" --checkpoint-dir "$work/ckpt" &&
     gpu tiny_ckpt --resume "$work/ckpt/step_$half.safetensors" --metrics "$work/resumed.jsonl" &&
     "$bin/metrics_check" same "$work/full.jsonl" "$work/resumed.jsonl" 0 $(( half + 1 )) "$steps" \
       > "$work/resume.txt" 2>&1; then
    summary_line resume PASS "steps $(( half + 1 ))..$steps after a checkpoint at $half equal the uninterrupted run bit for bit"
  else
    summary_line resume FAIL "$(tail -2 "$work/resume.txt" 2>/dev/null | tr '\n' ' ')"
  fi

  # strands: paired and unpaired on the device
  if gpu tiny_paired --metrics "$work/paired.jsonl" &&
     "$bin/metrics_check" same "$work/gpu.jsonl" "$work/paired.jsonl" 0 > "$work/strands.txt" 2>&1; then
    summary_line strands PASS "paired and unpaired losses equal bit for bit"
  else
    summary_line strands FAIL "$(tail -2 "$work/strands.txt" 2>/dev/null | tr '\n' ' ')"
  fi

  # gpt2: throughput and MFU
  if [ "$emulated" = 1 ]; then
    summary_line gpt2 SKIP "not emulated (too large for the host kernels)"
  elif gpu gpt2 --metrics "$work/gpt2.jsonl" > "$work/gpt2.txt" 2>&1; then
    local tps flops mfu source
    tps=$(json_field "$work/gpt2.jsonl" median_tokens_per_s)
    flops=$(json_field "$work/gpt2.jsonl" flops_per_s)
    mfu=$(json_field "$work/gpt2.jsonl" mfu)
    source=$(tail -1 "$work/gpt2.jsonl" | grep -o '"peak_source":"[^"]*"' | cut -d'"' -f4)
    summary_line gpt2 DONE "$(awk -v t="$tps" -v f="$flops" -v m="$mfu" -v s="$source" \
      'BEGIN { printf "%.0f tokens/s median, %.1f TFLOP/s, MFU %.1f%% (%s)", t, f / 1e12, 100 * m, s }')"
  else
    summary_line gpt2 FAIL "$(tail -2 "$work/gpt2.txt" | tr '\n' ' ')"
  fi

  # sanitizer: memcheck and racecheck of two steps
  if [ "$emulated" = 1 ] || ! command -v compute-sanitizer > /dev/null; then
    summary_line sanitizer SKIP "$([ "$emulated" = 1 ] && echo emulated || echo 'no compute-sanitizer')"
  else
    local tool plan verdicts=""
    for plan in tiny_2steps tiny_gpu_2steps; do
      for tool in memcheck racecheck; do
        if limit compute-sanitizer --tool "$tool" --error-exitcode 3 "$bin/dhxrun" --backend cuda \
             "$plans/$plan" --quiet "${data[@]}" > "$work/${tool}_$plan.txt" 2>&1; then
          verdicts+="$tool $plan clean; "
        else
          verdicts+="$tool $plan FAILED ($(grep -m1 'ERROR SUMMARY\|Error' "$work/${tool}_$plan.txt")); "
        fi
      done
    done
    case $verdicts in
      *FAILED*) summary_line sanitizer FAIL "$verdicts" ;;
      *) summary_line sanitizer PASS "$verdicts" ;;
    esac
  fi
  echo
  echo "gpu-check: summary in $SUMMARY; logs in $work"
  ! grep -q '| FAIL |' "$SUMMARY"
}

case $mode in
  prepare) prepare ;;
  run) run_checks ;;
  all) prepare && run_checks ;;
esac
