#!/usr/bin/env bash
# trace_svg_renders_planned_traces: DHXC, SRC, WORK from CMake.
set -euo pipefail
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
"$DHXC" "$SRC/samples/tiny.dhx" --emit=trace --set schedule.parallel.dp=2 > dp2.json
svg="python3 $SRC/scripts/trace_svg.py"
$svg dp2.json -o dp2.svg --title "tiny, dp 2"
python3 "$SRC/tests/pictures/check_svg.py" dp2.json dp2.svg
$svg dp2.json -o dp2_micro.svg --program micro --phases --width 600
python3 "$SRC/tests/pictures/check_svg.py" dp2.json dp2_micro.svg
# The other format: a bare list of events.
python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["traceEvents"]))' \
  dp2.json > dp2_list.json
$svg dp2_list.json --from 0 --to 1000 > dp2_list.svg
python3 "$SRC/tests/pictures/check_svg.py" dp2_list.json dp2_list.svg
$svg --help | grep -q -- "--program"
