"""Checks a dhxc --emit=trace file: `check_trace.py TRACE.json RANKS MICRO_RUNS`.

It must parse as JSON; have one process per rank, named "rank N", and every event on one of
them; complete events with non-negative durations, MICRO run MICRO_RUNS times between BEGIN and
STEP on every rank, in that order in time; and flows whose ids each have one start ("s") and one
end ("f", bound to the enclosing slice), every step on a different rank, each at a time inside a
complete event of its rank and stream.
"""
import collections
import json
import sys

path, nranks, micro_runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path) as f:
    trace = json.load(f)
events = trace["traceEvents"]
names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
assert names == {r: f"rank {r}" for r in range(nranks)}, names
assert all(0 <= e["pid"] < nranks for e in events), "an event outside the ranks"

slices = [e for e in events if e["ph"] == "X"]
assert slices and all(e["dur"] >= 0 for e in slices)
by_thread = collections.defaultdict(list)
for e in slices:
    by_thread[(e["pid"], e["tid"])].append(e)
for r in range(nranks):
    runs = []  # program runs of rank r in time order (compute stream)
    for e in sorted(by_thread[(r, 0)], key=lambda e: e["ts"]):
        if not runs or runs[-1] != e["args"]["program"]:
            runs.append(e["args"]["program"])
    want = ["BEGIN"] + [f"MICRO {k}/{micro_runs}" for k in range(1, micro_runs + 1)] + ["STEP"]
    assert runs == want, (r, runs)

flows = collections.defaultdict(list)
for e in events:
    if e["ph"] in "stf":
        flows[e["id"]].append(e)
assert flows, "no flow links a rendezvous"
for fid, steps in flows.items():
    phases = [e["ph"] for e in steps]
    assert phases.count("s") == 1 and phases.count("f") == 1, (fid, phases)
    assert all(e.get("bp") == "e" for e in steps if e["ph"] != "s"), fid
    assert len({e["pid"] for e in steps}) == len(steps), ("a rank twice in one rendezvous", fid)
    for e in steps:
        inside = [s for s in by_thread[(e["pid"], e["tid"])]
                  if s["ts"] <= e["ts"] <= s["ts"] + s["dur"] and s["args"]["op"] != "zero"]
        assert inside, ("flow step outside any slice", fid, e)
print(f"{path}: {len(slices)} slices on {nranks} ranks, {len(flows)} rendezvous flows")
