#!/usr/bin/env bash
# Installs what DHX needs, builds it from scratch and runs the whole CTest suite; then builds
# again with AddressSanitizer + UndefinedBehaviorSanitizer and runs the suite there (without
# the long training runs and the fuzzers, labels slow and fuzz: the first pass covers them, and
# the fuzzers build their own sanitized binaries; nor the real-GPU tests, label gpu, which
# skip where there is no GPU and run under scripts/gpu-check.sh where there is; nor ptxas on
# sm_80 PTX, whose emission the sm_90 test runs through the same code). Tests labelled extended
# (variants whose code other tests cover) are left to `ctest -L extended` by hand.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/deps.sh
jobs=$(nproc)

rm -rf build-test build-asan
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-test -j"$jobs"
# Each build's tests share a kernel cache: most of their plans are layouts of the same few
# models, whose kernels are emitted once (the key holds the dhxc binary, so a build never sees
# another's). The cache's own test runs without it.
(cd build-test && DHX_KERNEL_CACHE=$root/build-test/kernel-cache \
   ctest --output-on-failure -j"$jobs" --timeout 900 -LE extended)

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DDHX_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && DHX_KERNEL_CACHE=$root/build-asan/kernel-cache \
   ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
   LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0 \
   ctest --output-on-failure -j"$jobs" -LE "slow|fuzz|extended|gpu" --timeout 900 \
     -E '^codegen_ptx_passes_ptxas_sm80$')
