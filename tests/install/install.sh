#!/usr/bin/env bash
# Installs the build into a scratch prefix, moves the prefix, and runs the installed dhxc and
# dhxrun from an unrelated folder (environment: CMAKE BUILD SRC WORK).
set -euo pipefail
rm -rf "$WORK" && mkdir -p "$WORK/elsewhere"
cd "$WORK"
unset DHX_STDLIB
"$CMAKE" --install "$BUILD" --prefix "$WORK/prefix" >install.log
test -x prefix/bin/dhxc && test -x prefix/bin/dhxrun
for m in "$SRC"/stdlib/*.dhx; do cmp "$m" "prefix/share/dhx/stdlib/$(basename "$m")"; done
mv prefix moved  # an install tree works wherever it is put
bin=$WORK/moved/bin
# A module only the install tree has: finding it proves the lookup beside the binary (the
# build's fallback, the source tree's stdlib, has no such module).
cp "$SRC/stdlib/gpt.dhx" moved/share/dhx/stdlib/installed_only.dhx

cd elsewhere
cat > tiny.dhx <<'DHX'
use std.gpt
model tiny = gpt(vocab: 256, seq: 32, layers: 1, hidden: 32, heads: 2, ffn: 64)
data { train: "t_train.bin", val: "t_val.bin" }
cluster = cpu(net: 2 GB/s)
schedule { parallel { dp: 1 } }
train { micro_batch: 2, global_batch: 2, steps: 2, optimizer: adamw(lr: 1e-3) }
DHX
sed 's/use std.gpt/use std.installed_only/' tiny.dhx > only.dhx
"$bin/dhxc" check tiny.dhx
"$bin/dhxc" check only.dhx
# -I and $DHX_STDLIB are searched before the installed stdlib
mkdir -p mine && printf 'this is not dhx\n' > mine/gpt.dhx
if "$bin/dhxc" check -I mine tiny.dhx 2>err.txt; then echo "-I mine was not searched first"; exit 1; fi
grep -q "mine/gpt.dhx" err.txt || { cat err.txt; exit 1; }
if DHX_STDLIB=mine "$bin/dhxc" check tiny.dhx 2>err.txt; then
  echo "DHX_STDLIB was not searched first"; exit 1
fi
grep -q "mine/gpt.dhx" err.txt || { cat err.txt; exit 1; }
# the installed binaries work end to end: a corpus, a plan, two steps
seq 20000 > text.txt
"$bin/dhxc" data -o t text.txt >/dev/null
"$bin/dhxc" tiny.dhx -o plan
"$bin/dhxrun" plan --quiet --metrics m.jsonl
grep -Eq '"step": ?2[,}]' m.jsonl || { echo "the installed dhxrun did not run step 2"; cat m.jsonl; exit 1; }
echo "the install tree runs from $PWD"
