#!/usr/bin/env python3
"""Checks of dhxrun --profile files (tests/trace/trace.sh, the profile_* cases).

  profile_check.py valid PROFILE RANKS FIRST LAST BANDWIDTH
      the fields dhxc reads are there and sane, the window is FIRST..LAST, the network is
      BANDWIDTH bytes/s, compute and collectives are both timed, every rank has its totals
  profile_check.py deferred PROFILE SCHEDULE STEPS
      the plan (its --emit=schedule listing) defers collectives, and the profile times exactly
      the others: STEPS times those of BEGIN, MICRO and STEP, over the ranks (one MICRO run a
      step, no evaluation)
  profile_check.py slow-gemms PROFILE OUT SECONDS
      writes OUT: PROFILE with every GEMM timed at SECONDS (dhxc must then simulate them so)
"""
import json
import sys


def fail(msg):
    print("profile_check:", msg)
    sys.exit(1)


def valid(path, ranks, first, last, bandwidth):
    p = json.load(open(path))
    if p.get("writer") != "dhxrun --profile" or p.get("version") != 1:
        fail("writer/version: %r %r" % (p.get("writer"), p.get("version")))
    if p["ranks"] != ranks or p["steps"] != [first, last]:
        fail("ranks %r steps %r, expected %d and [%d, %d]" % (p["ranks"], p["steps"], ranks, first, last))
    if abs(p["network"]["bandwidth_bytes_per_s"] - bandwidth) > 1e-6 * bandwidth:
        fail("network %r, expected %g B/s" % (p["network"], bandwidth))
    ops = p["ops"]
    kinds = {k.split()[0] for k in ops}
    for need in ("gemm", "kernel", "all_gather", "reduce_scatter"):
        if need not in kinds:
            fail("no %s timed; kinds: %s" % (need, sorted(kinds)))
    for k, v in ops.items():
        if not (v["seconds"] > 0 and v["count"] > 0):
            fail("%s: %r" % (k, v))
        if k.startswith(("all_gather", "reduce_scatter")) and "members=2" not in k:
            fail("collective key without its members: " + k)
    if len(p["per_rank"]) != ranks:
        fail("per_rank has %d entries" % len(p["per_rank"]))
    for r in p["per_rank"]:
        if not (r["compute_s_per_step"] > 0 and r["comm_s_per_step"] > 0):
            fail("per_rank %r" % r)
    # A collective under the emulated network takes at least the bytes it sends over the link.
    for k, v in ops.items():
        if k.startswith("all_gather"):
            count = int(k.split("count=")[1].split()[0])
            floor = count / 2 * 4 / bandwidth
            if v["seconds"] < floor:
                fail("%s took %g s, less than its bytes over the emulated link (%g s)" % (k, v["seconds"], floor))
    print("profile %s: %d keys, steps %d..%d, %d ranks" % (path, len(ops), first, last, ranks))


COLLECTIVES = ("allreduce", "reduce_scatter", "all_gather", "all_to_all")


def deferred(path, schedule, steps):
    prog, whole, posted = None, 0, 0
    for line in open(schedule):
        words = line.split()
        if line.startswith("  program "):
            prog = words[1].rstrip(":")
        elif len(words) > 2 and words[0].isdigit() and words[2] in COLLECTIVES:
            if "deferred to event" in line:
                posted += 1
            elif prog in ("BEGIN", "MICRO", "STEP"):
                whole += 1
    timed = sum(v["count"] for k, v in json.load(open(path))["ops"].items()
                if k.split()[0] in COLLECTIVES)
    if posted == 0:
        fail("the plan defers no collective")
    if timed != steps * whole:
        fail("%d collective records timed, expected %d (%d steps of %d run whole; %d deferred)"
             % (timed, steps * whole, steps, whole, posted))
    print("profile %s: %d collective records timed, %d deferred collectives left out" % (path, timed, posted))


def slow_gemms(path, out, seconds):
    p = json.load(open(path))
    n = 0
    for k, v in p["ops"].items():
        if k.startswith("gemm"):
            v["seconds"] = seconds
            n += 1
    json.dump(p, open(out, "w"))
    print("%d GEMM keys set to %g s" % (n, seconds))


if __name__ == "__main__":
    a = sys.argv
    if a[1] == "valid":
        valid(a[2], int(a[3]), int(a[4]), int(a[5]), float(a[6]))
    elif a[1] == "deferred":
        deferred(a[2], a[3], int(a[4]))
    elif a[1] == "slow-gemms":
        slow_gemms(a[2], a[3], float(a[4]))
    else:
        fail("unknown check " + a[1])
