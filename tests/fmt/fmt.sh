#!/usr/bin/env bash
# Formatter cases: `dhxc fmt` on the repository's .dhx files, golden files, compiled plans of
# formatted programs, and the -i/--check modes.
# Usage: fmt.sh CASE [ARG]   (environment: DHXC FMT_CHECK SRC WORK)
# With DHX_UPDATE_GOLDEN=1 the golden case rewrites its .expected file instead of comparing.
set -euo pipefail
case_name=$1
work=$WORK/$case_name${2:+_$2}  # one folder per test: golden NAME cases run in parallel
rm -rf "$work" && mkdir -p "$work"
cd "$work"

# Every .dhx file of the repository that parses on its own.
dhx_files() {
  local f
  for f in "$SRC"/samples/*.dhx "$SRC"/samples/*/*.dhx "$SRC"/stdlib/*.dhx \
           "$SRC"/tests/front/ok/*.dhx; do
    [ -f "$f" ] && echo "$f"
  done
}

expect_rc() {  # expect_rc RC CMD...: the command exits with RC (stdout/stderr in out.txt/err.txt)
  local want=$1 rc=0; shift
  "$@" >out.txt 2>err.txt || rc=$?
  if [ "$rc" != "$want" ]; then
    echo "expected exit $want, got $rc: $*"; cat out.txt err.txt; exit 1
  fi
}

case $case_name in
  canonical)  # the project's own programs are kept in canonical form
    # shellcheck disable=SC2046
    "$DHXC" fmt --check "$SRC"/samples/*.dhx "$SRC"/samples/*/*.dhx "$SRC"/stdlib/*.dhx \
      "$SRC"/bench/*/*.dhx "$SRC"/tests/graph/*.dhx ||
      { echo "run: dhxc fmt -i on the files above"; exit 1; }
    echo "every sample, stdlib, bench and graph-test program is canonical"
    ;;
  idempotent)
    n=0
    while read -r f; do
      "$DHXC" fmt "$f" >once.dhx
      "$DHXC" fmt once.dhx >twice.dhx
      if ! cmp -s once.dhx twice.dhx; then
        echo "formatting $f twice differs from formatting it once:"; diff once.dhx twice.dhx; exit 1
      fi
      "$FMT_CHECK" "$f"  # re-parses, same tree, same comments (text and order)
      n=$((n + 1))
    done < <(dhx_files)
    [ "$n" -ge 10 ] || { echo "only $n files found"; exit 1; }
    echo "$n files are formatted idempotently"
    ;;

  golden)  # golden NAME: golden/NAME.dhx formats to golden/NAME.expected, a fixed point
    base=$SRC/tests/fmt/golden/$2
    "$DHXC" fmt "$base.dhx" >actual.dhx
    if [ "${DHX_UPDATE_GOLDEN:-}" = 1 ]; then cp actual.dhx "$base.expected"; exit 0; fi
    if ! cmp -s actual.dhx "$base.expected"; then
      echo "dhxc fmt $2.dhx differs from $2.expected:"; diff "$base.expected" actual.dhx; exit 1
    fi
    cp "$base.expected" expected.dhx
    expect_rc 0 "$DHXC" fmt --check expected.dhx
    "$FMT_CHECK" "$base.dhx"
    ;;

  fuzz)
    mapfile -t files < <(dhx_files)
    "$FMT_CHECK" --fuzz "${files[@]}" "$SRC"/tests/fmt/golden/*.dhx
    "$FMT_CHECK" --fuzz --pairs "$SRC"/tests/fmt/golden/*.dhx
    ;;

  plan)
    # tiny.dhx compiles to a plan. The samples are kept canonical, so first make a copy that
    # is not (redundant parentheses, odd spacing); the formatted copy of that must give the
    # same bytes as the original.
    sed -e 's/vocab: 256/vocab: ((256))/' -e 's/: /:   /g' -e 's/= /=  /g' \
      "$SRC/samples/tiny.dhx" >ugly_tiny.dhx
    "$DHXC" fmt ugly_tiny.dhx >tiny.dhx
    if cmp -s ugly_tiny.dhx tiny.dhx; then
      echo "the ugly copy of samples/tiny.dhx is canonical: formatting it proves nothing"; exit 1
    fi
    # Relative data paths resolve against the program's folder, which differs between the
    # original and the copy: both get the same absolute ones.
    data=(--set 'data.train="/data/train.bin"' --set 'data.val="/data/val.bin"')
    "$DHXC" "$SRC/samples/tiny.dhx" -o A "${data[@]}"
    "$DHXC" tiny.dhx -o B "${data[@]}"
    cmp A/plan.bin B/plan.bin
    cmp A/kernels.ptx B/kernels.ptx
    echo "samples/tiny.dhx: same plan.bin and kernels.ptx"
    # Every other sample: the same plan where one can be lowered, else the same memory report.
    # samples/paper (64-rank plans of paper-scale models, a minute each to lower) compare
    # their memory estimates from the analyzed model (--no-lower).
    for f in "$SRC"/samples/*.dhx "$SRC"/samples/*/*.dhx; do
      [ "$f" = "$SRC/samples/tiny.dhx" ] && continue
      name=$(basename "$f")
      "$DHXC" fmt "$f" >"$name"
      if [ "$(basename "$(dirname "$f")")" = paper ]; then
        "$DHXC" check --no-lower "$name" >/dev/null
        "$DHXC" "$f" --emit=memory --no-lower >orig.txt
        "$DHXC" "$name" --emit=memory --no-lower >formatted.txt
        cmp orig.txt formatted.txt
        echo "$name: same memory estimate"
      elif "$DHXC" "$f" -o orig "${data[@]}" >/dev/null 2>&1; then
        "$DHXC" "$name" -o formatted "${data[@]}"
        cmp orig/plan.bin formatted/plan.bin
        echo "$name: same plan.bin"
      else
        "$DHXC" check "$name" >/dev/null
        "$DHXC" "$f" --emit=memory >orig.txt
        "$DHXC" "$name" --emit=memory >formatted.txt
        cmp orig.txt formatted.txt
        echo "$name: same memory report"
      fi
      rm -rf orig formatted
    done
    ;;

  modes)
    printf 'train { steps: 1 }\n' >canonical.dhx
    printf 'train{steps:1,seed:2}   # odd\n' >ugly.dhx
    printf 'train { steps: 1 }\n' >mode.dhx && chmod 640 mode.dhx
    printf 'train{steps :1}\n' >target.dhx && ln -s target.dhx link.dhx
    printf 'train { steps: 1 +\n}\nmodel = 3\n' >bad.dhx
    cp bad.dhx bad.orig
    touch -d '2001-01-01' canonical.dhx
    before=$(stat -c '%i %Y' canonical.dhx)

    # --check names the files that are not canonical and exits 1; canonical ones pass.
    expect_rc 0 "$DHXC" fmt --check canonical.dhx mode.dhx
    [ ! -s out.txt ] || { echo "--check printed something for canonical files"; exit 1; }
    expect_rc 1 "$DHXC" fmt --check canonical.dhx ugly.dhx link.dhx
    printf 'ugly.dhx\nlink.dhx\n' | cmp - out.txt || { echo "--check named:"; cat out.txt; exit 1; }

    # A syntax error: dhxc's own diagnostics, exit 1, nothing written (in every mode).
    expect_rc 1 "$DHXC" check bad.dhx
    cp err.txt want_err.txt
    grep -q 'error:' want_err.txt
    for mode in "" -i --check; do
      expect_rc 1 "$DHXC" fmt $mode bad.dhx
      cmp want_err.txt err.txt || { echo "fmt $mode: not dhxc's messages:"; cat err.txt; exit 1; }
      [ ! -s out.txt ] || { echo "fmt $mode printed output for a file with errors"; exit 1; }
      cmp bad.orig bad.dhx
    done

    # -i rewrites only the files that change, keeps their mode, writes through links, and
    # leaves no temporary file behind; afterwards everything is canonical.
    expect_rc 1 "$DHXC" fmt -i canonical.dhx ugly.dhx mode.dhx link.dhx bad.dhx
    [ "$(stat -c '%i %Y' canonical.dhx)" = "$before" ] || { echo "-i touched it"; exit 1; }
    printf 'train { steps: 1, seed: 2 } # odd\n' | cmp - ugly.dhx
    [ "$(stat -c %a mode.dhx)" = 640 ] || { echo "-i changed the mode"; exit 1; }
    [ -L link.dhx ] || { echo "-i replaced the link"; exit 1; }
    printf 'train { steps: 1 }\n' | cmp - target.dhx
    cmp bad.orig bad.dhx
    leftover=$(find . -name '*.fmt-*')
    [ -z "$leftover" ] || { echo "temporary files left: $leftover"; exit 1; }
    expect_rc 0 "$DHXC" fmt --check canonical.dhx ugly.dhx mode.dhx link.dhx

    # Printing: the canonical text on stdout, the file untouched.
    printf 'train{steps:1}\n' >print.dhx
    expect_rc 0 "$DHXC" fmt print.dhx
    printf 'train { steps: 1 }\n' | cmp - out.txt
    printf 'train{steps:1}\n' | cmp - print.dhx

    # Usage mistakes exit 2 with a message; a missing file is an error (1) as in dhxc.
    for args in "" "--bogus x.dhx" "-i --check x.dhx"; do
      # shellcheck disable=SC2086
      expect_rc 2 "$DHXC" fmt $args
      grep -q 'error:' err.txt || { echo "no message for: fmt $args"; exit 1; }
    done
    expect_rc 1 "$DHXC" fmt no_such_file.dhx
    grep -q "cannot open 'no_such_file.dhx'" err.txt
    echo "modes behave"
    ;;

  *)
    echo "unknown case $case_name"; exit 2
    ;;
esac
