#!/usr/bin/env bash
# Makes a small byte-level corpus from text every Debian machine has (the license texts in
# /usr/share/common-licenses) into data/tiny_{train,val}.bin.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
files=$(find /usr/share/common-licenses -maxdepth 1 -type f | sort)
# shellcheck disable=SC2086
"$build/bin/dhxc" data -o "$root/data/tiny" --val-fraction 0.1 $files
