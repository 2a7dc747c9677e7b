#!/bin/bash
# simulate.sh CASE — dhxc --simulate on tests/simulate/small_gpu.dhx (or a paper sample):
#   fields     the JSON has every field, with sane values (step > 0, MFU in (0, 1), ...)
#   bubble     a pipeline of two stages idles more than the same ranks without one
#   network    a slower network between nodes raises the exposed communication
#   outputs    the SVG and the Chrome trace are written for a W-folded pipeline with paired
#              strands, and nothing is left out (no note on stderr)
#   fold       a pipeline folded into a W (fold: w) simulates sanely, and its bubble is about
#              the plain 1F1B pipeline's (no more than 1.5x); paired, its step is at least
#              15% shorter
#   searches   with paired strands, search none, greedy and dp all simulate sanely, and the
#              modelled time of dp's alignments is no more than greedy's or the unaligned sum
#   qwd        compress { params: qwd } at zero 1 is simulated (no note leaves it out): less
#              exposed communication (the gathers move 4-bit codes and scales, not f32) and
#              more compute (the quantize and dequantize kernels) than without it
#   replica    one data-parallel replica simulated for its clones gives the step of every
#              rank simulated (--simulate-every-rank), and compute and exposed communication
#              within 1% (simultaneous events may be taken in another order), with ZeRO 1 and
#              with ZeRO 3 and paired strands
#   f32_plan   a bf16 program (the default on GPU clusters) simulates as its f32 plan: its peak
#              memory is the largest arena of the program compiled with precision f32, above
#              the bf16 plan's
#   steady     a long step of paired strands or a pipeline, simulated from three short ones
#              (simulate_steady.c), has every figure of the whole step simulated micro-batch by
#              micro-batch (--simulate-whole-step) within 1e-9, and its peak memory: one stage
#              with each search, 1F1B, interleaved, paired pipelines, tensor and data parallel;
#              the W fold is simulated whole; --simulate-whole-step without --simulate is
#              refused
#   stages     the stages of a pipeline lowered on threads of their own (one per stage, up
#              to 4: DHX_STAGE_THREADS) give exactly the figures of one stage after the other
#              (DHX_STAGE_THREADS=1): 2 and 4 stages, and 2 W-folded with paired strands;
#              a DHX_STAGE_THREADS that is not 1..64 is named in a warning
#   activations  --simulate-activations adds live_activation_bytes and activation_region_bytes
#              (without it neither is printed): 0 < live <= region, since the arena holds every
#              activation live at once in the simulated order in bytes of its own (a planner
#              that overlapped two of them would fail here); one stage, a 1F1B pipeline, a W
#              with paired strands, and a paired stage from three short steps equal to the
#              whole step
#   paper F    sample F simulates and its JSON is sane; where it pairs strands, its peak
#              memory is at most 3% above the same sample's with pair: off (in a pipeline,
#              paired with search: none)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
in=$here/small_gpu.dhx
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sim() { "$DHXC" "$@" --simulate --json; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['$2'])" "$1"; }
sane() {
  python3 - "$1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for k in ("step_time_s", "mfu", "bubble_s", "exposed_comm_s", "peak_memory_bytes", "tokens_per_s"):
    assert k in j, "no field " + k
assert j["step_time_s"] > 0, j
assert 0 < j["mfu"] < 1, j
assert j["bubble_s"] >= 0 and j["exposed_comm_s"] >= 0, j
assert j["peak_memory_bytes"] > 0, j
parts = j["compute_s"] + j["bubble_s"] + j["exposed_comm_s"]
assert abs(parts - j["step_time_s"]) <= 1e-6 * j["step_time_s"], (parts, j["step_time_s"])
assert len(j["per_rank"]) == j["ranks"], j
PY
}
gt() { python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$1" "$2"; }

largest_arena() {  # largest_arena FILE [--set ...]: bytes, over the ranks of the compiled plan
  local f=$1; shift
  "$DHXC" "$f" --emit=schedule "$@" | grep -o 'arena [0-9]* bytes' | awk '{print $2}' | sort -n |
    tail -1
}

case $1 in
  f32_plan)
    sim "$in" > "$work/j"
    peak=$(field "$work/j" peak_memory_bytes)
    f32=$(largest_arena "$in" --set train.precision=f32)
    bf16=$(largest_arena "$in" --set train.precision=bf16)
    echo "simulated peak $peak, f32 plan $f32, bf16 plan $bf16"
    [ "$peak" = "$f32" ] && [ "$bf16" -lt "$peak" ] ;;
  fields)
    sim "$in" > "$work/j"
    sane "$work/j" ;;
  bubble)
    sim "$in" --set schedule.parallel.dp=1 --set schedule.parallel.pp=2 > "$work/pp2"
    sim "$in" > "$work/pp1"  # the same 8 ranks as dp 2
    sane "$work/pp2"
    b2=$(field "$work/pp2" bubble_s) b1=$(field "$work/pp1" bubble_s)
    echo "bubble: pp 2 $b2 s, pp 1 $b1 s"
    gt "$b2" 0 && gt "$b2" "$b1" ;;
  network)
    sim "$in" > "$work/fast"
    sim "$in" --set 'cluster.inter=1 GB/s' > "$work/slow"
    f=$(field "$work/fast" exposed_comm_s) s=$(field "$work/slow" exposed_comm_s)
    echo "exposed communication: 100 GB/s $f s, 1 GB/s $s s"
    gt "$s" "$f" ;;
  outputs)
    cp "$in" "$work/s.dhx"
    sed -i 's/parallel { dp: 2, tp: 4 }/parallel { dp: 1, tp: 4, pp: 2 }\n  strands { pair: on, search: none, fold: w }/' "$work/s.dhx"
    "$DHXC" "$work/s.dhx" --simulate --simulate-svg "$work/t.svg" --simulate-trace "$work/t.json" \
      > "$work/out" 2> "$work/err"
    grep -q "simulated step of 8 ranks" "$work/out"
    if [ -s "$work/err" ]; then cat "$work/err"; exit 1; fi  # nothing left out
    grep -q "<svg" "$work/t.svg" && grep -q "rank 7 comm" "$work/t.svg" && grep -q "</svg>" "$work/t.svg"
    python3 -c "import json,sys; t=json.load(open(sys.argv[1])); assert len(t['traceEvents']) > 100" "$work/t.json" ;;
  fold)
    sim "$in" --set schedule.parallel.dp=1 --set schedule.parallel.pp=2 > "$work/plain"
    sim "$in" --set schedule.parallel.dp=1 --set schedule.parallel.pp=2 \
      --set schedule.strands.fold=w > "$work/w" 2> "$work/err"
    if [ -s "$work/err" ]; then cat "$work/err"; exit 1; fi
    sane "$work/w"
    p=$(field "$work/plain" bubble_s) w=$(field "$work/w" bubble_s)
    echo "pp 2: step $(field "$work/plain" step_time_s) s, bubble $p s;" \
      "folded into a W: step $(field "$work/w" step_time_s) s, bubble $w s"
    gt "$(python3 -c "print(1.5 * $p)")" "$w"
    # Paired, the W's strands run beside each other (micro-batches in groups of pp,
    # dhx_strand_of) and so do their backwards where they touch different state
    # (wait_for_touched): 16% off the step. With micro-batch m on strand m % 2 and whole
    # backwards one after another, the bottom stage ran four blocks at a time on one strand,
    # and pairing took 8% off.
    sim "$in" --set schedule.parallel.dp=1 --set schedule.parallel.pp=2 \
      --set schedule.strands.fold=w --set schedule.strands.pair=on > "$work/wp"
    sane "$work/wp"
    u=$(field "$work/w" step_time_s) q=$(field "$work/wp" step_time_s)
    echo "folded into a W, paired: step $q s"
    gt "$(python3 -c "print(0.85 * $u)")" "$q" ;;
  searches)
    for s in none greedy dp; do
      sim "$in" --set schedule.strands.pair=on --set schedule.strands.search=$s > "$work/$s"
      sane "$work/$s"
      echo "search $s: step $(field "$work/$s" step_time_s) s"
    done
    python3 - "$work/dp" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["overlap_search_modelled_s"]
print("modelled time of the paired regions:", m)
assert 0 < m["dp"] <= m["greedy"] and m["dp"] <= m["none"], m
PY
    ;;
  qwd)
    sim "$in" --set schedule.parallel.zero=1 > "$work/plain"
    sim "$in" --set schedule.parallel.zero=1 \
      --set 'schedule.compress.params=qwd(bits: 4, group: 2048)' > "$work/qwd" 2> "$work/err"
    sane "$work/plain" && sane "$work/qwd"
    ! grep -q "simulating without" "$work/err" || exit 1
    pe=$(field "$work/plain" exposed_comm_s) qe=$(field "$work/qwd" exposed_comm_s)
    pc=$(field "$work/plain" compute_s) qc=$(field "$work/qwd" compute_s)
    echo "exposed communication: plain $pe s, qwd $qe s; compute: plain $pc s, qwd $qc s"
    gt "$pe" "$qe" && gt "$qc" "$pc" ;;
  replica)
    for z in 1 3; do
      sets=(--set schedule.parallel.zero=$z)
      [ "$z" = 3 ] && sets+=(--set schedule.strands.pair=on)
      sim "$in" "${sets[@]}" > "$work/one"
      sim "$in" "${sets[@]}" --simulate-every-rank > "$work/every"
      python3 - "$work/one" "$work/every" <<'PY'
import json, sys
one, every = (json.load(open(f)) for f in sys.argv[1:3])
print("one replica:", {k: one[k] for k in ("step_time_s", "compute_s", "exposed_comm_s")})
print("every rank: ", {k: every[k] for k in ("step_time_s", "compute_s", "exposed_comm_s")})
assert one["ranks"] == every["ranks"] == len(one["per_rank"]), (one["ranks"], every["ranks"])
assert one["peak_memory_bytes"] == every["peak_memory_bytes"]
assert abs(one["step_time_s"] - every["step_time_s"]) <= 1e-9 * every["step_time_s"]
for k in ("compute_s", "exposed_comm_s", "mfu"):
    assert abs(one[k] - every[k]) <= 0.01 * every[k], k
PY
    done ;;
  stages)
    for layout in "1 4 2 off off" "1 2 4 off off" "1 4 2 w on"; do  # dp tp pp fold pair
      read -r dp tp pp fold pair <<<"$layout"
      sets=(--set schedule.parallel.dp=$dp --set schedule.parallel.tp=$tp
            --set schedule.parallel.pp=$pp --set schedule.strands.fold=$fold
            --set schedule.strands.pair=$pair --set schedule.strands.search=none)
      DHX_STAGE_THREADS=1 sim "$in" "${sets[@]}" > "$work/serial"
      DHX_STAGE_THREADS=4 sim "$in" "${sets[@]}" > "$work/threads"
      cmp "$work/serial" "$work/threads" || { echo "pp $pp fold $fold pair $pair differ"; exit 1; }
      echo "pp $pp, fold $fold, pair $pair: the same figures on threads"
    done
    for bad in 0 abc 65; do  # named in a warning; the default threads lower the stages
      DHX_STAGE_THREADS=$bad sim "$in" "${sets[@]}" > "$work/bad" 2> "$work/bad.err"
      grep -q "warning: DHX_STAGE_THREADS='$bad' is not a number from 1 to 64" "$work/bad.err" ||
        { cat "$work/bad.err"; exit 1; }
      cmp "$work/serial" "$work/bad"
    done
    echo "DHX_STAGE_THREADS=0, abc, 65: a warning, and the same figures" ;;
  steady)
    tiny=(--set schedule.parallel.dp=1 --set schedule.parallel.tp=1 --set train.micro_batch=4
          --set train.global_batch=128)
    pair=(--set schedule.strands.pair=on)
    pp2=(--set schedule.parallel.pp=2)
    n=0
    check() {  # check EXTRAPOLATED(yes|no) FILE [--set ...]
      local want=$1; shift
      n=$((n + 1))
      sim "$@" > "$work/short$n"
      sim "$@" --simulate-whole-step > "$work/whole$n"
      python3 - "$want" "$work/short$n" "$work/whole$n" "${*:2}" <<'PY'
import json, sys
want, what = sys.argv[1], sys.argv[4]
a, b = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
got = a.get("extrapolated_from_micro_batches")
print(what, "->", "from", got if got else "the whole step", "step", a["step_time_s"],
      b["step_time_s"])
assert (got is not None) == (want == "yes"), (want, got)
assert "extrapolated_from_micro_batches" not in b
t = b["step_time_s"]
def near(x, y, scale):
    return abs(x - y) <= 1e-9 * scale
for k in ("step_time_s", "bubble_s", "exposed_comm_s", "compute_s"):
    assert near(a[k], b[k], t), (k, a[k], b[k])
for k in ("mfu", "tokens_per_s", "model_flops_per_step"):
    assert near(a[k], b[k], b[k]), (k, a[k], b[k])
m = "peak_memory_bytes"
assert a[m] == b[m], (a[m], b[m])
for r, (x, y) in enumerate(zip(a["per_rank"], b["per_rank"])):
    for k in x:
        assert near(x[k], y[k], t), (r, k, x[k], y[k])
for k, v in b.get("overlap_search_modelled_s", {}).items():
    assert near(a["overlap_search_modelled_s"][k], v, t + v), k
PY
    }
    tiny_dhx=$SRC/samples/tiny.dhx
    for s in dp greedy none; do
      check yes "$tiny_dhx" "${tiny[@]}" "${pair[@]}" --set schedule.strands.search=$s
    done
    check yes "$tiny_dhx" "${tiny[@]}" "${pp2[@]}"
    check yes "$tiny_dhx" "${tiny[@]}" --set schedule.parallel.pp=3 --set model.layers=6 \
      --set train.global_batch=96
    check yes "$tiny_dhx" "${tiny[@]}" "${pp2[@]}" --set schedule.parallel.virtual=2
    check yes "$tiny_dhx" "${tiny[@]}" "${pp2[@]}" "${pair[@]}" --set schedule.strands.search=none
    check yes "$tiny_dhx" "${tiny[@]}" --set schedule.parallel.dp=2 "${pp2[@]}" \
      --set schedule.parallel.zero=1
    check yes "$in" --set train.global_batch=128 "${pair[@]}"
    check no "$tiny_dhx" "${tiny[@]}" "${pp2[@]}" --set schedule.strands.fold=w
    "$DHXC" "$tiny_dhx" --simulate "${tiny[@]}" "${pp2[@]}" > "$work/text"
    grep -q "extrapolated from steps of 6, 7 and 8 micro-batches" "$work/text"
    # --simulate-whole-step alone is refused in one line, exit 1
    if "$DHXC" "$tiny_dhx" --simulate-whole-step 2> "$work/err"; then
      echo "--simulate-whole-step without --simulate was accepted"; exit 1
    fi
    grep -q -- "--simulate-activations, --simulate-whole-step and --profile go with --simulate" "$work/err" ;;
  activations)
    tiny_dhx=$SRC/samples/tiny.dhx
    tiny=(--set train.micro_batch=4 --set train.global_batch=32 --set schedule.parallel.dp=1)
    pair=(--set schedule.strands.pair=on)
    sim "$in" > "$work/plain"
    if grep -q live_activation_bytes "$work/plain"; then
      echo "live activations printed without --simulate-activations"; exit 1
    fi
    live_within_region() {  # live_within_region NAME JSON
      python3 - "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[2]))
live, region = d["live_activation_bytes"], d["activation_region_bytes"]
print(f"{sys.argv[1]}: {live} bytes live at once, {region} laid out")
assert 0 < live <= region, "live activations outside (0, region]"
PY
    }
    sim "$in" --simulate-activations > "$work/a" && live_within_region "one stage" "$work/a"
    sim "$tiny_dhx" "${tiny[@]}" --set schedule.parallel.pp=2 --simulate-activations > "$work/b"
    live_within_region "1F1B of two stages" "$work/b"
    sim "$tiny_dhx" "${tiny[@]}" --set schedule.parallel.pp=2 --set schedule.strands.fold=w \
      "${pair[@]}" --set schedule.strands.search=none --simulate-activations > "$work/c"
    live_within_region "paired W of two stages" "$work/c"
    sim "$in" --set train.global_batch=128 "${pair[@]}" --simulate-activations > "$work/short"
    grep -q extrapolated_from_micro_batches "$work/short" ||
      { echo "the paired stage was simulated whole"; exit 1; }
    live_within_region "paired stage, three short steps" "$work/short"
    sim "$in" --set train.global_batch=128 "${pair[@]}" --simulate-activations \
      --simulate-whole-step > "$work/whole"
    for f in live_activation_bytes activation_region_bytes; do
      [ "$(field "$work/short" $f)" = "$(field "$work/whole" $f)" ] ||
        { echo "$f: three short steps differ from the whole step"; exit 1; }
    done ;;
  paper)
    sample=$SRC/samples/paper/$2
    sim "$sample" "${@:3}" > "$work/j" 2> "$work/err"
    cat "$work/j"
    sane "$work/j"
    if grep -q "pair: on" "$sample" && ! grep -q "pp: [2-9]" "$sample"; then
      sim "$sample" "${@:3}" --set schedule.strands.pair=off > "$work/off" 2> "$work/err"
      on=$(field "$work/j" peak_memory_bytes) off=$(field "$work/off" peak_memory_bytes)
      echo "peak memory: $on bytes paired, $off unpaired"
      gt "$((off * 103))" "$((on * 100))" ||
        { echo "paired strands hold more than 3% above unpaired"; exit 1; }
      if [ $# -eq 2 ]; then  # at its own batch: a long step, from three short ones
        grep -q extrapolated_from_micro_batches "$work/j" ||
          { echo "the paired step was simulated whole"; exit 1; }
      fi
    elif grep -q "pair: on" "$sample"; then
      # A pipeline pairs its strands with search: none (the search is refused there), as the
      # samples say: they simulate paired as written, still within 3% of unpaired.
      grep -q "strands {.*search: none" "$sample" || { echo "a pipelined sample asks for the search"; exit 1; }
      if grep -q "not lowered yet" "$work/err"; then cat "$work/err"; exit 1; fi
      sim "$sample" "${@:3}" --set schedule.strands.pair=off > "$work/off" 2> "$work/err"
      on=$(field "$work/j" peak_memory_bytes) off=$(field "$work/off" peak_memory_bytes)
      echo "peak memory: $on bytes paired (search: none), $off unpaired"
      gt "$((off * 103))" "$((on * 100))" ||
        { echo "paired strands hold more than 3% above unpaired"; exit 1; }
    fi ;;
  *) echo "unknown case $1"; exit 2 ;;
esac
