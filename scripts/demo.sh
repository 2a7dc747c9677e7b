#!/usr/bin/env bash
# Installs what DHX needs, builds it, installs dhxc and dhxrun into DHX_PREFIX (default
# /usr/local: PREFIX/bin, and the stdlib in PREFIX/share/dhx/stdlib), makes a corpus, compiles
# samples/tiny.dhx and trains it on the CPU with two data-parallel ranks, with the commands
# exactly as the README types them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
prefix=${DHX_PREFIX:-/usr/local}
bash scripts/deps.sh
bash scripts/build.sh
build=${BUILD_DIR:-$root/build}
SUDO=""
mkdir -p "$prefix" 2>/dev/null || true
if [ "$(id -u)" -ne 0 ] && [ ! -w "$prefix" ]; then SUDO="sudo"; fi  # /usr/local as a user
$SUDO cmake --install "$build" --prefix "$prefix" >/dev/null
echo "installed dhxc and dhxrun in $prefix/bin, the stdlib in $prefix/share/dhx/stdlib"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on PATH; add it to use dhxc and dhxrun by name"
     export PATH="$prefix/bin:$PATH" ;;
esac
bash scripts/corpus.sh
dhxc samples/tiny.dhx -o plans/tiny
if [ "$(id -u)" -eq 0 ]; then  # OpenMPI refuses root unless told
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
mpirun -np 2 --oversubscribe dhxrun plans/tiny --metrics plans/tiny/metrics.jsonl
