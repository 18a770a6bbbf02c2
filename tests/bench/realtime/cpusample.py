#!/usr/bin/env python3
"""Samples CPU use per process group (by command name) every INTERVAL seconds until killed.

usage: cpusample.py OUT.jsonl [SERVER_PID] [INTERVAL=0.5]

Each line: {"t": CLOCK_MONOTONIC seconds, "dt": seconds, "cpu": {group: percent of one core},
"threads": {thread name of SERVER_PID: percent}}. Groups: beam.smp (RabbitMQ), postgres,
bench-realtime, loadgen, node, floor (floor.sh's relay), other. Times are CLOCK_MONOTONIC like
the generator's stamps, so compare.py can cut them to each fan-out window.
"""
import json, os, sys, time

out = open(sys.argv[1], "a", buffering=1)
server = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else 0
interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
HZ = os.sysconf("SC_CLK_TCK")
GROUPS = ("beam.smp", "postgres", "bench-realtime", "loadgen", "node", "floor")


def stat(path):
    try:
        s = open(path).read()
    except OSError:
        return None
    r = s.rfind(")")
    comm = s[s.find("(") + 1:r]
    f = s[r + 2:].split()
    # (command, utime + stime, start time): the start time tells a reused pid apart (a kernel
    # worker's comm changes as it works, so the comm cannot).
    return comm, int(f[11]) + int(f[12]), int(f[19])


def snapshot():
    procs, threads = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = stat(f"/proc/{d}/stat")
            if st:
                procs[int(d)] = st
    if server:
        try:
            for t in os.listdir(f"/proc/{server}/task"):
                st = stat(f"/proc/{server}/task/{t}/stat")
                if st:
                    threads[int(t)] = st
        except OSError:
            pass
    return time.monotonic(), procs, threads


def group(comm):
    for g in GROUPS:
        if comm.startswith(g[:15]):
            return g
    return "other"


prev = snapshot()
while True:
    time.sleep(interval)
    cur = snapshot()
    dt = cur[0] - prev[0]
    cpu, thr = {}, {}
    for pid, (comm, ticks, start) in cur[1].items():
        before = prev[1].get(pid)
        d = ticks - (before[1] if before and before[2] == start else 0)
        if d > 0:
            g = group(comm)
            cpu[g] = cpu.get(g, 0) + d / HZ / dt * 100
    for tid, (comm, ticks, _) in cur[2].items():
        before = prev[2].get(tid)
        d = ticks - (before[1] if before else 0)
        if d > 0:
            thr[comm] = thr.get(comm, 0) + d / HZ / dt * 100
    out.write(json.dumps({"t": cur[0], "dt": dt, "cpu": cpu, "threads": thr}) + "\n")
    prev = cur
