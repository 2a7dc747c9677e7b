#!/usr/bin/env bash
# `dhxc data` cases; the shards it writes are read back through the runtime's token streams
# (`data_tests cat PATTERN` prints their tokens as bytes).
# Usage: dhxc_data.sh CASE   (environment: DHXC DATA_TESTS WORK)
set -euo pipefail
case_name=$1
work=$WORK/$case_name
rm -rf "$work" && mkdir -p "$work"
cd "$work"

expect_fail() {  # expect_fail PATTERN CMD...: the command fails and says PATTERN on stderr
  local pattern=$1; shift
  if "$@" >out.txt 2>err.txt; then echo "expected failure: $*"; cat out.txt; exit 1; fi
  if ! grep -q -- "$pattern" err.txt; then
    echo "expected '$pattern' in the error of: $*"; cat err.txt; exit 1
  fi
  head -3 err.txt
}

same_bytes() {  # same_bytes PATTERN FILE: the stream of PATTERN holds exactly FILE's bytes
  "$DATA_TESTS" cat "$1" > stream.bin
  cmp stream.bin "$2" || { echo "the tokens of $1 differ from $2"; exit 1; }
}

header_count() {  # the token count in a shard's header (int32 at byte 8)
  od -An -t d4 -j 8 -N 4 "$1" | tr -d ' '
}

case $case_name in
  takes_more_than_4096_inputs)
    mkdir in
    for i in $(seq -w 0 4999); do printf '%s' "${i: -1}" > "in/f$i.txt"; done
    "$DHXC" data -o many --val-fraction 0 in/*.txt > log.txt
    cat in/*.txt > want.bin
    test "$(header_count many_train.bin)" -eq 5000
    same_bytes many_train.bin want.bin
    echo "5000 inputs give 5000 tokens in order"
    ;;
  splits_shards_at_the_token_limit)
    seq 3000 > all.txt && head -c 10000 all.txt > in.txt
    head -c 9000 in.txt > want_train.bin
    tail -c 1000 in.txt > want_val.bin
    # 9000 train tokens at most 3000 to a shard: three numbered shards; 1000 val tokens: one
    "$DHXC" data -o out/x --shard-tokens 3000 in.txt > log.txt
    grep -q "train: 3 shards of at most 3000 tokens; read them as 'out/x_train_\*.bin'" log.txt ||
      { cat log.txt; exit 1; }
    for k in 0 1 2; do test "$(header_count out/x_train_00000$k.bin)" -eq 3000; done
    test ! -e out/x_train.bin && test ! -e out/x_train_000003.bin
    test "$(header_count out/x_val.bin)" -eq 1000
    same_bytes 'out/x_train_*.bin' want_train.bin
    same_bytes out/x_val.bin want_val.bin
    # a remainder makes a shorter last shard
    "$DHXC" data -o out/y --shard-tokens 4000 in.txt > log.txt
    test "$(header_count out/y_train_000000.bin)" -eq 4000
    test "$(header_count out/y_train_000001.bin)" -eq 4000
    test "$(header_count out/y_train_000002.bin)" -eq 1000
    same_bytes 'out/y_train_*.bin' want_train.bin
    # fewer shards than an earlier run into the same prefix: the leftover one is pointed out
    "$DHXC" data -o out/y --shard-tokens 4500 in.txt > log.txt 2> err.txt
    grep -q "warning: 'out/y_train_000002.bin' is from an earlier run" err.txt ||
      { cat err.txt; exit 1; }
    # the default limit (100M tokens) keeps a small corpus in one shard
    "$DHXC" data -o out/z in.txt > log.txt
    same_bytes out/z_train.bin want_train.bin
    # the header counts tokens in an int32: no shard may hold 2^31 of them
    expect_fail "--shard-tokens must be a whole number in \[1, 2147483647\]" \
      "$DHXC" data -o out/w --shard-tokens 2147483648 in.txt
    expect_fail "--shard-tokens must be" "$DHXC" data -o out/w --shard-tokens 0 in.txt
    expect_fail "--shard-tokens needs a value" "$DHXC" data -o out/w in.txt --shard-tokens
    echo "shards split at the limit and read back as one stream"
    ;;
  creates_output_folders)
    seq 2000 > in.txt
    "$DHXC" data -o new/nested/dir/corpus in.txt > log.txt
    test -f new/nested/dir/corpus_train.bin && test -f new/nested/dir/corpus_val.bin
    "$DHXC" data -o "$work/abs/corpus" in.txt > log.txt  # an absolute prefix
    test -f abs/corpus_train.bin
    "$DHXC" data -o plain in.txt > log.txt  # no folder part: the current one
    test -f plain_train.bin
    touch afile
    expect_fail "cannot create folder 'afile': a file of that name is in the way" \
      "$DHXC" data -o afile/sub/corpus in.txt
    echo "missing output folders are created"
    ;;
  warns_about_tiny_splits)
    # 20 bytes with a 10% validation split: a 2-token validation shard is said, not silent
    printf 'abcdefghijklmnopqrs\n' > tiny.txt
    "$DHXC" data -o t tiny.txt > log.txt 2> err.txt
    cat err.txt
    grep -q "warning: the validation split has 2 tokens" err.txt
    grep -q "warning: the training split has 18 tokens" err.txt
    seq 200000 > big.txt
    "$DHXC" data -o b big.txt > log.txt 2> err.txt
    if grep -q warning err.txt; then cat err.txt; exit 1; fi
    echo "tiny splits are reported with their sizes"
    ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
