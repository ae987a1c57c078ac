"""``python -m bench [--quick]``: every stage side by side on one dedicated durable Postgres.

Prints a table and writes bench/results/bench.json (bench/results/bench-quick.json with --quick).
Absolute numbers on a shared 2-core machine are noise; the ratios measured in the same run count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import machinery, micro, seed, stack, streams
from bench.measure import PeakRss, machine
from bench.pgembed import EmbeddedPostgres
from core.config import LogConfig
from core.logging import configure

REPO = Path(__file__).resolve().parents[1]
STAGES = ("machinery", "wakeup", "ingress", "e2e", "saturation", "micro", "streams")


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"drain": 1000, "wake": 400, "poll": 60, "ingress": 600, "e2e": 12, "backlog": 16, "history": 20000}
    return {"drain": 10000, "wake": 2000, "poll": 1000, "ingress": 6000, "e2e": 200, "backlog": 40, "history": 200000}


def run(quick: bool, only: tuple[str, ...]) -> dict[str, Any]:
    n = _sizes(quick)
    pg = EmbeddedPostgres().start()
    tmp = Path(tempfile.mkdtemp(prefix="agenthub-bench-"))
    os.chmod(tmp, 0o755)
    rss = PeakRss().start()
    out: dict[str, Any] = {"quick": quick, "machine": machine(), "postgres": pg.settings(), "sizes": n}
    try:
        ours = seed.migrated(pg.create_db("agenthub"))
        pgq = ""
        if {"machinery", "wakeup"} & set(only):  # the only stages that need PgQueuer
            pgq = pg.create_db("pgqueuer")
            machinery.pgq_install(pgq)
        stages: dict[str, Callable[[], dict[str, Any]]] = {
            "machinery": lambda: _machinery(ours, pgq, n),
            "wakeup": lambda: _wakeup(ours, pgq, n),
            "ingress": lambda: stack.ingress(pg, ours, n["ingress"], rss, floor_s=2 if quick else 10),
            "e2e": lambda: {t: stack.e2e(ours, n["e2e"], rss, tmp, t) for t in ("ws", "execute")},
            "saturation": lambda: stack.saturation(ours, n["backlog"], rss, tmp),
            "micro": lambda: micro.run(ours, quick),
            "streams": lambda: streams.run(ours, quick),
        }
        for name in STAGES:
            if name not in only:
                continue
            _say(TITLES[name])
            try:
                out[name] = stages[name]()
            except Exception as exc:  # one failed stage must not lose the others' figures
                print(f"  {name} failed: {exc}", flush=True)
                out.setdefault("errors", {})[name] = str(exc)[-3000:]
    finally:
        out["peak_rss_mib"] = rss.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


TITLES = {
    "machinery": "1. queue machinery: no-op drain, ours vs PgQueuer",
    "wakeup": "2. wake-up latency: LISTEN, poll, PgQueuer",
    "ingress": "3. ingress vs the Postgres floor (8 clients)",
    "e2e": "4. end to end through localpiston",
    "saturation": "5. saturation: 8 slots, 1 s agents",
    "micro": "7. the claim's and stats' plans behind a long history; bundle build time",
    "streams": "8. SSE streams: 1,000 idle streams beside the invoke endpoint; feed insert -> SSE client",
}


def _machinery(ours: str, pgq: str, n: dict[str, int]) -> dict[str, Any]:
    theirs = machinery.pgq_drain(pgq, n["drain"])
    mine = machinery.ours_drain(ours, n["drain"], concurrency=10, batch=10, full=False)
    # As many in flight as PgQueuer's 5 consumers x batch 10: more slots, bigger shared commits.
    wide = machinery.ours_drain(ours, n["drain"], concurrency=50, batch=10, full=False)
    # The same drain behind a long history of finished rows (the outbox keeps them; migration 0004).
    aged = machinery.ours_drain(ours, n["drain"], concurrency=10, batch=10, full=False, history=n["history"])
    full = machinery.ours_drain(ours, n["drain"] // 2, concurrency=10, batch=10, full=True)
    floor = machinery.sql_floor(ours, n["drain"])  # the dispatcher's SQL alone: what Postgres allows this design
    theirs2 = machinery.pgq_drain(pgq, n["drain"])  # again, so drift on a shared machine shows
    best = max(theirs["per_s"], theirs2["per_s"])
    return {"pgqueuer": [theirs, theirs2], "ours": mine, "ours_50_slots": wide, "ours_with_history": aged,
            "ours_full_runner": full, "ours_sql_floor": floor, "ratio": round(mine["per_s"] / best, 3),
            "ratio_sql_floor": round(floor["per_s"] / best, 3),
            "ratio_50_slots": round(wide["per_s"] / best, 3), "ratio_full": round(full["per_s"] / best, 3)}


def _wakeup(ours: str, pgq: str, n: dict[str, int]) -> dict[str, Any]:
    listen = machinery.ours_wakeup(ours, n["wake"], listen=True, poll_s=2.0)
    theirs = machinery.pgq_wakeup(pgq, n["wake"])
    poll = machinery.ours_wakeup(ours, n["poll"], listen=False, poll_s=0.05)
    return {"ours_listen": listen, "pgqueuer": theirs, "ours_poll": poll}


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text} (load {os.getloadavg()[0]:.2f})", flush=True)


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    if "machinery" in r:
        m = r["machinery"]
        pgq = max(x["per_s"] for x in m["pgqueuer"])
        rows.append(("1 queue machinery (no-op)", f"{m['ours']['per_s']:.0f}/s", f"PgQueuer {pgq:.0f}/s",
                     f"{m['ratio']:.2f}x  (>= 1.0)"))
        rows.append(("1 ... 50 slots", f"{m['ours_50_slots']['per_s']:.0f}/s", f"PgQueuer {pgq:.0f}/s",
                     f"{m['ratio_50_slots']:.2f}x"))
        rows.append((f"1 ... behind {m['ours_with_history']['history_rows']:,} finished rows",
                     f"{m['ours_with_history']['per_s']:.0f}/s", "", ""))
        f = m["ours_sql_floor"]
        rows.append(("1 ... our SQL alone, 1 connection", f"{f['per_s']:.0f}/s",
                     f"{f['postgres_cpu_us_per_invocation']} us Postgres CPU/invocation", f"{m['ratio_sql_floor']:.2f}x"))
        rows.append(("1 full runner, no-op Piston", f"{m['ours_full_runner']['per_s']:.0f}/s", f"PgQueuer {pgq:.0f}/s",
                     f"{m['ratio_full']:.2f}x"))
    if "wakeup" in r:
        w = r["wakeup"]
        poll_label = f"2 wake-up, poll {w['ours_poll']['poll_interval_s']} s"
        for key, label in (("ours_listen", "2 wake-up, LISTEN"), ("ours_poll", poll_label)):
            x = w[key]
            rows.append((label, f"p50 {x['p50_ms']} / p95 {x['p95_ms']} / p99 {x['p99_ms']} ms",
                         f"PgQueuer p50 {w['pgqueuer']['p50_ms']} / p99 {w['pgqueuer']['p99_ms']} ms", ""))
    if "ingress" in r:
        i = r["ingress"]
        web = i["ingress"]
        rows.append(("3 ingress POST, 8 clients", f"{web['per_s']:.0f}/s p50 {web['p50_ms']} p99 {web['p99_ms']} ms",
                     f"pgbench insert {i['floor']['per_s']:.0f}/s", f"{i['ratio']:.2f}x  (>= 0.5)"))
        notify = i["floor_with_notify"]["per_s"]
        rows.append(("3 ... vs insert+NOTIFY floor", f"{web['per_s']:.0f}/s", f"pgbench insert+notify {notify:.0f}/s",
                     f"{i['ratio_to_notify_floor']:.2f}x"))
    if "e2e" in r:
        for t, e in r["e2e"].items():
            rows.append((f"4 service overhead ({t})", f"p50 {e['overhead']['p50_ms']} / p99 {e['overhead']['p99_ms']} ms",
                         f"Piston wall p50 {e['piston_wall']['p50_ms']} ms", "p50 <= 10 ms"))
            o = e["overhead_outside_piston_call"]
            rows.append((f"4 ... outside the Piston call ({t})", f"p50 {o['p50_ms']} / p99 {o['p99_ms']} ms", "", ""))
    if "saturation" in r:
        s = r["saturation"]
        rows.append(("5 all 8 slots busy (backlog)", f"{s['all_busy_fraction'] * 100:.1f}%",
                     f"after first start {s['all_busy_fraction_after_first_start'] * 100:.1f}%", ">= 95%"))
        rows.append(("5 ... all 8 Piston calls in flight", f"{s['all_calls_in_flight_fraction'] * 100:.1f}%",
                     f"after first call {s['all_calls_in_flight_fraction_after_first_start'] * 100:.1f}%", ""))
    if "micro" in r:
        p = r["micro"]["claim_plan"]
        scans = ", ".join(dict.fromkeys(s["node"] + (f" on {s['index']}" if s["index"] else "") for s in p["scans"]))
        rows.append((f"7 claim plan behind {p['finished_rows']:,} finished rows", f"{p['execution_ms']} ms",
                     f"at most {p['max_rows_removed_by_filter']} rows removed by a filter", scans))
        if "stats_plan" in r["micro"]:
            sp = r["micro"]["stats_plan"]
            rows.append((f"7 stats --agent, 1 h behind {sp['history_rows']:,} rows", f"{sp['execution_ms']} ms",
                         f"{sp['outbox_rows_read']:,} rows read for {sp['window_rows']:,} in the window",
                         ", ".join(sp["scans"])))
        for key in ("bundle_windowed", "bundle_ordinary"):
            b = r["micro"][key]
            rows.append((f"7 bundle build, {b['messages']:,} messages", f"median {b['median_ms']} ms (max {b['max_ms']})",
                         f"{b['kept']:,} kept in {b['max_body_bytes']:,} bytes", ""))
    if "streams" in r:
        rows += streams.table_rows(r["streams"])
    if r.get("peak_rss_mib"):
        rows.append(("6 peak RSS", ", ".join(f"{k} {v} MiB" for k, v in r["peak_rss_mib"].items()), "", ""))
    for name, error in r.get("errors", {}).items():
        rows.append((f"{name} FAILED", error.splitlines()[0][:100] if error else "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)] if rows else [0] * 4
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, about a minute")
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/bench[-quick].json)")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(only) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s): {', '.join(sorted(unknown))}")
    configure(LogConfig(fmt="json", level="warning"))
    started = time.monotonic()
    result = run(args.quick, only)
    result["seconds"] = round(time.monotonic() - started, 1)
    path = args.out or REPO / "bench" / "results" / ("bench-quick.json" if args.quick else "bench.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(table(result))
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
