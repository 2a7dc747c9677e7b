#!/usr/bin/env bash
# dhxc convert end to end: train small GPT-2 and Llama models with dhxrun, convert their
# checkpoints to Hugging Face names and back, and check the result bit for bit and against a
# numpy forward pass written in Hugging Face's conventions (ref_forward.py).
# Usage: convert.sh CASE   (environment: DHXC DHXRUN ST_TOOL SRC WORK)
set -euo pipefail
case_name=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$WORK/$case_name
rm -rf "$work" && mkdir -p "$work"
cd "$work"

corpus() {  # a byte-level corpus from the license texts every Debian machine has
  # shellcheck disable=SC2046
  "$DHXC" data -o "$work/tiny" $(find /usr/share/common-licenses -maxdepth 1 -type f | sort) >/dev/null
}

# train ARCH STEPS: compile a 2-layer sample on one rank with a short sequence, train STEPS steps
# at a learning rate high enough for the attention to sharpen (so rotary embeddings, head
# layout and the MLP order all move the loss), evaluate the first 2 micro-batches of 4 rows of
# the validation shard after the last step, and save the weights that evaluation used.
train() {
  local arch=$1 steps=$2 sample=tiny.dhx heads=(--set model.heads=4)
  if [ "$arch" = llama ]; then
    sample=tiny_llama.dhx
    heads=(--set model.heads=4 --set model.kv_heads=2 --set model.ffn=96)
  else
    heads+=(--set model.ffn=128)
  fi
  "$DHXC" "$SRC/samples/$sample" -o "plan_$arch" --set "data.train=\"$work/tiny_train.bin\"" \
    --set "data.val=\"$work/tiny_val.bin\"" --set model.layers=2 --set model.seq=64 \
    --set model.hidden=64 "${heads[@]}" --set schedule.parallel.dp=1 \
    --set train.micro_batch=4 --set train.global_batch=8 --set train.steps="$steps" \
    --set train.val_every="$steps" --set train.val_batches=2 --set train.warmup=0 \
    --set train.optimizer.lr=0.01
  "$DHXRUN" "plan_$arch" --save "$arch.safetensors" --metrics "$arch.jsonl" --quiet
}

expect_fail() {  # expect_fail PATTERN CMD...: the command fails and says PATTERN on stderr
  local pattern=$1; shift
  if "$@" >out.txt 2>err.txt; then echo "expected failure: $*"; cat out.txt; exit 1; fi
  if ! grep -q -- "$pattern" err.txt; then
    echo "expected '$pattern' in the error of: $*"; cat err.txt; exit 1
  fi
  head -2 err.txt
}

numpy_python() {  # the first python3 that has numpy; exit 77 (skip) when none does
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -c "import numpy" 2>/dev/null; then
      echo "$py"; return
    fi
  done
  echo "python3-numpy is not installed (scripts/deps.sh installs it): skipping" >&2
  exit 77
}

# The numpy forward of the converted file must give dhxrun's validation loss. dhxrun computes in
# f32 and numpy in f64; they agree to about 1e-8, while a wrong rope pairing, rope base, head
# order or gate/up swap moves the loss by 1e-4 or more, hence 1e-5.
numpy_matches() {
  local arch=$1; shift
  local py
  py=$(numpy_python)
  corpus
  train "$arch" 150
  "$DHXC" convert --from dhx --to "hf-$arch" "$arch.safetensors" hf.safetensors
  "$py" "$here/ref_forward.py" "$arch" hf.safetensors tiny_val.bin --seq 64 --rows 8 \
    --heads 4 "$@" --metrics "$arch.jsonl" --rtol 1e-5
}

case $case_name in
  round_trip)
    corpus
    for arch in gpt2 llama; do
      train $arch 5
      "$DHXC" convert --from dhx --to hf-$arch $arch.safetensors $arch.hf.safetensors
      "$DHXC" convert --from hf-$arch --to dhx $arch.hf.safetensors $arch.back.safetensors
      "$ST_TOOL" same $arch.safetensors $arch.back.safetensors
      # and the other way: hf -> dhx -> hf
      "$DHXC" convert --from dhx --to hf-$arch $arch.back.safetensors $arch.hf2.safetensors
      "$ST_TOOL" same $arch.hf.safetensors $arch.hf2.safetensors
    done
    ;;
  gpt2_numpy) numpy_matches gpt2 ;;
  llama_numpy) numpy_matches llama --kv-heads 2 --rope-theta 10000 --eps 1e-5 ;;
  hub_files_and_errors)
    corpus
    train gpt2 3
    train llama 3
    "$DHXC" convert --from dhx --to hf-gpt2 gpt2.safetensors hf.safetensors
    # GPT-2 as the hub publishes it: short names, no lm_head (tied), BF16, mask buffers.
    "$ST_TOOL" hub-gpt2 hf.safetensors hub.safetensors
    "$DHXC" convert --from hf-gpt2 --to dhx hub.safetensors from_hub.safetensors
    "$ST_TOOL" check-hub gpt2.safetensors from_hub.safetensors
    # dhxrun starts from the converted weights.
    "$DHXRUN" plan_gpt2 --init from_hub.safetensors --steps 1 --quiet
    expect_fail "a weights-only file cannot be resumed; start from its weights with --init" \
      "$DHXRUN" plan_gpt2 --resume from_hub.safetensors --steps 1 --quiet
    # Mistakes are named.
    expect_fail "tensor 'pos_embedding.0.w' is not a parameter of std.llama" \
      "$DHXC" convert --from dhx --to hf-llama gpt2.safetensors x.safetensors
    "$DHXC" convert --from dhx --to hf-llama llama.safetensors llama_hf.safetensors
    expect_fail "tensor 'model.embed_tokens.weight' is not a parameter of hf-gpt2" \
      "$DHXC" convert --from hf-gpt2 --to dhx llama_hf.safetensors x.safetensors
    "$ST_TOOL" drop hf.safetensors missing.safetensors transformer.h.1.mlp.c_fc.weight
    expect_fail "tensor 'transformer.h.1.mlp.c_fc.weight' is missing" \
      "$DHXC" convert --from hf-gpt2 --to dhx missing.safetensors x.safetensors
    cp hf.safetensors flipped.safetensors
    printf '\x01' | dd of=flipped.safetensors bs=1 seek=20000 conv=notrunc status=none
    expect_fail "flipped.safetensors: checksum mismatch: the file is corrupt" \
      "$DHXC" convert --from hf-gpt2 --to dhx flipped.safetensors x.safetensors
    expect_fail "one side of a conversion is dhx" \
      "$DHXC" convert --from hf-gpt2 --to hf-llama hf.safetensors x.safetensors
    expect_fail "--to takes dhx, hf-gpt2 or hf-llama (got 'hf-t5')" \
      "$DHXC" convert --from dhx --to hf-t5 gpt2.safetensors x.safetensors
    expect_fail "give IN.safetensors and OUT.safetensors" \
      "$DHXC" convert --from dhx --to hf-gpt2 gpt2.safetensors
    test ! -e x.safetensors
    ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
