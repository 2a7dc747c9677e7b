#!/usr/bin/env bash
# Builds tests/runtime/fuzz_plan.c with clang's libFuzzer (plus ASan and UBSan) and fuzzes the
# plan loader for FUZZ_SECONDS (default 20) from a seed corpus of valid plans: the reader, the
# validator with checksums recomputed, and the CPU backend running every plan that validates.
# Seeds: the toy plan at dp 1 and dp 2 (run with the test kernels built with ASan) and, with
# DHXC, one-layer GPT and Llama plans of tiny.dhx and tiny_llama.dhx (run with their generated
# kernels). Exits 77 (CTest: skipped) when clang cannot build a libFuzzer binary.
# Environment: TOY (rt_toy), SRC (source root), WORK (scratch folder); DHXC, CLANG,
# FUZZ_SECONDS, FUZZ_CORPUS (a folder that keeps the corpus between runs) optional.
set -euo pipefail
clang=${CLANG:-clang}
work=$WORK/fuzz_plan
rm -rf "$work" && mkdir -p "$work/corpus" "$work/crashes"
cd "$work"
# shellcheck source=../fuzz/libfuzzer_probe.sh
source "$SRC/tests/fuzz/libfuzzer_probe.sh"
flags=(-g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fno-sanitize-recover=undefined)
"$clang" "${flags[@]}" -fsanitize=address,undefined -fPIC -shared -I"$SRC/runtime" \
  "$SRC/tests/runtime/test_kernels.c" -lm -o kernels_asan.so
# shellcheck disable=SC2046  # mpicc --showme prints separate flags
"$clang" "${flags[@]}" -fsanitize=fuzzer,address,undefined -I"$SRC/runtime" -I"$SRC/tests/plan" \
  $(mpicc --showme:compile) "$SRC/tests/runtime/fuzz_plan.c" "$SRC/tests/plan/plan_exec.c" \
  "$SRC"/runtime/plan_*.c "$SRC/runtime/exec_cpu.c" "$SRC/runtime/exec_bf16.c" \
  "$SRC/runtime/pool.c" "$SRC/runtime/blas_threads.c" "$SRC/runtime/kernels_host.c" \
  "$SRC/runtime/comm.c" \
  $(mpicc --showme:link) -lopenblas -ldl -lpthread -lm -o fuzz_plan
"$TOY" plan seed1 --dp 1 >/dev/null
"$TOY" plan seed2 --dp 2 >/dev/null
cp seed1/plan.bin corpus/toy_dp1.bin
cp seed2/plan.bin corpus/toy_dp2.bin
libs=$work/kernels_asan.so tables=$work/seed2/plan.bin
if [[ -n "${DHXC:-}" ]]; then
  mini=(--set model.layers=1 --set model.hidden=16 --set model.heads=2 --set model.ffn=32
        --set model.seq=8 --set model.vocab=32 --set train.micro_batch=2
        --set train.global_batch=4 --set schedule.parallel.dp=2)
  "$DHXC" "$SRC/samples/tiny.dhx" -o gpt "${mini[@]}"
  "$DHXC" "$SRC/samples/tiny_llama.dhx" -o llama "${mini[@]}" --set model.kv_heads=1
  # Mixed precision: bf16 buffers, kernels with bf16 arguments, GEMMs and collectives in bf16.
  "$DHXC" "$SRC/samples/tiny.dhx" -o gpt_bf16 "${mini[@]}" --set train.precision=bf16
  for m in gpt llama gpt_bf16; do
    cp $m/plan.bin corpus/mini_$m.bin
    libs+=:$work/$m/kernels.so tables+=:$work/$m/plan.bin
  done
fi
corpora=(corpus)
if [[ -n "${FUZZ_CORPUS:-}" ]]; then mkdir -p "$FUZZ_CORPUS" && corpora=("$FUZZ_CORPUS" corpus); fi
FUZZ_KERNELS_SO=$libs FUZZ_KERNEL_TABLE=$tables \
  ./fuzz_plan -max_total_time="${FUZZ_SECONDS:-20}" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$work/crashes/" -print_final_stats=1 "${corpora[@]}" 2>&1 | tail -15
