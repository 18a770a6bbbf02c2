#!/usr/bin/env python3
"""Side-by-side summary of Socket.IO vs Showrunner from the generator's JSONL (median over runs).

usage: compare.py SOCKETIO.jsonl SHOWRUNNER.jsonl [SHOWRUNNER_CPU.jsonl] [SOCKETIO_CPU.jsonl]

"Clean" fan-out step: p99 <= 100 ms and not saturated (>= 95 % of target delivered, drained
within 1 s, nothing lost). Targets (the issue): deliveries/s >= 3x Socket.IO's (as measured in
this run), <= 8 KiB per connection, broadcast to all within 50 ms (p99 of the last client).
"""
import json, statistics as S, sys
from collections import defaultdict

P99_LIMIT_MS = 100.0


def load(path):
    try:
        return [json.loads(l) for l in open(path) if l.strip()]
    except OSError:
        return []


def med(vals):
    vals = [v for v in vals if v is not None]
    return S.median(vals) if vals else None


def figures(rows):
    runs = sorted({r["label"] for r in rows})
    per_run = []
    for label in runs:
        rs = [r for r in rows if r["label"] == label]
        cap = next((r for r in rs if r["phase"] == "capacity"), None)
        fo = [r for r in rs if r["phase"] == "fanout"]
        clean = [r for r in fo if r["p99_ms"] <= P99_LIMIT_MS and not r["saturated"]]
        best = max(clean, key=lambda r: r["delivered_dps"], default=None)
        bc = next((r for r in rs if r["phase"] == "broadcast"), None)
        end = next((r for r in rs if r["phase"] == "end"), None)
        per_run.append(dict(
            held=cap and cap["subscribed"], conns=cap and cap["conns"], errors=cap and cap["errors"],
            closed=end and end["closed"], kib=cap and cap["kb_per_conn"],
            rss0=cap and cap["rss0_kb"] / 1024, rss1=cap and cap["rss1_kb"] / 1024,
            dps=best and best["delivered_dps"], rate=best and best["rate"],
            p50=best and best["p50_ms"], p99=best and best["p99_ms"],
            scpu=best and best["server_cpu_pct"], gcpu=best and best["gen_cpu_pct"],
            pcpu=best and best["pub_cpu_pct"],
            b50=bc and bc["last_p50_ms"], b99=bc and bc["last_p99_ms"], binc=bc and bc["incomplete"],
            gramp=cap and cap["gen_cpu_s"], bgen=bc and bc["gen_cpu_s"] / max(bc["reps"], 1) * 1000,
            bsrv=bc and bc["server_cpu_s"] / max(bc["reps"], 1) * 1000,
        ))
    return {k: med([r[k] for r in per_run]) for k in (per_run[0] if per_run else {})}, len(runs)


def fmt(v, f="{:,.1f}"):
    return "-" if v is None else f.format(v)


sio_rows, sr_rows = load(sys.argv[1]), load(sys.argv[2])
sio, n_sio = figures(sio_rows)
sr, n_sr = figures(sr_rows)
g = lambda d, k: d.get(k)


def verdict(ok):
    return "-" if ok is None else ("PASS" if ok else "MISS")


rows = [
    ("connections held (subscribed / asked)", f"{fmt(g(sio,'held'),'{:,.0f}')} / {fmt(g(sio,'conns'),'{:,.0f}')}",
     f"{fmt(g(sr,'held'),'{:,.0f}')} / {fmt(g(sr,'conns'),'{:,.0f}')}", "all", 
     verdict(None if g(sr, 'held') is None else g(sr, 'held') >= g(sr, 'conns') and not g(sr, 'closed'))),
    ("closed by server during run", fmt(g(sio, 'closed'), '{:,.0f}'), fmt(g(sr, 'closed'), '{:,.0f}'), "0", ""),
    ("server RSS idle -> 10k connected, MiB", f"{fmt(g(sio,'rss0'))} -> {fmt(g(sio,'rss1'))}",
     f"{fmt(g(sr,'rss0'))} -> {fmt(g(sr,'rss1'))}", "", ""),
    ("server memory per connection, KiB", fmt(g(sio, 'kib')), fmt(g(sr, 'kib')), "<= 8",
     verdict(None if g(sr, 'kib') is None else g(sr, 'kib') <= 8)),
    ("clean deliveries/s (p99 <= 100 ms)", fmt(g(sio, 'dps'), '{:,.0f}'), fmt(g(sr, 'dps'), '{:,.0f}'),
     ">= 3x Socket.IO" + (f" = {3 * g(sio, 'dps'):,.0f}" if g(sio, 'dps') else ""),
     verdict(None if g(sr, 'dps') is None or g(sio, 'dps') is None else g(sr, 'dps') >= 3 * g(sio, 'dps'))),
    ("  at events/s (x100 clients)", fmt(g(sio, 'rate'), '{:,.0f}'), fmt(g(sr, 'rate'), '{:,.0f}'), "", ""),
    ("  latency p50 / p99 there, ms", f"{fmt(g(sio,'p50'),'{:.2f}')} / {fmt(g(sio,'p99'),'{:.2f}')}",
     f"{fmt(g(sr,'p50'),'{:.2f}')} / {fmt(g(sr,'p99'),'{:.2f}')}", "", ""),
    ("  server process CPU there, %", fmt(g(sio, 'scpu'), '{:.0f}'), fmt(g(sr, 'scpu'), '{:.0f}'), "", ""),
    ("  generator CPU there, % (publisher)", f"{fmt(g(sio,'gcpu'),'{:.0f}')} ({fmt(g(sio,'pcpu'),'{:.0f}')})",
     f"{fmt(g(sr,'gcpu'),'{:.0f}')} ({fmt(g(sr,'pcpu'),'{:.0f}')})", "", ""),
    ("broadcast to all, last client p50, ms", fmt(g(sio, 'b50')), fmt(g(sr, 'b50')), "", ""),
    ("broadcast to all, last client p99, ms", fmt(g(sio, 'b99')), fmt(g(sr, 'b99')), "<= 50",
     verdict(None if g(sr, 'b99') is None else g(sr, 'b99') <= 50 and not g(sr, 'binc'))),
    ("  incomplete broadcasts", fmt(g(sio, 'binc'), '{:.0f}'), fmt(g(sr, 'binc'), '{:.0f}'), "0", ""),
    ("  server / generator CPU per broadcast, ms", f"{fmt(g(sio,'bsrv'))} / {fmt(g(sio,'bgen'))}",
     f"{fmt(g(sr,'bsrv'))} / {fmt(g(sr,'bgen'))}", "", ""),
    ("generator CPU for the 10k ramp, s", fmt(g(sio, 'gramp'), '{:.2f}'), fmt(g(sr, 'gramp'), '{:.2f}'), "", ""),
]
print(f"## Realtime relay: Socket.IO vs Showrunner (median of {n_sio} / {n_sr} runs)\n")
print("| metric | Socket.IO | Showrunner | target (Showrunner) | |")
print("|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(str(c) for c in r) + " |")
print("\nShowrunner's latency is broker publish (stamp taken before the bridge's basic_publish) to client "
      "receipt: events exchange -> sequencer (activity worker, event_log in PostgreSQL) -> live exchange -> relay.")
print("Socket.IO's events come over its TCP stand-in feed (no broker).")


def fanout_table(rows, name):
    fo = [r for r in rows if r["phase"] == "fanout"]
    if not fo:
        return
    print(f"\n### {name}: fan-out steps\n")
    print("| src | events/s | delivered/s | p50 ms | p99 ms | max ms | server CPU % | gen CPU % | pub CPU % | drain ms | saturated |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in fo:
        print(f"| {r['source']} | {r['rate']:,.0f} | {r['delivered_dps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['max_ms']:.1f} | {r['server_cpu_pct']:.0f} | {r['gen_cpu_pct']:.0f} | {r['pub_cpu_pct']:.0f} | "
              f"{r['drain_ms']:,.0f} | {'yes' if r['saturated'] else ''} |")


fanout_table(sio_rows, "Socket.IO")
fanout_table(sr_rows, "Showrunner")


def cpu_table(rows, cpu_path, name):
    samples = load(cpu_path) if cpu_path else []
    fo = [r for r in rows if r["phase"] == "fanout" and "w0_us" in r]
    if not samples or not fo:
        return
    print(f"\n### {name}: where the CPU goes during each fan-out window (% of one core; machine has "
          f"{__import__('os').cpu_count()} cores)\n")
    groups = ["bench-realtime", "node", "beam.smp", "postgres", "loadgen", "other"]
    print("| events/s | " + " | ".join(groups) + " | total | top server threads |")
    print("|---|" + "---|" * (len(groups) + 2))
    for r in fo:
        w0, w1 = r["w0_us"] / 1e6, r["w1_us"] / 1e6
        inside = [s for s in samples if w0 <= s["t"] - s["dt"] and s["t"] <= w1 + 0.01]
        if not inside:
            continue
        tot = sum(s["dt"] for s in inside)
        avg = {k: sum(s["cpu"].get(k, 0) * s["dt"] for s in inside) / tot for k in groups}
        thr = defaultdict(float)
        for s in inside:
            for k, v in s.get("threads", {}).items():
                thr[k] += v * s["dt"] / tot
        top = ", ".join(f"{k} {v:.0f}" for k, v in sorted(thr.items(), key=lambda kv: -kv[1])[:4])
        print(f"| {r['rate']:,.0f} | " + " | ".join(f"{avg[k]:.0f}" for k in groups) +
              f" | {sum(avg.values()):.0f} | {top} |")


cpu_table(sr_rows, sys.argv[3] if len(sys.argv) > 3 else None, "Showrunner")
cpu_table(sio_rows, sys.argv[4] if len(sys.argv) > 4 else None, "Socket.IO")
