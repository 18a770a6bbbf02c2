#!/usr/bin/env python3
"""Side-by-side summary of Socket.IO vs Showrunner from the generator's JSONL (median over runs).

usage: compare.py SOCKETIO.jsonl SHOWRUNNER.jsonl [SHOWRUNNER_CPU.jsonl] [SOCKETIO_CPU.jsonl]

"Clean" fan-out step: p99 <= 100 ms and not saturated (>= 95 % of target delivered, drained
within 1 s, nothing lost). Targets (issue 17): clean deliveries/s >= 3x Socket.IO's (as measured
in this run); broadcast to 10,000 with the relay's own fan-out p99 <= 20 ms (its /metrics
histogram: arrival at the relay -> frame written to the last socket) and the last client's p99
under Socket.IO's; <= 6 KiB per idle connection. CPU per delivery is process CPU over the
window divided by the deliveries in it (the generator's beside the server's).
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
    rows = [r for r in rows if r["phase"] != "loadavg"]
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
        last = fo[-1] if fo else None
        # The step that ended the ramp (p99 past the limit, or deliveries behind), if any.
        over = last if last and (last["saturated"] or last["p99_ms"] > P99_LIMIT_MS) else None
        per_delivery = lambda r, k: r and r[k] / 100 * 1e6 / max(r["delivered_dps"], 1)
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
            sus=per_delivery(best, "server_cpu_pct"), gus=per_delivery(best, "gen_cpu_pct"),
            rl50=best and best.get("relay_last_p50_ms"), rl99=best and best.get("relay_last_p99_ms"),
            rs99=best and best.get("relay_socket_p99_ms"),
            brl50=bc and bc.get("relay_last_p50_ms"), brl99=bc and bc.get("relay_last_p99_ms"),
            orate=over and over["rate"], odps=over and over["delivered_dps"], op99=over and over["p99_ms"],
            oscpu=over and over["server_cpu_pct"], ogcpu=over and over["gen_cpu_pct"],
            ol99=over and over.get("relay_last_p99_ms"),
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
    ("server memory per connection, KiB", fmt(g(sio, 'kib')), fmt(g(sr, 'kib')), "<= 6",
     verdict(None if g(sr, 'kib') is None else g(sr, 'kib') <= 6)),
    ("clean deliveries/s (p99 <= 100 ms)", fmt(g(sio, 'dps'), '{:,.0f}'), fmt(g(sr, 'dps'), '{:,.0f}'),
     ">= 3x Socket.IO" + (f" = {3 * g(sio, 'dps'):,.0f}" if g(sio, 'dps') else ""),
     verdict(None if g(sr, 'dps') is None or g(sio, 'dps') is None else g(sr, 'dps') >= 3 * g(sio, 'dps'))),
    ("  at events/s (x100 clients)", fmt(g(sio, 'rate'), '{:,.0f}'), fmt(g(sr, 'rate'), '{:,.0f}'), "", ""),
    ("  latency p50 / p99 there, ms", f"{fmt(g(sio,'p50'),'{:.2f}')} / {fmt(g(sio,'p99'),'{:.2f}')}",
     f"{fmt(g(sr,'p50'),'{:.2f}')} / {fmt(g(sr,'p99'),'{:.2f}')}", "", ""),
    ("  server process CPU there, %", fmt(g(sio, 'scpu'), '{:.0f}'), fmt(g(sr, 'scpu'), '{:.0f}'), "", ""),
    ("  generator CPU there, % (publisher)", f"{fmt(g(sio,'gcpu'),'{:.0f}')} ({fmt(g(sio,'pcpu'),'{:.0f}')})",
     f"{fmt(g(sr,'gcpu'),'{:.0f}')} ({fmt(g(sr,'pcpu'),'{:.0f}')})", "", ""),
    ("  CPU per delivery there, server / generator, us", f"{fmt(g(sio,'sus'))} / {fmt(g(sio,'gus'))}",
     f"{fmt(g(sr,'sus'))} / {fmt(g(sr,'gus'))}", "", ""),
    ("  relay fan-out there (server side), last socket p50 / p99, ms", "-",
     f"{fmt(g(sr,'rl50'),'{:.2f}')} / {fmt(g(sr,'rl99'),'{:.2f}')} (per socket p99 {fmt(g(sr,'rs99'),'{:.2f}')})", "", ""),
    ("step that ended the ramp: events/s -> delivered/s", f"{fmt(g(sio,'orate'),'{:,.0f}')} -> {fmt(g(sio,'odps'),'{:,.0f}')}",
     f"{fmt(g(sr,'orate'),'{:,.0f}')} -> {fmt(g(sr,'odps'),'{:,.0f}')}", "", ""),
    ("  p99 there, ms; server / generator CPU %", f"{fmt(g(sio,'op99'),'{:,.0f}')}; {fmt(g(sio,'oscpu'),'{:.0f}')} / {fmt(g(sio,'ogcpu'),'{:.0f}')}",
     f"{fmt(g(sr,'op99'),'{:,.0f}')}; {fmt(g(sr,'oscpu'),'{:.0f}')} / {fmt(g(sr,'ogcpu'),'{:.0f}')} (relay fan-out p99 {fmt(g(sr,'ol99'),'{:.1f}')} ms)", "", ""),
    ("broadcast to all, last client p50, ms", fmt(g(sio, 'b50')), fmt(g(sr, 'b50')), "", ""),
    ("broadcast to all, last client p99, ms", fmt(g(sio, 'b99')), fmt(g(sr, 'b99')), "< Socket.IO's",
     verdict(None if g(sr, 'b99') is None or g(sio, 'b99') is None else g(sr, 'b99') < g(sio, 'b99') and not g(sr, 'binc'))),
    ("broadcast, relay fan-out to the last socket p50 / p99, ms (server side)", "-",
     f"{fmt(g(sr,'brl50'),'{:.2f}')} / {fmt(g(sr,'brl99'),'{:.2f}')}", "p99 <= 20",
     verdict(None if g(sr, 'brl99') is None else g(sr, 'brl99') <= 20)),
    ("  incomplete broadcasts", fmt(g(sio, 'binc'), '{:.0f}'), fmt(g(sr, 'binc'), '{:.0f}'), "0", ""),
    ("  server / generator CPU per broadcast, ms", f"{fmt(g(sio,'bsrv'))} / {fmt(g(sio,'bgen'))}",
     f"{fmt(g(sr,'bsrv'))} / {fmt(g(sr,'bgen'))}", "", ""),
    ("generator CPU for the 10k ramp, s", fmt(g(sio, 'gramp'), '{:.2f}'), fmt(g(sr, 'gramp'), '{:.2f}'), "", ""),
]
print(f"## Realtime relay: Socket.IO vs Showrunner (median of {n_sio} / {n_sr} runs)\n")
for name, rows_ in (("Socket.IO", sio_rows), ("Showrunner", sr_rows)):
    loads = [r for r in rows_ if r["phase"] == "loadavg"]
    if loads:
        pin = loads[0].get("pin")
        print(f"- {name}: load average " + ", ".join(f"{r['when']} {r['load1']} {r['load5']} {r['load15']}" for r in loads)
              + (f"; generator:server pinned to CPUs {pin}" if pin else ""))
print()
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
    print("| src | events/s | delivered/s | p50 ms | p99 ms | max ms | relay fan-out p50 / p99 ms | server CPU % | gen CPU % | pub CPU % | server / gen us per delivery | drain ms | saturated |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in fo:
        relay = "-" if r.get("relay_last_p99_ms") is None else f"{r['relay_last_p50_ms']:.2f} / {r['relay_last_p99_ms']:.2f}"
        per = lambda k: r[k] / 100 * 1e6 / max(r["delivered_dps"], 1)
        print(f"| {r['source']} | {r['rate']:,.0f} | {r['delivered_dps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['max_ms']:.1f} | {relay} | {r['server_cpu_pct']:.0f} | {r['gen_cpu_pct']:.0f} | {r['pub_cpu_pct']:.0f} | "
              f"{per('server_cpu_pct'):.1f} / {per('gen_cpu_pct'):.1f} | {r['drain_ms']:,.0f} | {'yes' if r['saturated'] else ''} |")


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
