#!/usr/bin/env python3
"""check_svg.py TRACE.json OUT.svg: OUT.svg parses as XML and labels every (rank, stream) row of
the trace once ("rank R compute", "rank R comm", "rank R stream N"), and draws some slices."""
import collections
import json
import sys
import xml.etree.ElementTree as ET

trace, svg = sys.argv[1], sys.argv[2]
with open(trace) as f:
    d = json.load(f)
events = d if isinstance(d, list) else d["traceEvents"]
procs = {e["pid"]: e["args"]["name"] for e in events
         if e.get("ph") == "M" and e["name"] == "process_name"}
threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
           if e.get("ph") == "M" and e["name"] == "thread_name"}
rows = {(e["pid"], e["tid"]) for e in events if e.get("ph") == "X"} | set(threads)
want = {"%s %s" % (procs[p], threads[(p, t)]) for p, t in rows}
if len(rows) < 4 or len(want) != len(rows):
    sys.exit("check_svg: %s: expected 2 ranks x 2 streams, got %s" % (trace, sorted(rows)))

root = ET.parse(svg).getroot()  # raises on malformed XML
ns = "{http://www.w3.org/2000/svg}"
if root.tag != ns + "svg":
    sys.exit("check_svg: %s: root is %s" % (svg, root.tag))
texts = collections.Counter("".join(t.itertext()) for t in root.iter(ns + "text"))
for label in sorted(want):
    if texts[label] != 1:
        sys.exit("check_svg: %s: row label %r appears %d times" % (svg, label, texts[label]))
labels = [t for t in texts if t.startswith("rank ")]
if len(labels) != len(want):
    sys.exit("check_svg: %s: row labels %s, expected %s" % (svg, labels, sorted(want)))
slices = [r for r in root.iter(ns + "rect") if r.find(ns + "title") is not None]
if not slices or any(float(r.get("width")) < 1 for r in slices):
    sys.exit("check_svg: %s: %d slice rectangles, or one under 1 px" % (svg, len(slices)))
print("%s: %d rows labelled, %d slice rectangles" % (svg, len(want), len(slices)))
