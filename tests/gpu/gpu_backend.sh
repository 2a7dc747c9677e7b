#!/usr/bin/env bash
# The GPU libraries' loading and the backend choice of dhxrun, on any machine.
# Usage: gpu_backend.sh CASE   (environment: DHXRUN FAKE_CUDA FAKE_NCCL_OLD; the nccl_* cases:
# DHXC SAMPLES NCCL_HOST_TESTS RECORDING_CUDA RECORDING_CUBLASLT RECORDING_NCCL MPIRUN)
set -euo pipefail
case $1 in
  cuda_without_a_gpu)
    # --backend cuda where no GPU is: exit 1 with one clear line, no crash. (Where a GPU is,
    # this test has nothing to prove and is skipped.)
    rc=0
    "$DHXRUN" --backend cuda no_plan_needed >out.txt 2>err.txt || rc=$?
    if grep -q "device.* found" err.txt; then echo "a CUDA device is present: skipped"; exit 77; fi
    cat err.txt
    [ "$rc" -eq 1 ] || { echo "expected exit 1, got $rc"; exit 1; }
    [ "$(wc -l < err.txt)" -eq 1 ] || { echo "expected one line"; exit 1; }
    grep -q '^dhxrun: error: --backend cuda: ' err.txt
    # A driver that finds no device is named with the driver's own words.
    rc=0
    DHX_CUDA_LIBRARY=$FAKE_CUDA "$DHXRUN" --backend cuda no_plan_needed 2>err.txt || rc=$?
    cat err.txt
    [ "$rc" -eq 1 ] && [ "$(wc -l < err.txt)" -eq 1 ]
    grep -q 'no usable device: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)' err.txt
    ;;
  version_lists_the_gpu_libraries)
    "$DHXRUN" --version > out.txt
    cat out.txt
    grep -q '^dhxrun (DHX) [0-9]' out.txt
    for lib in 'CUDA driver' NCCL cuBLASLt; do
      grep -q -E "^$lib( [0-9]|( API [0-9])|: not available \(.+\))" out.txt \
        || { echo "no line for $lib"; exit 1; }
    done
    DHX_CUDA_LIBRARY=$FAKE_CUDA "$DHXRUN" --version | grep -q '^CUDA driver API 12\.4$'
    ;;
  loader_names_a_missing_function)
    DHX_NCCL_LIBRARY=$FAKE_NCCL_OLD "$DHXRUN" --version > out.txt
    cat out.txt
    grep -q "^NCCL: not available (.*fake_nccl_old.* has no function ncclGetUniqueId" out.txt
    DHX_NCCL_LIBRARY=/nonexistent/libnccl.so.2 "$DHXRUN" --version > out.txt
    grep -q "^NCCL: not available (/nonexistent/libnccl.so.2: cannot open" out.txt
    ;;
  bad_backend)
    rc=0
    "$DHXRUN" --backend gpu plan 2>err.txt || rc=$?
    cat err.txt
    [ "$rc" -eq 1 ] && grep -q "^dhxrun: error: --backend: 'gpu' is not one of auto, cpu, cuda$" err.txt
    # DHX_BACKEND is --backend's default, checked the same way; the option wins over it.
    rc=0
    DHX_BACKEND=gpu "$DHXRUN" plan 2>err.txt || rc=$?
    cat err.txt
    [ "$rc" -eq 1 ] && grep -q "^dhxrun: error: DHX_BACKEND: 'gpu' is not one of auto, cpu, cuda$" err.txt
    rc=0
    DHX_BACKEND=cuda "$DHXRUN" --backend cpu no_plan_here 2>err.txt || rc=$?
    cat err.txt
    [ "$rc" -eq 1 ] && ! grep -q -- '--backend cuda' err.txt && grep -q 'no_plan_here' err.txt
    ;;
  host_marshal|host_order|host_record)
    # The CUDA backend's host side on plans dhxc writes: one rank, and two tensor-parallel
    # ranks with paired strands (several streams and events).
    common=(--set train.steps=2 --set train.warmup=0 --set schedule.parallel.dp=1)
    "$DHXC" "$SAMPLES/tiny.dhx" -o one "${common[@]}" > /dev/null
    "$DHXC" "$SAMPLES/tiny.dhx" -o paired "${common[@]}" --set schedule.parallel.tp=2 \
      --set schedule.parallel.sp=on --set schedule.strands.pair=on \
      --set schedule.strands.search=none > /dev/null
    "$DHXC" "$SAMPLES/tiny.dhx" -o bf16 "${common[@]}" --set train.precision=bf16 > /dev/null
    case $1 in
      host_marshal) "$CUDA_HOST_TESTS" marshal one && "$CUDA_HOST_TESTS" marshal paired ;;
      host_order) "$CUDA_HOST_TESTS" order one && "$CUDA_HOST_TESTS" order paired ;;
      host_record)
        export DHX_CUDA_LIBRARY=$RECORDING_CUDA DHX_CUBLASLT_LIBRARY=$RECORDING_CUBLASLT
        export FAKE_GPU_LOG=$PWD/calls.log
        "$CUDA_HOST_TESTS" record one "$FAKE_GPU_LOG"
        # Mixed precision: every GEMM's layouts typed as its buffers (bf16 or f32).
        "$CUDA_HOST_TESTS" record bf16 "$FAKE_GPU_LOG" | tee out.txt
        grep -q 'GEMM calls ([1-9][0-9]* on bf16 operands' out.txt
        # A GPU cluster's plan (bf16): the linears' biases and GeLUs as cuBLASLt epilogues.
        sed -e 's/^use std\.gpt$/&\nuse std.clusters/' \
            -e 's|^cluster = cpu(.*)|cluster = hgx_h200(per_node: 1)|' "$SAMPLES/tiny.dhx" > gpu.dhx
        "$DHXC" gpu.dhx -o gpu "${common[@]}" > /dev/null
        "$CUDA_HOST_TESTS" record gpu "$FAKE_GPU_LOG" | tee out.txt
        grep -q 'on bf16 operands, [1-9][0-9]* with an epilogue)' out.txt ;;
    esac
    ;;
  emulated_parity|emulated_wrong_gemm|emulated_timing|emulated_definitions)
    # The CUDA backend on the emulated driver and cuBLASLt (tests/gpu/emulated_*.c: the plan's
    # host kernels and a column-major GEMM computed from cuBLASLt's definitions), checked
    # instruction by instruction against the CPU backend by bench/kernels_gpu. A single-rank
    # tiny GPT with micro-batches of 2 keeps it to a second or two.
    "$DHXC" "$SAMPLES/tiny.dhx" -o one --set train.steps=2 --set train.warmup=0 \
      --set schedule.parallel.dp=1 --set train.micro_batch=2 --set train.global_batch=2 > /dev/null
    export DHX_CUDA_LIBRARY=$EMULATED_CUDA DHX_CUBLASLT_LIBRARY=$EMULATED_CUBLASLT
    if [ "$1" = emulated_definitions ]; then
      # The emulation itself, against products worked by hand, the driver's refusals and a
      # launch over a grid smaller than n.
      DHX_EMULATED_KERNELS=$PWD/one/kernels.so "$EMULATED_TESTS" one
      exit
    fi
    rc=0
    "$KERNELS_GPU" one > out.txt 2>&1 || rc=$?
    cat out.txt
    # Without the kernels it is to run, the emulated driver refuses the module, saying why.
    [ "$rc" -eq 1 ] && grep -q "DHX_EMULATED_KERNELS is not set" out.txt
    export DHX_EMULATED_KERNELS=$PWD/one/kernels.so
    rc=0
    case $1 in
      emulated_parity)
        "$KERNELS_GPU" one --tol 1e-6 > out.txt 2>&1 || rc=$?
        cat out.txt
        [ "$rc" -eq 0 ] || { echo "kernels_gpu exited $rc"; exit 1; }
        grep -q '^kernels_gpu: 0 mismatches, 0 errors$' out.txt
        # Every instruction of BEGIN and MICRO ran on the device and was compared: kernels and
        # ZEROs bitwise (the same host code), GEMMs within 1e-6 of OpenBLAS.
        rows=$(grep '^{"kernels_gpu":"parity"' out.txt)
        ! grep -E '"program":"(BEGIN|MICRO)"' <<< "$rows" | grep -v '"result":"ok"'
        ! grep -v '"name":"gemm ' <<< "$rows" | grep -v '"result":"not_run"' \
          | grep -v '"max_rel":0.000e+00'
        [ "$(grep -c '"program":"MICRO","name":"gemm ' <<< "$rows")" -ge 5 ]
        grep -q '"program":"STEP","name":"adamw_f32".*"result":"ok"' <<< "$rows"
        # A GPU cluster's plan, whose attention is the fused kernels (a warp per row): every
        # one of them runs on the device too.
        sed -e 's/^use std\.gpt$/&\nuse std.clusters/' \
            -e 's|^cluster = cpu(.*)|cluster = hgx_h200(per_node: 1)|' "$SAMPLES/tiny.dhx" > gpu.dhx
        "$DHXC" gpu.dhx -o gpu --set train.steps=2 --set train.warmup=0 --set train.precision=f32 \
          --set schedule.parallel.dp=1 --set train.micro_batch=2 --set train.global_batch=2 \
          > /dev/null
        DHX_EMULATED_KERNELS=$PWD/gpu/kernels.so "$KERNELS_GPU" gpu --tol 1e-6 > out.txt 2>&1 || rc=$?
        [ "$rc" -eq 0 ] && grep -q '^kernels_gpu: 0 mismatches, 0 errors$' out.txt
        for k in attn_fwd attn_bwd_dot attn_bwd_dq attn_bwd_dkv; do
          grep -q "\"program\":\"MICRO\",\"name\":\"${k}_f32\".*\"result\":\"ok\"" out.txt \
            || { echo "no $k on the device"; exit 1; }
        done
        # Its biases and GeLUs are cuBLASLt epilogues (both outputs compared).
        for e in bias bias_gelu; do
          grep -q "\"name\":\"gemm [^\"]* $e\",\"instructions\":[0-9]*,\"result\":\"ok\"" out.txt \
            || { echo "no GEMM with the $e epilogue on the device"; exit 1; }
        done
        # The same plan in bf16 mixed precision: bf16 kernels and cuBLASLt's bf16 GEMMs (f32
        # and bf16 C) on the device, within bf16's rounding of the CPU backend's emulation.
        "$DHXC" gpu.dhx -o gpu16 --set train.steps=2 --set train.warmup=0 \
          --set schedule.parallel.dp=1 --set train.micro_batch=2 --set train.global_batch=2 \
          > /dev/null
        rc=0
        DHX_EMULATED_KERNELS=$PWD/gpu16/kernels.so "$KERNELS_GPU" gpu16 --tol 1e-2 > out16.txt 2>&1 \
          || rc=$?
        [ "$rc" -eq 0 ] && grep -q '^kernels_gpu: 0 mismatches, 0 errors$' out16.txt \
          || { tail -5 out16.txt; exit 1; }
        grep -q '"program":"MICRO","name":"attn_fwd_f32_b[0-9a-f]*".*"result":"ok"' out16.txt
        grep -q '"name":"gemm [^"]* bias_gelu","instructions":[0-9]*,"result":"ok"' out16.txt
        [ "$(grep -c '"program":"MICRO","name":"gemm .*"result":"ok"' out16.txt)" -ge 5 ]
        ! grep '"result":"not_run"' out16.txt | grep -E '"name":"(zero|gemm |[a-z_0-9]+_f32)'
        # What the backend does not run yet is named, not failed: only ops without a kernel.
        ! grep '"result":"not_run"' <<< "$rows" | grep -E '"name":"(zero|gemm |[a-z_0-9]+_f32")'
        ;;
      emulated_wrong_gemm)
        # A cuBLASLt that reads cuBLASLt's A transposed the other way: where the shapes still
        # agree (square operands) the numbers are wrong, and the check must say so.
        DHX_EMULATED_CUBLASLT_FAULT=flip-transa "$KERNELS_GPU" one > out.txt 2>&1 || rc=$?
        grep -E '^[A-Z]+ (MISMATCH|ERROR)' out.txt > failures.txt || true
        head -5 failures.txt
        [ "$rc" -eq 1 ] || { echo "expected exit 1, got $rc"; exit 1; }
        grep -q '^MICRO MISMATCH #[0-9]* .*(gemm nn .*): relative error [0-9.]*e[-+][0-9]*' out.txt
        grep -q '"name":"gemm nn [^"]*","instructions":[0-9]*,"result":"mismatch"' out.txt
        ;;
      emulated_timing)
        "$KERNELS_GPU" one --time --copy-mib 4 > out.txt 2>&1 || rc=$?
        cat out.txt
        [ "$rc" -eq 0 ] || { echo "kernels_gpu exited $rc"; exit 1; }
        grep -q '^the device is emulated on the host: these figures say nothing about a GPU$' out.txt
        grep -q '^{"kernels_gpu":"copy",.*"gb_per_s":[0-9.]*,"emulated":true}$' out.txt
        # One line per distinct kernel launch of MICRO and STEP, with the cost model's bytes.
        for prog in MICRO STEP; do
          grep -q "^{\"kernels_gpu\":\"bandwidth\",\"program\":\"$prog\",.*\"bytes_source\":\"cost model\"" out.txt
        done
        grep -q '"name":"adamw_f32","n":[0-9]*,"bytes":[1-9][0-9]*,' out.txt
        # --time-only: the same lines without the parity.
        "$KERNELS_GPU" one --time-only --copy-mib 4 > only.txt 2>&1
        ! grep -q '^{"kernels_gpu":"parity"' only.txt
        [ "$(grep -c '^{"kernels_gpu":"bandwidth"' only.txt)" -eq \
          "$(grep -c '^{"kernels_gpu":"bandwidth"' out.txt)" ]
        ;;
    esac
    ;;
  nccl_dp|nccl_pp|nccl_async)
    # The NCCL path of two ranks: data-parallel (the gradient all-reduce), and two-stage
    # pipelines (activations and gradients sent between the stages, the norm's all-reduce),
    # plain 1F1B and interleaved with two chunks per stage, whose evaluation sends and receives
    # back to back on one stream (one NCCL group); and 1F1B in bf16 (ncclBfloat16 transfers).
    common=(--set train.steps=2 --set train.warmup=0 --set train.micro_batch=4)
    pp=(--set schedule.parallel.dp=1 --set schedule.parallel.pp=2)
    if [ "$1" = nccl_pp ]; then
      plans=(pp2 pp2_interleaved pp2_bf16)
      "$DHXC" "$SAMPLES/tiny.dhx" -o pp2 "${common[@]}" "${pp[@]}" --set train.global_batch=8 \
        > /dev/null
      "$DHXC" "$SAMPLES/tiny.dhx" -o pp2_bf16 "${common[@]}" "${pp[@]}" --set train.global_batch=8 \
        --set train.precision=bf16 > /dev/null
      "$DHXC" "$SAMPLES/tiny.dhx" -o pp2_interleaved "${common[@]}" "${pp[@]}" \
        --set schedule.parallel.virtual=2 --set train.global_batch=16 > /dev/null
    else
      plans=(dp2)
      "$DHXC" "$SAMPLES/tiny.dhx" -o dp2 "${common[@]}" --set schedule.parallel.dp=2 \
        --set train.global_batch=8 > /dev/null
    fi
    export DHX_CUDA_LIBRARY=$RECORDING_CUDA DHX_CUBLASLT_LIBRARY=$RECORDING_CUBLASLT
    export DHX_NCCL_LIBRARY=$RECORDING_NCCL
    mode=record; [ "$1" = nccl_async ] && mode=async
    # Under the sanitizers: what OpenMPI's plugins allocate at MPI_Init (the plugins are
    # unloaded by MPI_Finalize) reaches the tests/lsan.supp entries only with full stacks.
    export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0
    for plan in "${plans[@]}"; do
      # shellcheck disable=SC2086
      $MPIRUN -np 2 "$NCCL_HOST_TESTS" "$mode" "$plan" "$PWD/$plan.log"
    done
    ;;
  *) echo "unknown case $1"; exit 2 ;;
esac
