#!/usr/bin/env python3
"""Draws a Chrome trace-event JSON file (dhxc --emit=trace, dhxrun --trace) as an SVG timeline.

One row per (rank, stream), labelled "rank R compute", "rank R comm", "rank R stream N"; every
slice is a rectangle coloured by its op (args.op, else its category), at least 1 px wide; thin
grey lines join the members of each rendezvous (the trace's flow events). Slices that fall in
the same pixel are drawn as one rectangle, and zero-length markers (record, wait, batch load)
are left out, so the picture stays small however many instructions the trace holds.
--phases tells forward from backward work, which shows a pipeline's 1F1B schedule.

  trace_svg.py TRACE.json -o OUT.svg [--title T] [--program micro] [--step 2]
               [--from US] [--to US] [--width 1200] [--phases] [--no-flows]
"""
import argparse
import html
import json
import math
import re
import sys

COLOURS = {  # op -> fill
    "gemm": "#4e79a7", "kernel": "#a0cbe8", "forward": "#8fc3e8", "backward": "#2c5d8a",
    "optimizer": "#9c755f", "allreduce": "#e15759", "all_gather": "#f28e2b",
    "reduce_scatter": "#ff9d9a", "send": "#59a14f", "recv": "#8cd17d",
    "load_batch": "#b07aa1", "zero": "#bab0ac", "grad_norm": "#edc948", "wait": "#dddddd",
    "record": "#999999",
}
SPARE = ["#76b7b2", "#d37295", "#fabfd2", "#b6992d", "#499894", "#86bcb6", "#79706e"]
MARKERS = ("record", "wait", "load_batch")
BACKWARD = re.compile(r"\bgrad\b|backward|pass-through")
LABEL_W, ROW_H, GAP, TOP, FONT = 150, 16, 3, 44, 11


def load(path):
    with open(path) as f:
        d = json.load(f)
    return d if isinstance(d, list) else d.get("traceEvents", [])


def program(e):
    """begin / micro / step / eval: args.program (dhxc) or the category (dhxrun)."""
    p = e.get("args", {}).get("program")
    return (p.split()[0] if p else e.get("cat", "")).lower()


def kind(e, phases):
    op = e.get("args", {}).get("op") or e.get("cat") or "?"
    if phases and op in ("gemm", "kernel"):
        if program(e) == "step":
            return "optimizer"
        note = e.get("name", "").split(": ")[-1]
        return "backward" if BACKWARD.search(note) and "squares" not in note else "forward"
    return op


def colour(op):
    if op not in COLOURS:  # an op without a colour of its own takes the next spare one
        COLOURS[op] = SPARE[sum(c in SPARE for c in COLOURS.values()) % len(SPARE)]
    return COLOURS[op]


def rows_of(events):
    """[(pid, tid, label)] for every stream that is named or has a slice, in rank order."""
    procs, threads = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            procs[e["pid"]] = e["args"]["name"]
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e["pid"], e["tid"])] = e["args"]["name"]
        elif e.get("ph") == "X":
            threads.setdefault((e["pid"], e.get("tid", 0)), None)
    default = {0: "compute", 1: "comm"}
    return [(p, t, "%s %s" % (procs.get(p, "rank %s" % p),
                               threads[(p, t)] or default.get(t, "stream %s" % t)))
            for p, t in sorted(threads)]


def nice_step(span, n=8):
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def fmt_us(t):
    if t >= 1e6 or t <= -1e6:
        return "%g s" % round(t / 1e6, 6)
    if t >= 1e3 or t <= -1e3:
        return "%g ms" % round(t / 1e3, 6)
    return "%g µs" % round(t, 6)


def coalesce(slices, x):
    """Rectangles [x0, x1, op, names, total_dur, {op: dur}] of one row: a slice joins the
    previous rectangle when it starts less than half a pixel after it and has the same op, or
    when the previous one is still under a pixel wide (it then takes the op that holds most of
    its time). A zero-length marker (a wait, a record, a batch load) ends the rectangle, so the
    parts of a pipeline's micro-batches stay apart; markers are not drawn."""
    rects, cut = [], False
    for e in sorted(slices, key=lambda e: e["ts"]):
        x0, x1, op = x(e["ts"]), x(e["ts"] + e["dur"]), e["_op"]
        if e["dur"] <= 0 and op in MARKERS:
            cut = True
            continue
        r = rects[-1] if rects and not cut else None
        cut = False
        if r and x0 - r[1] < 0.5 and (r[2] == op or r[1] - r[0] < 1):
            r[1] = max(r[1], x1)
            r[5][op] = r[5].get(op, 0) + e["dur"]
            r[2] = max(r[5], key=r[5].get)
            r[3].append(e["name"])
            r[4] += e["dur"]
        else:
            rects.append([x0, x1, op, [e["name"]], e["dur"], {op: e["dur"]}])
    return rects


def render(events, a):
    rows = rows_of(events)
    row_y = {(p, t): TOP + i * (ROW_H + GAP) for i, (p, t, _) in enumerate(rows)}
    xs = [e for e in events if e.get("ph") == "X" and "ts" in e]
    for e in xs:
        e.setdefault("dur", 0)
        e["_op"] = kind(e, a.phases)
    xs = [e for e in xs if e["dur"] <= 0 or e["_op"] != "record" or a.keep_records]
    if a.program:
        xs = [e for e in xs if program(e) == a.program.lower()]
    if a.step is not None:
        xs = [e for e in xs if e.get("args", {}).get("step") == a.step]
    t0 = a.t_from if a.t_from is not None else min((e["ts"] for e in xs), default=0)
    t1 = a.t_to if a.t_to is not None else max((e["ts"] + e["dur"] for e in xs), default=1)
    xs = [e for e in xs if e["ts"] + e["dur"] >= t0 and e["ts"] <= t1]
    if t1 <= t0:
        t1 = t0 + 1
    plot_w = a.width - LABEL_W - 10
    scale = plot_w / (t1 - t0)

    def x(t):
        return LABEL_W + (min(max(t, t0), t1) - t0) * scale

    height = TOP + len(rows) * (ROW_H + GAP) + 40
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif" font-size="%d">' % (a.width, height, a.width, height, FONT),
           '<rect width="100%" height="100%" fill="white"/>']
    title = a.title or "%s, %s" % (a.trace, fmt_us(t1 - t0))
    out.append('<text x="8" y="16" font-size="14" font-weight="bold">%s</text>'
               % html.escape(title))
    step = nice_step(t1 - t0)  # time axis: ticks relative to the window's start
    bottom = TOP + len(rows) * (ROW_H + GAP)
    k = 0
    while k * step <= t1 - t0 + 1e-9:
        tx = x(t0 + k * step)
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>'
                   % (tx, TOP - 4, tx, bottom))
        out.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>'
                   % (tx, TOP - 8, fmt_us(k * step)))
        k += 1
    by_row = {}
    for e in xs:
        by_row.setdefault((e["pid"], e.get("tid", 0)), []).append(e)
    used = {}
    prev_pid = None
    for p, t, label in rows:
        y = row_y[(p, t)]
        if prev_pid is not None and p != prev_pid:
            out.append('<line x1="0" y1="%.1f" x2="%d" y2="%.1f" stroke="#bbb"/>'
                       % (y - GAP / 2, a.width, y - GAP / 2))
        prev_pid = p
        out.append('<text x="6" y="%d">%s</text>' % (y + ROW_H - 4, html.escape(label)))
        for x0, x1, op, names, dur, _ in coalesce(by_row.get((p, t), []), x):
            used[op] = True
            w = max(x1 - x0 - (0.5 if x1 - x0 > 3 else 0), 1.0)  # a hairline between rectangles
            tip = names[0] if len(names) == 1 else \
                "%d slices: %s ... %s" % (len(names), names[0], names[-1])
            out.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s (%s, %s)'
                       '</title></rect>' % (x0, y, w, ROW_H, colour(op), html.escape(tip),
                                            html.escape(op), fmt_us(dur)))
            room = int((w - 4) / (FONT * 0.6))
            if len(names) == 1 and room >= 6:  # a wide single slice: its note, cut to fit
                text = names[0] if len(names[0]) <= room else names[0][:room - 1] + "…"
                fill = "white" if op in ("gemm", "backward", "allreduce", "optimizer") else "black"
                out.append('<text x="%.1f" y="%d" fill="%s">%s</text>'
                           % (x0 + 2, y + ROW_H - 4, fill, html.escape(text)))
    if not a.no_flows:  # one polyline per rendezvous, through its members in trace order
        flows = {}
        for e in events:
            if e.get("ph") in ("s", "t", "f") and (e["pid"], e.get("tid", 0)) in row_y \
                    and t0 <= e["ts"] <= t1:
                flows.setdefault((e.get("cat"), e["id"]), []).append(e)
        for pts in flows.values():
            if len(pts) < 2:
                continue
            coords = " ".join("%.1f,%.1f" % (x(e["ts"]),
                                             row_y[(e["pid"], e.get("tid", 0))] + ROW_H / 2)
                              for e in pts)
            out.append('<polyline points="%s" fill="none" stroke="#333" stroke-width="0.7" '
                       'stroke-opacity="0.6"/>' % coords)
    lx, ly = LABEL_W, bottom + 16  # legend: the ops drawn
    for op in sorted(used):
        out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>'
                   % (lx, ly - 9, colour(op)))
        out.append('<text x="%d" y="%d">%s</text>' % (lx + 13, ly, html.escape(op)))
        lx += 30 + int(len(op) * FONT * 0.62)
        if lx > a.width - 100:
            lx, ly = LABEL_W, ly + 14
    if ly > bottom + 16:  # the legend wrapped: make room for it
        out[0] = out[0].replace('height="%d" viewBox="0 0 %d %d"' % (height, a.width, height),
                                'height="%d" viewBox="0 0 %d %d"' % (ly + 12, a.width, ly + 12))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", help="Chrome trace JSON: a list of events or {\"traceEvents\": [...]}")
    ap.add_argument("-o", "--output", help="the SVG file (default: standard output)")
    ap.add_argument("--title", help="heading (default: the file's name and the window's length)")
    ap.add_argument("--program", metavar="NAME",
                    help="only slices of this program: begin, micro, step, eval")
    ap.add_argument("--step", type=int, metavar="N",
                    help="only slices of this step (dhxrun traces: args.step)")
    ap.add_argument("--from", dest="t_from", type=float, metavar="US",
                    help="window start, µs of the trace's clock")
    ap.add_argument("--to", dest="t_to", type=float, metavar="US", help="window end, µs")
    ap.add_argument("--width", type=int, default=1200, metavar="PX",
                    help="picture width in px (default 1200)")
    ap.add_argument("--phases", action="store_true",
                    help="colour gemm/kernel slices as forward, backward or optimizer (by note)")
    ap.add_argument("--keep-records", action="store_true", help="draw RECORD slices that take time too")
    ap.add_argument("--no-flows", action="store_true", help="leave out the rendezvous lines")
    a = ap.parse_args()
    if a.width < LABEL_W + 100:
        ap.error("--width must be at least %d" % (LABEL_W + 100))
    svg = render(load(a.trace), a)
    if a.output:
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(svg)
    else:
        sys.stdout.write(svg)


if __name__ == "__main__":
    main()
