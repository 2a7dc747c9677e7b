#!/usr/bin/env python3
"""Assertions over a dhxrun --trace file (Chrome trace-event JSON).

  trace_check.py valid FILE NRANKS                  strict JSON; pids 0..NRANKS-1, tids 0 and 1, named
  trace_check.py cover FILE SCHEDULE FIRST LAST ACCUM
                                                    every instruction of BEGIN / MICRO / STEP (from
                                                    dhxc --emit=schedule) once per run, per rank,
                                                    for each step FIRST..LAST; EVAL runs whole
  trace_check.py nooverlap FILE                     slices on one (pid, tid) never overlap
  trace_check.py flows FILE MEMBERS                 each flow id: one "s" and one "f" per other
                                                    member (MEMBERS for collectives, 2 for a
                                                    send/recv pair), on communication slices,
                                                    "s" on the lowest rank, every slice linked
Exits 1 with a message on the first failed assertion.
"""
import collections
import json
import math
import re
import sys


def fail(msg):
    print("trace_check: " + msg, file=sys.stderr)
    sys.exit(1)


def load(path):
    def no_constants(name):
        fail("%s: non-standard JSON constant %s" % (path, name))
    with open(path) as f:
        d = json.load(f, parse_constant=no_constants)
    if not isinstance(d, dict) or not isinstance(d.get("traceEvents"), list):
        fail("%s: no traceEvents list" % path)
    return d["traceEvents"]


def slices(events):
    return [e for e in events if e.get("ph") == "X"]


def valid(path, nranks):
    events = load(path)
    xs = slices(events)
    pids = {e["pid"] for e in xs}
    if pids != set(range(nranks)):
        fail("slices on pids %s, expected 0..%d" % (sorted(pids), nranks - 1))
    for p in range(nranks):
        tids = {e["tid"] for e in xs if e["pid"] == p}
        if not {0, 1} <= tids:
            fail("rank %d has slices on tids %s, expected 0 and 1" % (p, sorted(tids)))
    meta = {(e["name"], e["pid"], e.get("tid")): e["args"]["name"]
            for e in events if e.get("ph") == "M" and "name" in e.get("args", {})}
    for p in range(nranks):
        if meta.get(("process_name", p, None)) != "rank %d" % p:
            fail("no process_name 'rank %d'" % p)
        for t, name in ((0, "compute"), (1, "comm")):
            if meta.get(("thread_name", p, t)) != name:
                fail("rank %d tid %d is not named '%s'" % (p, t, name))
    for e in xs:
        for k in ("name", "cat", "ts", "dur", "args"):
            if k not in e:
                fail("slice without %s: %s" % (k, e))
        if not (math.isfinite(e["ts"]) and e["dur"] >= 0):
            fail("bad ts/dur: %s" % e)
        a = e["args"]
        if e["cat"] not in ("begin", "micro", "step", "eval") or "op" not in a or "step" not in a:
            fail("slice without program, op or step: %s" % e)
        if a["op"] in ("allreduce", "reduce_scatter", "all_gather", "send", "recv") and "bytes" not in a:
            fail("communication slice without bytes: %s" % e)
    print("%s: %d slices on %d ranks, tids named" % (path, len(xs), nranks))


def schedule_counts(path):
    """{rank: {program: instructions}} from dhxc --emit=schedule."""
    counts, rank = {}, None
    with open(path) as f:
        for line in f:
            m = re.match(r"rank (\d+):", line)
            if m:
                rank = int(m.group(1))
                counts[rank] = dict(counts[0]) if "same buffers and programs as rank 0" in line else {}
            m = re.match(r"\s+program (\w+): \d+ streams, \d+ events, (\d+) instructions", line)
            if m:
                counts[rank][m.group(1).lower()] = int(m.group(2))
    return counts


def cover(path, schedule, first, last, accum):
    xs = slices(load(path))
    counts = schedule_counts(schedule)
    steps = set(range(first, last + 1))
    seen_steps = {e["args"]["step"] for e in xs}
    if seen_steps != steps:
        fail("slices of steps %s, expected %s" % (sorted(seen_steps), sorted(steps)))
    runs = {"begin": 1, "micro": accum, "step": 1}
    for rank, progs in counts.items():
        for prog, n in progs.items():
            got = collections.Counter((e["args"]["step"], e["args"]["instr"]) for e in xs
                                      if e["pid"] == rank and e["cat"] == prog)
            if prog == "eval":  # as many runs as the rank made, every instruction in each
                for step in steps:
                    k = got.get((step, 0), 0)
                    bad = [i for i in range(n) if got.get((step, i), 0) != k]
                    if bad:
                        fail("rank %d step %d: EVAL instruction %d ran %d times, instruction 0 %d"
                             % (rank, step, bad[0], got.get((step, bad[0]), 0), k))
                continue
            for step in steps:
                for i in range(n):
                    if got.get((step, i), 0) != runs[prog]:
                        fail("rank %d step %d: %s instruction %d ran %d times, expected %d"
                             % (rank, step, prog.upper(), i, got.get((step, i), 0), runs[prog]))
            extra = [k for k in got if k[1] >= n]
            if extra:
                fail("rank %d: %s has no instruction %d" % (rank, prog.upper(), extra[0][1]))
            if prog == "micro":
                micros = {e["args"]["micro"] for e in xs if e["pid"] == rank and e["cat"] == "micro"}
                if micros != set(range(accum)):
                    fail("rank %d: micro-batch indices %s" % (rank, sorted(micros)))
        total = sum(1 for e in xs if e["pid"] == rank and e["cat"] == "micro")
        print("rank %d: MICRO's %d instructions x %d micro-batches x %d steps = %d slices"
              % (rank, progs["micro"], accum, len(steps), total))


def nooverlap(path):
    by = collections.defaultdict(list)
    for e in slices(load(path)):
        by[(e["pid"], e["tid"])].append(e)
    for key, xs in sorted(by.items()):
        xs.sort(key=lambda e: e["ts"])
        for a, b in zip(xs, xs[1:]):
            if b["ts"] < a["ts"] + a["dur"] - 1e-9:
                fail("pid %d tid %d: '%s' [%.3f, +%.3f] overlaps '%s' at %.3f"
                     % (key[0], key[1], a["name"], a["ts"], a["dur"], b["name"], b["ts"]))
        print("pid %d tid %d: %d slices, none overlapping" % (key[0], key[1], len(xs)))


def flows(path, members):
    events = load(path)
    comm = collections.defaultdict(list)
    for e in slices(events):
        if "comm" in e["args"]:
            comm[(e["pid"], e["tid"])].append(e)
    by_id = collections.defaultdict(list)
    for e in events:
        if e.get("ph") in ("s", "f"):
            by_id[e["id"]].append(e)
    if not by_id:
        fail("no flow events")
    linked = 0
    for fid, es in by_id.items():
        s = [e for e in es if e["ph"] == "s"]
        f = [e for e in es if e["ph"] == "f"]
        on = []
        for e in es:
            hits = [x for x in comm[(e["pid"], e["tid"])] if x["ts"] <= e["ts"] <= x["ts"] + x["dur"]]
            if len(hits) != 1:
                fail("flow %s: its end on pid %d tid %d lies on %d communication slices"
                     % (fid, e["pid"], e["tid"], len(hits)))
            on.append(hits[0])
        n = 2 if on[0]["args"]["op"] in ("send", "recv") else members
        if len(s) != 1 or len(f) != n - 1:
            fail("flow %s: %d 's' and %d 'f', expected 1 and %d" % (fid, len(s), len(f), n - 1))
        if any(e["cat"] != "comm" for e in es) or any(e.get("bp") != "e" for e in f):
            fail("flow %s: not cat 'comm' with bp 'e' on its ends" % fid)
        if any(e["pid"] <= s[0]["pid"] for e in f):
            fail("flow %s starts on rank %d, not the lowest" % (fid, s[0]["pid"]))
        ops = sorted(x["args"]["op"] for x in on)
        if len({x["args"]["step"] for x in on}) != 1 or len({x["args"]["bytes"] for x in on}) != 1 \
                or ops != (["recv", "send"] if n == 2 and ops[0] in ("recv", "send") else [ops[0]] * n):
            fail("flow %s links slices that are not one rendezvous: %s" % (fid, on))
        linked += len(on)
    ncomm = sum(len(v) for v in comm.values())
    if ncomm != linked:
        fail("%d communication slices but %d flow ends" % (ncomm, linked))
    print("%d flows link all %d communication slices, one 's' and one 'f' per other member"
          % (len(by_id), ncomm))


def main(argv):
    cmds = {"valid": (valid, [str, int]), "cover": (cover, [str, str, int, int, int]),
            "nooverlap": (nooverlap, [str]), "flows": (flows, [str, int])}
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != len(cmds[argv[1]][1]):
        print(__doc__, file=sys.stderr)
        return 2
    fn, types = cmds[argv[1]]
    fn(*[t(a) for t, a in zip(types, argv[2:])])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
