#!/usr/bin/env bash
# The kernel cache (DHX_KERNEL_CACHE) serves the files it kept for the same module on the same
# target, and only those: a cached compile writes what an uncached one writes, a marked entry
# is what a second compile copies, and another model, another vector width or a cache that
# cannot be written gets kernels of its own.
# Usage: kernel_cache.sh   (environment: DHXC SRC WORK)
set -euo pipefail
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
unset DHX_KERNEL_CACHE
tiny=("$SRC/samples/tiny.dhx" --set model.layers=2)
files=(kernels.so kernels.ptx kernels.sm_90.ptx plan.bin)
same() {  # same DIR_A DIR_B: every emitted file equal
  for f in "${files[@]}"; do cmp -s "$1/$f" "$2/$f" || { echo "$1/$f differs from $2/$f"; exit 1; }; done
}
entries() { find cache -maxdepth 1 -name "*.$1" | wc -l; }

"$DHXC" "${tiny[@]}" -o uncached
DHX_KERNEL_CACHE=cache "$DHXC" "${tiny[@]}" -o first
same uncached first
[ "$(entries so)" = 1 ] && [ "$(entries ptx)" = 2 ] || { echo "expected 1 .so and 2 .ptx entries"; ls -la cache; exit 1; }
[ "$(stat -c %a cache)" = 700 ] || { echo "the cache folder is not its owner's alone"; exit 1; }
echo "a cached compile writes what an uncached one writes, and keeps one entry per file"

# Mark the entries: a second compile of the same model copies them, marks and all.
for e in cache/*.ptx; do printf '// from the cache\n' >> "$e"; done
DHX_KERNEL_CACHE=cache "$DHXC" "${tiny[@]}" -o second
for f in kernels.ptx kernels.sm_90.ptx; do
  tail -1 "second/$f" | grep -q 'from the cache' || { echo "second/$f was not served from the cache"; exit 1; }
done
cmp -s first/kernels.so second/kernels.so && cmp -s first/plan.bin second/plan.bin
test -x second/kernels.so
echo "the same model's second compile copies the cached entries"

# Another model, and another vector width, have keys of their own.
DHX_KERNEL_CACHE=cache "$DHXC" "${tiny[@]}" --set model.hidden=64 -o other
if grep -q 'from the cache' other/kernels.ptx; then echo "another model got the cached PTX"; exit 1; fi
[ "$(entries ptx)" = 4 ] && [ "$(entries so)" = 2 ] || { echo "another model added no entries"; exit 1; }
DHX_KERNEL_CACHE=cache DHX_CODEGEN_VECTOR_WIDTH=128 "$DHXC" "${tiny[@]}" -o narrow
[ "$(entries so)" = 3 ] || { echo "another vector width reused a kernels.so"; exit 1; }
if cmp -s first/kernels.so narrow/kernels.so; then echo "the vector width changed nothing"; exit 1; fi
echo "another model and another vector width get kernels of their own"

# A cache that cannot be made or written costs nothing but the time.
touch not_a_folder
DHX_KERNEL_CACHE=not_a_folder/cache "$DHXC" "${tiny[@]}" -o unwritable
same uncached unwritable
echo "a cache that cannot be written leaves the compile as it was"
