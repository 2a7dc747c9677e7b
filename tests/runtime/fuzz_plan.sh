#!/usr/bin/env bash
# Builds tests/runtime/fuzz_plan.c with clang's libFuzzer (plus ASan and UBSan) and fuzzes the
# plan reader for FUZZ_SECONDS (default 20) from a seed corpus of one valid plan (the toy plan
# at dp 2). Exits 77 (CTest: skipped) when clang cannot build a libFuzzer binary.
# Environment: TOY (rt_toy), SRC (source root), WORK (scratch folder); CLANG optional.
set -euo pipefail
clang=${CLANG:-clang}
work=$WORK/fuzz_plan
rm -rf "$work" && mkdir -p "$work/corpus"
cd "$work"
# shellcheck source=../fuzz/libfuzzer_probe.sh
source "$SRC/tests/fuzz/libfuzzer_probe.sh"
"$clang" -g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=undefined -I"$SRC/runtime" "$SRC/tests/runtime/fuzz_plan.c" \
  "$SRC/runtime/plan_io.c" "$SRC/runtime/plan_print.c" -lm -o fuzz_plan
"$TOY" plan seed --dp 2 >/dev/null
cp seed/plan.bin corpus/toy_dp2.bin
./fuzz_plan -max_total_time="${FUZZ_SECONDS:-20}" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 corpus 2>&1 | tail -15
