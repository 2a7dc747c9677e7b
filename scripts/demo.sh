#!/usr/bin/env bash
# Installs what DHX needs, builds it, makes a corpus, compiles samples/tiny.dhx and trains it
# on the CPU with two data-parallel ranks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/deps.sh
bash scripts/build.sh
bash scripts/corpus.sh
build=${BUILD_DIR:-$root/build}
"$build/bin/dhxc" samples/tiny.dhx -o plans/tiny
if [ "$(id -u)" -eq 0 ]; then  # OpenMPI refuses root unless told
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
mpirun -np 2 --oversubscribe "$build/bin/dhxrun" plans/tiny --metrics plans/tiny/metrics.jsonl
