#!/usr/bin/env bash
# Builds tests/fuzz/fuzz_front.c with clang's libFuzzer (plus ASan and UBSan) over the front-end
# sources and the scanner and parser CMake generated, and fuzzes the front end for FUZZ_SECONDS
# (default 20) from a seed corpus of every .dhx program in the repository. Exits 77 (CTest:
# skipped) when clang cannot build a libFuzzer binary; exits non-zero when the fuzzer finds a
# crash, a leak, undefined behaviour, a 10 s input or more than 2 GB of memory (the input that
# did it is left in WORK/fuzz_front/ as crash-*, leak-*, timeout-* or oom-*).
# Environment: SRC (source root), GRAMMAR (the build tree's grammar/ folder with parser.c,
# parser.h, lexer.c, lexer.h), WORK (scratch folder); CLANG, FUZZ_SECONDS optional; FUZZ_ARGS
# adds libFuzzer options (e.g. -jobs or -seed).
set -euo pipefail
clang=${CLANG:-clang}
work=$WORK/fuzz_front
rm -rf "$work" && mkdir -p "$work/corpus"
cd "$work"
# shellcheck source=../fuzz/libfuzzer_probe.sh
source "$SRC/tests/fuzz/libfuzzer_probe.sh"

flags=(-g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -I"$SRC/compiler/front" -I"$GRAMMAR" -I"$SRC/grammar")
# The generated scanner trips -Wunused and -Wsign-compare, as in the CMake build.
gen_flags=(-Wno-unused-function -Wno-sign-compare -Wno-unused-parameter)
objs=()
for f in "$SRC"/compiler/front/*.c; do
  "$clang" "${flags[@]}" -c "$f" -o "$(basename "$f" .c).o"
  objs+=("$(basename "$f" .c).o")
done
for f in parser lexer; do
  "$clang" "${flags[@]}" "${gen_flags[@]}" -c "$GRAMMAR/$f.c" -o "gen_$f.o"
  objs+=("gen_$f.o")
done
"$clang" "${flags[@]}" -DDHX_STDLIB_DIR="\"$SRC/stdlib\"" "$SRC/tests/fuzz/fuzz_front.c" \
  "${objs[@]}" -lm -o fuzz_front

# Seeds: every program and module of the repository, valid and erroneous.
shopt -s nullglob
i=0
for f in "$SRC"/samples/*.dhx "$SRC"/samples/*/*.dhx "$SRC"/stdlib/*.dhx \
         "$SRC"/tests/front/ok/*.dhx "$SRC"/tests/front/errors/*.dhx; do
  cp "$f" "corpus/seed_$((i++))_$(basename "$f")"
done
# ... and inputs at or just past the limits (1000 levels of an expression, of brackets),
# which random mutations of small files would take long to reach.
rep() { local s=""; for ((k = 0; k < $2; k++)); do s+=$1; done; printf '%s' "$s"; }
printf 'train { steps: 1%s }\n' "$(rep ' +1' 1001)" > corpus/limit_sum.dhx
printf 'model m = f(%s1%s)\n' "$(rep '(' 999)" "$(rep ')' 999)" > corpus/limit_parens.dhx
printf 'schedule { %s%s }\n' "$(rep 'a{' 1000)" "$(rep '}' 1000)" > corpus/limit_braces.dhx
printf 'layer l(x: int) { return %sx }\n' "$(rep '-' 999)" > corpus/limit_minus.dhx
max_len=16384
for f in corpus/*; do
  if [ "$(stat -c %s "$f")" -gt "$max_len" ]; then echo "seed $f is over -max_len=$max_len"; exit 1; fi
done

# stdin is /dev/null: an input that says `use "/dev/stdin"` must not wait for a terminal.
# shellcheck disable=SC2086
./fuzz_front -max_total_time="${FUZZ_SECONDS:-20}" -max_len=$max_len -timeout=10 \
  -rss_limit_mb=2048 -dict="$SRC/tests/fuzz/dhx.dict" -print_final_stats=1 \
  -artifact_prefix="$work/" ${FUZZ_ARGS:-} corpus </dev/null > fuzz.log 2>&1 || {
  rc=$?
  tail -60 fuzz.log
  echo "fuzz_front failed (exit $rc); the input is in $work:"
  ls "$work" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' || true
  exit "$rc"
}
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' fuzz.log || true
tail -12 fuzz.log
