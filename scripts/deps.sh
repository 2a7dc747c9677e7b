#!/usr/bin/env bash
# Installs the Debian packages DHX needs to build and test. Idempotent: packages already
# present are skipped, and apt is not touched at all when everything is installed.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  flex bison                     # grammar/
  llvm-19-dev                    # compiler/codegen: LLVM C API, NVPTX + x86 targets
  libopenmpi-dev openmpi-bin     # runtime collectives and the mpirun launcher
  libopenblas-dev                # GEMMs on the CPU backend
  libcjson-dev                   # safetensors headers, metrics
  python3-numpy                  # tests/convert: the Hugging Face reference forward pass
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
