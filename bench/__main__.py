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

from bench import anchor, machinery, micro, scaleout, seed, stack, streams
from bench.measure import PeakRss, machine
from bench.pgembed import EmbeddedPostgres
from core.config import LogConfig
from core.logging import configure

REPO = Path(__file__).resolve().parents[1]
STAGES = ("machinery", "wakeup", "ingress", "e2e", "saturation", "micro", "scaleout", "streams")


def _sizes(quick: bool) -> dict[str, int]:
    # drain: each of stage 1's drains; rounds: stage 1's interleaved rounds (ours / PgQueuer), medians of these
    if quick:
        return {"drain": 500, "rounds": 1, "wake": 400, "poll": 60, "ingress": 600, "e2e": 12, "backlog": 16,
                "history": 20000, "scale": 300, "scale_rounds": 1}
    return {"drain": 5000, "rounds": 3, "wake": 2000, "poll": 1000, "ingress": 6000, "e2e": 200, "backlog": 40,
            "history": 200000, "scale": 2000, "scale_rounds": 3}


def run(quick: bool, only: tuple[str, ...]) -> dict[str, Any]:
    n = _sizes(quick)
    pg = EmbeddedPostgres().start()
    tmp = Path(tempfile.mkdtemp(prefix="agenthub-bench-"))
    os.chmod(tmp, 0o755)
    rss = PeakRss().start()
    out: dict[str, Any] = {"quick": quick, "machine": machine(), "postgres": pg.settings(), "sizes": n}
    try:
        ours = seed.migrated(pg.create_db("agenthub"))
        if {"machinery", "wakeup"} & set(only):  # the only stages that need PgQueuer
            machinery.pgq_install(ours)  # in the hub's own database, beside the Prisma tables (the fair anchor)
        stages: dict[str, Callable[[], dict[str, Any]]] = {
            "machinery": lambda: _machinery(ours, n),
            "wakeup": lambda: _wakeup(ours, ours, n),
            "ingress": lambda: stack.ingress(pg, ours, n["ingress"], rss, floor_s=2 if quick else 10),
            "e2e": lambda: {t: stack.e2e(ours, n["e2e"], rss, tmp, t) for t in ("ws", "execute")},
            "saturation": lambda: stack.saturation(ours, n["backlog"], rss, tmp),
            "micro": lambda: micro.run(ours, quick),
            "scaleout": lambda: scaleout.run(ours, pg.postmaster_pid, n["scale"], rounds=n["scale_rounds"]),
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
    "machinery": "1. queue machinery: ours vs PgQueuer doing the hub's writes (interleaved rounds)",
    "wakeup": "2. wake-up latency: LISTEN, poll, PgQueuer",
    "ingress": "3. ingress vs the Postgres floor (8 clients)",
    "e2e": "4. end to end through localpiston",
    "saturation": "5. saturation: 8 slots, 1 s agents",
    "micro": "7. the claim's and stats' plans behind a long history; bundle build time",
    "scaleout": "8. scale-out: 1, 2, 4 dispatcher processes draining one backlog",
    "streams": "9. SSE streams: 1,000 idle streams beside the invoke endpoint; feed insert -> SSE client",
}


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (of an odd number of rounds; the lower middle of an even one)."""
    return sorted(runs, key=lambda r: r["per_s"])[(len(runs) - 1) // 2]


# Stage 1's pairs: ours and the fair anchor (PgQueuer in the hub's database doing the same hub writes,
# bench/anchor.py) at the same number in flight.
PAIRS: dict[str, tuple[int, bool]] = {"noop_10": (10, False), "noop_50": (50, False), "full_10": (10, True)}


def _machinery(url: str, n: dict[str, int]) -> dict[str, Any]:
    size, rounds = n["drain"], n["rounds"]
    ours_runs: dict[str, list[dict[str, Any]]] = {k: [] for k in PAIRS}
    theirs_runs: dict[str, list[dict[str, Any]]] = {k: [] for k in PAIRS}
    noop: list[dict[str, Any]] = []
    no_feed: dict[str, dict[str, Any]] = {}  # the anchor without the feed's writes (session 3's form), round 1 only
    # Rounds interleave ours and theirs, and swap who goes first each round, so a change in the shared
    # machine's load hits both sides alike.
    for r in range(rounds):
        for key, (slots, full) in PAIRS.items():
            for side in (("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")):
                if side == "ours":
                    ours_runs[key].append(machinery.ours_drain(url, size, concurrency=slots, batch=10, full=full))
                else:
                    theirs_runs[key].append(anchor.drain(url, size, in_flight=slots, context=full))
            if r == 0:
                no_feed[key] = anchor.drain(url, size, in_flight=slots, context=full, feed=False)
        noop.append(machinery.pgq_drain(url, size))  # PgQueuer draining no-op jobs: context only
    fair: dict[str, Any] = {}
    for key in PAIRS:
        o, t = _median(ours_runs[key]), _median(theirs_runs[key])
        paired = [round(a["per_s"] / b["per_s"], 3) for a, b in zip(ours_runs[key], theirs_runs[key], strict=True)]
        fair[key] = {"ours": o, "pgqueuer_hub_writes": t,
                     # the headline: the median of each round's ratio (ours and theirs side by side in one round)
                     "ratio": sorted(paired)[(len(paired) - 1) // 2], "ratio_rounds": paired,
                     "ratio_of_medians": round(o["per_s"] / t["per_s"], 3),
                     "ours_per_s_rounds": [x["per_s"] for x in ours_runs[key]],
                     "pgqueuer_per_s_rounds": [x["per_s"] for x in theirs_runs[key]],
                     # context: the anchor without the feed's rows (one drain, round 1)
                     "pgqueuer_hub_writes_no_feed": no_feed[key],
                     "ratio_to_no_feed_round1": round(ours_runs[key][0]["per_s"] / no_feed[key]["per_s"], 3)}
    # The same drain behind a long history of finished rows (the outbox keeps them; migration 0004).
    aged = machinery.ours_drain(url, size, concurrency=10, batch=10, full=False, history=n["history"])
    floor = machinery.sql_floor(url, size)  # the dispatcher's SQL alone: what Postgres allows this design
    best_noop = _median(noop)["per_s"]
    return {
        "rounds": rounds, "fair": fair, "pgqueuer_noop": noop, "ours_with_history": aged, "ours_sql_floor": floor,
        # context: against PgQueuer draining no-op jobs (its own benchmark's shape), the old headline
        "ratio_to_noop_pgqueuer": {key: round(fair[key]["ours"]["per_s"] / best_noop, 3) for key in PAIRS}
        | {"sql_floor": round(floor["per_s"] / best_noop, 3)},
    }


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
        f = m["fair"]
        labels = {"noop_10": "1 queue machinery, no-op, 10 in flight", "noop_50": "1 ... 50 in flight",
                  "full_10": "1 full runner, no-op Piston, 10"}
        for key, label in labels.items():
            theirs = "PgQueuer + hub writes + feed" + (" + context read" if key == "full_10" else "")
            rounds = "/".join(f"{x:.2f}" for x in f[key]["ratio_rounds"])
            rows.append((label, f"{f[key]['ours']['per_s']:.0f}/s", f"{theirs} {f[key]['pgqueuer_hub_writes']['per_s']:.0f}/s",
                         f"{f[key]['ratio']:.2f}x  (>= 1.0; rounds {rounds}; medians {f[key]['ratio_of_medians']:.2f}x)"))
        cpu = "; ".join(f"{key} {f[key]['ours']['process_cpu_us_per_job']}+{f[key]['ours']['postgres_cpu_us_per_job']}"
                        f" vs {f[key]['pgqueuer_hub_writes']['process_cpu_us_per_job']}"
                        f"+{f[key]['pgqueuer_hub_writes']['postgres_cpu_us_per_job']}" for key in labels)
        rows.append(("1 ... CPU us/invocation, process+Postgres", "ours vs PgQueuer + hub writes", cpu, ""))
        nf = "; ".join(f"{key} {f[key]['pgqueuer_hub_writes_no_feed']['per_s']:.0f}/s "
                       f"(ours {f[key]['ratio_to_no_feed_round1']:.2f}x)" for key in labels)
        rows.append(("1 ... context: the anchor without feed rows", "round 1", nf, ""))
        noop = sorted(x["per_s"] for x in m["pgqueuer_noop"])[(len(m["pgqueuer_noop"]) - 1) // 2]
        rn = m["ratio_to_noop_pgqueuer"]
        rows.append(("1 ... context: PgQueuer no-op jobs", f"{noop:.0f}/s", "ours 10 / 50 / full to it",
                     f"{rn['noop_10']:.2f}x / {rn['noop_50']:.2f}x / {rn['full_10']:.2f}x"))
        rows.append((f"1 ... behind {m['ours_with_history']['history_rows']:,} finished rows",
                     f"{m['ours_with_history']['per_s']:.0f}/s", "", ""))
        fl = m["ours_sql_floor"]
        rows.append(("1 ... our SQL alone, 1 connection", f"{fl['per_s']:.0f}/s",
                     f"{fl['postgres_cpu_us_per_invocation']} us Postgres CPU/invocation",
                     f"{fl['per_s'] / f['noop_50']['pgqueuer_hub_writes']['per_s']:.2f}x of PgQueuer + hub writes (50)"))
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
    if "scaleout" in r:
        so = r["scaleout"]
        for c, x in so["by_processes"].items():
            chk = x["check"]
            rows.append((f"8 scale-out, {c} dispatcher process(es) x {x['slots_per_process']} slots",
                         f"{x['per_s']:.0f}/s", f"Postgres {x['postgres_cpu_us_per_invocation']} + dispatchers "
                         f"{x['dispatcher_cpu_us_per_invocation']} us CPU/invocation; "
                         f"machine {x['machine_busy_cores']} cores busy",
                         f"claims per row max {chk['max_claims_per_row']}, by process {chk['claims_by_process']}"))
        mo = so["model"]
        rows.append(("8 ... model", f"ceiling here {mo['ceiling_here_per_s']}/s",
                     f"{mo['per_postgres_core_per_s']}/s per Postgres core, "
                     f"{mo['dispatcher_cores_per_postgres_core']} dispatcher cores each",
                     f"2 vs 1: {so['ratio_2_to_1']}x; no row ran twice: {so['no_row_ran_twice']}"))
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
