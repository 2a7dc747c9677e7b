#!/usr/bin/env bash
# `dhxc check` of a file that defines nothing (empty, blank lines, comments only, only `use`)
# reports it and exits 1, where it used to pass as an empty library module; a real library
# module still passes.
#   check_empty.sh DHXC SCRATCH_DIR SOURCE_ROOT
set -uo pipefail
dhxc=$1 dir=$2 src=$3
rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
fail=0

# expect FILE MESSAGE: dhxc check FILE exits 1 and says exactly "FILE: error: MESSAGE".
expect() {
  local out rc
  out=$("$dhxc" check "$1" 2>&1); rc=$?
  if [ "$rc" != 1 ] || [ "$out" != "$1: error: $2" ]; then
    printf 'FAIL %s: exit %s, output:\n%s\nexpected: %s: error: %s\n' "$1" "$rc" "$out" "$1" "$2"
    fail=1
  fi
}

: > empty.dhx
printf '\n\n  \t\r\n' > blank.dhx
printf '# just a note\n\n/* and a\n   block comment */\n' > comments.dhx
printf '# a list of modules\nuse std.gpt\n' > uses.dhx
expect empty.dhx "nothing to check: the file is empty"
expect blank.dhx "nothing to check: the file is empty"
expect comments.dhx "nothing to check: the file has only comments"
expect uses.dhx "nothing to check: the file only uses modules and defines nothing"

# A module that defines something is still checked as a library module.
if ! out=$("$dhxc" check "$src/stdlib/gpt.dhx" 2>&1); then
  printf 'FAIL stdlib/gpt.dhx no longer passes dhxc check:\n%s\n' "$out"
  fail=1
fi
# A file with errors gets those errors, not the empty-file message.
printf '# only a stray character\n$\n' > stray.dhx
out=$("$dhxc" check stray.dhx 2>&1)
if [ $? != 1 ] || [[ "$out" == *"nothing to check"* ]] || [[ "$out" != *"invalid character"* ]]; then
  printf 'FAIL stray.dhx:\n%s\n' "$out"
  fail=1
fi
[ "$fail" = 0 ] && echo "ok: dhxc check rejects files that define nothing"
exit "$fail"
