#!/usr/bin/env python3
"""Figures of floor.sh's runs: per system and run, then the median over runs.

usage: floorsum.py RESULTS_DIR SYSTEM...   (reads SYSTEM.jsonl and SYSTEM-cpu.jsonl)

"Clean" step as in compare.py: p99 <= 100 ms and not saturated. "Busy elsewhere" is the CPU
(% of one core) that neither the relay nor the generator (incl. its publisher) used during the
step's window, from cpusample.py, as the window's average / its busiest 0.5 s sample: a peak
above ~30 % means another job shared the machine in that window (its p99 is suspect) and the
run should be repeated.
"""
import json, os, statistics as S, sys

P99_LIMIT_MS = 100.0
SERVER_GROUP = {"floor": "floor", "ws": "node", "sio": "node"}


def load(path):
    try:
        return [json.loads(l) for l in open(path) if l.strip()]
    except OSError:
        return []


def window_samples(samples, r):
    w0, w1 = r["w0_us"] / 1e6, r["w1_us"] / 1e6
    return [s for s in samples if w0 <= s["t"] - s["dt"] and s["t"] <= w1 + 0.01]


def elsewhere(cpu, system):
    # A system named floor-<variant> (another FLOOR_ARGS run kept apart) is still the floor process.
    server = SERVER_GROUP.get(system) or ("floor" if system.startswith("floor") else system)
    return sum(v for k, v in cpu.items() if k not in (server, "loadgen"))


def busy_elsewhere(samples, r, system):
    """(average, peak) CPU of everything but the relay and the generator in r's window."""
    inside = window_samples(samples, r)
    tot = sum(s["dt"] for s in inside)
    if not tot:
        return None, None
    each = [elsewhere(s["cpu"], system) for s in inside]
    return sum(e * s["dt"] for e, s in zip(each, inside)) / tot, max(each)


def fmt(v, f="{:,.0f}"):
    return "-" if v is None else f.format(v)


out_dir, systems = sys.argv[1], sys.argv[2:]
medians = {}
for system in systems:
    rows = load(os.path.join(out_dir, f"{system}.jsonl"))
    samples = load(os.path.join(out_dir, f"{system}-cpu.jsonl"))
    per_run = []
    for label in sorted({r["label"] for r in rows}):
        rs = [r for r in rows if r["label"] == label]
        fo = [r for r in rs if r["phase"] == "fanout"]
        bc = next((r for r in rs if r["phase"] == "broadcast"), None)
        cap = next((r for r in rs if r["phase"] == "capacity"), None)
        print(f"\n### {label}: {cap and cap['subscribed']} subscribed, fan-out steps\n")
        print("| events/s | delivered/s | p50 ms | p99 ms | server CPU % | gen CPU % | pub CPU % "
              "| server us/delivery | gen us/delivery | busy elsewhere % | |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in fo:
            r["elsewhere"], r["peak"] = busy_elsewhere(samples, r, system)
            d = max(r["delivered_dps"], 1)
            flag = "SATURATED" if r["saturated"] else ("p99 > 100" if r["p99_ms"] > P99_LIMIT_MS else "clean")
            print(f"| {r['rate']:,.0f} | {r['delivered_dps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.1f} | "
                  f"{r['server_cpu_pct']:.0f} | {r['gen_cpu_pct']:.0f} | {r['pub_cpu_pct']:.0f} | "
                  f"{r['server_cpu_pct'] * 1e4 / d:.1f} | {r['gen_cpu_pct'] * 1e4 / d:.1f} | "
                  f"{fmt(r['elsewhere'])} / {fmt(r['peak'])} | {flag} |")
        clean = [r for r in fo if r["p99_ms"] <= P99_LIMIT_MS and not r["saturated"]]
        best = max(clean, key=lambda r: r["delivered_dps"], default=None)
        unsat = [r for r in fo if not r["saturated"]]
        top = max(unsat, key=lambda r: r["delivered_dps"], default=None)
        sat = next((r for r in fo if r["saturated"]), None)
        if bc:
            print(f"\nbroadcast x{bc['reps']} to {bc['clients']}: last client p50 {bc['last_p50_ms']:.1f} ms, "
                  f"p99 {bc['last_p99_ms']:.1f} ms, incomplete {bc['incomplete']}; per broadcast server CPU "
                  f"{bc['server_cpu_s'] / bc['reps'] * 1e3:.1f} ms, generator CPU {bc['gen_cpu_s'] / bc['reps'] * 1e3:.1f} ms")
        per_run.append(dict(
            clean_dps=best and best["delivered_dps"], clean_rate=best and best["rate"],
            clean_p99=best and best["p99_ms"], clean_scpu=best and best["server_cpu_pct"],
            clean_gcpu=best and best["gen_cpu_pct"], top_dps=top and top["delivered_dps"],
            top_rate=top and top["rate"], top_p99=top and top["p99_ms"], sat_rate=sat and sat["rate"],
            b50=bc and bc["last_p50_ms"], b99=bc and bc["last_p99_ms"],
            bsrv=bc and bc["server_cpu_s"] / bc["reps"] * 1e3, bgen=bc and bc["gen_cpu_s"] / bc["reps"] * 1e3,
            busy=max((r["peak"] for r in fo if r.get("peak") is not None), default=None),
        ))
    if per_run:
        medians[system] = ({k: S.median([r[k] for r in per_run if r[k] is not None] or [0]) if any(
            r[k] is not None for r in per_run) else None for k in per_run[0]}, per_run)

print("\n## Summary (median over runs; each run's value in brackets)\n")
print("| metric | " + " | ".join(medians) + " |")
print("|---|" + "---|" * len(medians))
ROWS = [
    ("clean deliveries/s (p99 <= 100 ms)", "clean_dps", "{:,.0f}"),
    ("  at events/s", "clean_rate", "{:,.0f}"),
    ("  p99 there, ms", "clean_p99", "{:.1f}"),
    ("  server / generator CPU there, %", ("clean_scpu", "clean_gcpu"), "{:.0f}"),
    ("highest unsaturated delivered/s", "top_dps", "{:,.0f}"),
    ("  at events/s (p99 ms)", ("top_rate", "top_p99"), "{:,.0f}"),
    ("first saturated events/s", "sat_rate", "{:,.0f}"),
    ("broadcast last client p50, ms", "b50", "{:.1f}"),
    ("broadcast last client p99, ms", "b99", "{:.1f}"),
    ("server / generator CPU per broadcast, ms", ("bsrv", "bgen"), "{:.0f}"),
    ("busiest 0.5 s elsewhere in any window, % of a core", "busy", "{:.0f}"),
]
for name, key, f in ROWS:
    cells = []
    for system, (med, runs) in medians.items():
        keys = key if isinstance(key, tuple) else (key,)
        m = " / ".join(fmt(med[k], f) for k in keys)
        each = ", ".join(" / ".join(fmt(r[k], f) for k in keys) for r in runs)
        cells.append(f"{m} [{each}]")
    print(f"| {name} | " + " | ".join(cells) + " |")
