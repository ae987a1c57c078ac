"""Stage 8: the web process's SSE streams (issue 20), against the real ``python -m ingress``.

- idle: ONE web process (WEB_CONCURRENCY=1): the invoke endpoint's latency (8 clients) and the process's
  peak RSS, first alone, then while it holds ``streams`` open idle job streams (and again after a burst
  of connections that never finish their request head). Targets: RSS <= 250 MiB, invoke p99 <= 1.2x.
- latency: ``latency_streams`` job streams open; feed events appended with core.feed.insert_events (one
  transaction per event, as the dispatcher writes a delta batch) round-robin over their jobs; the time
  from just before the INSERT to the client parsing the event's ``data:`` (the issue's target, model
  chunk -> delta, also needs the dispatcher's relay: this measures the feed and the web's part of it).

``python -m bench.streams [--quick] [--server-cmd ...]`` runs it alone (an embedded Postgres of its own);
``--server-cmd`` serves the same app another way, to compare serving models (README, "Serving model").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench import seed
from bench.measure import PeakRss, summary_ms
from bench.stack import CLIENTS, Proc, _post_all, web_ready
from core import feed
from core.db import connect
from tests.integration.localpiston_proc import free_port

REPO = Path(__file__).resolve().parents[1]
_DATA = re.compile(rb"data: (\{[^\n]*\})\n")
HEADS_DEADLINE_S = 60.0  # an invoke phase that takes longer is recorded as failed (every request an error)


def start_web(url: str, rss: PeakRss | None, *, server_cmd: list[str] | None = None,
              env: dict[str, str] | None = None) -> tuple[Proc, str, int]:
    port = free_port()
    cmd = [c.replace("{port}", str(port)) for c in server_cmd] if server_cmd else [
        sys.executable, "-m", "ingress", "--host", "127.0.0.1", "--port", str(port)]
    # WEB_IDLE_TIMEOUT_S raised: the half-sent heads must stay open while the invoke endpoint is measured beside them.
    web = Proc(cmd, {"DATABASE_URL": url, "WEB_CONCURRENCY": "1", "SSE_KEEPALIVE_S": "15", "WEB_IDLE_TIMEOUT_S": "120",
                     **(env or {})})
    base = f"http://127.0.0.1:{port}"
    web_ready(web, base, rss)
    return web, base, port


async def open_stream(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An SSE request on a raw socket, read up to the stream's first line (so it is open server-side)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"retry:"), 60)
    if b" 200" not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"stream refused: {head[:200]!r}")
    return reader, writer


Held = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


async def open_streams(port: int, paths: list[str], at_once: int = 100) -> Held:
    out: Held = []
    for i in range(0, len(paths), at_once):
        out += await asyncio.gather(*(open_stream(port, p) for p in paths[i:i + at_once]))
    return out


async def half_sent_heads(port: int, n: int) -> list[asyncio.StreamWriter]:
    """``n`` connections that send the start of a request and never finish its head."""
    writers = []
    for _ in range(n):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api/agents/x/invoke HTTP/1.1\r\nHost: bench\r\nContent-Type: appl")
        writers.append(writer)
    await asyncio.gather(*(w.drain() for w in writers))
    return writers


def _close(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.close()


async def _settle(pid: int, *, below_pct: float = 5.0, timeout_s: float = 30.0) -> None:
    """Wait until the web process is idle (its streams opened or closed, their first reads done)."""
    proc = psutil.Process(pid)
    deadline = time.monotonic() + timeout_s
    proc.cpu_percent()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if sum(p.cpu_percent() for p in [proc, *proc.children(recursive=True)]) < below_pct:
            return


async def _bounded(invs: list[seed.Invocation], base: str) -> tuple[list[float], int, float]:
    try:
        return await asyncio.wait_for(_post_all(base, invs, CLIENTS), HEADS_DEADLINE_S)
    except TimeoutError:  # the model under test let streams or half-sent heads starve the invoke endpoint
        return [HEADS_DEADLINE_S], len(invs), HEADS_DEADLINE_S


def idle(url: str, *, streams: int, invokes: int, rounds: int = 3, server_cmd: list[str] | None = None) -> dict[str, Any]:
    """Rounds of (invokes alone; open ``streams`` idle streams; invokes beside them; close them), so drift
    on a shared machine (checkpoints, other work) falls on both sides alike; the last round adds as many
    half-sent request heads. Latencies are pooled per side."""
    per = invokes // rounds
    with psycopg.connect(url, autocommit=True) as conn:
        user_id, agent_id = seed.agent(conn)
        warm = seed.invocations(conn, user_id, agent_id, 200, tag="warm")
        alone = [seed.invocations(conn, user_id, agent_id, per, tag=f"alone{r}") for r in range(rounds)]
        beside = [seed.invocations(conn, user_id, agent_id, per, tag=f"beside{r}") for r in range(rounds)]
        heads = seed.invocations(conn, user_id, agent_id, per, tag="heads")
        idle_jobs = seed.invocations(conn, user_id, agent_id, streams, tag="idle")
        conn.execute("VACUUM ANALYZE")
    rss_alone, rss_streams = PeakRss(every_s=0.05).start(), PeakRss(every_s=0.05)
    web, base, port = start_web(url, rss_alone, server_cmd=server_cmd)
    paths = [f"/api/jobs/{i.job_id}/events" for i in idle_jobs]

    async def phases() -> dict[str, Any]:
        out: dict[str, Any] = {"alone": [], "beside": [], "alone_s": 0.0, "beside_s": 0.0, "alone_err": 0,
                               "beside_err": 0, "open_s": [], "closed_early": 0}
        await _post_all(base, warm, CLIENTS)  # connections, pools and plans warmed up
        for r in range(rounds):
            lat, err, el = await _bounded(alone[r], base)
            out["alone"] += lat
            out["alone_s"] += el
            out["alone_err"] += err
            if r == 0:  # memory before any stream was ever open
                rss_alone.stop()
                rss_streams.watch("web", web.pid)
                rss_streams.start()
            t0 = time.perf_counter()
            held = await open_streams(port, paths)
            out["open_s"].append(round(time.perf_counter() - t0, 2))
            try:
                await _settle(web.pid)  # opened AND idle: each stream's first read of the feed is done
                lat, err, el = await _bounded(beside[r], base)
                out["beside"] += lat
                out["beside_s"] += el
                out["beside_err"] += err
                if r == rounds - 1:  # as many half-sent request heads on top
                    pending = await half_sent_heads(port, streams)
                    await _settle(web.pid)  # held open (WEB_IDLE_TIMEOUT_S is raised for the bench), accepted, idle
                    out["heads"], out["heads_err"], _ = await _bounded(heads, base)
                    _close(pending)
                out["closed_early"] += sum(1 for reader, _ in held if reader.at_eof())
            finally:
                _close([w for _, w in held])
            await _settle(web.pid)  # the server has freed them
        return out

    try:
        r = asyncio.run(phases())
    finally:
        rss_streams.stop()
        web.stop()
    a, b, h = summary_ms(r["alone"]), summary_ms(r["beside"]), summary_ms(r["heads"])
    return {
        "streams": streams, "rounds": rounds, "opened_in_s": r["open_s"], "streams_closed_early": r["closed_early"],
        "without_streams": {**a, "per_s": round(len(r["alone"]) / r["alone_s"], 1), "errors": r["alone_err"],
                            "peak_rss_mib": rss_alone.by_role().get("web")},
        "with_streams": {**b, "per_s": round(len(r["beside"]) / r["beside_s"], 1), "errors": r["beside_err"],
                         "peak_rss_mib": rss_streams.by_role().get("web")},
        "with_streams_and_half_sent_heads": {**h, "half_sent_heads": streams, "errors": r["heads_err"]},
        "p99_ratio": round(b["p99_ms"] / a["p99_ms"], 2),
        "p99_ratio_with_heads": round(h["p99_ms"] / a["p99_ms"], 2),
    }


def latency(url: str, *, streams: int, events: int, per_stream_hz: float, server_cmd: list[str] | None = None) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        user_id, agent_id = seed.agent(conn)
        jobs = seed.invocations(conn, user_id, agent_id, streams, tag="live")
    web, _, port = start_web(url, None, server_cmd=server_cmd)
    received: list[float] = []
    commits: list[float] = []

    async def run() -> float:
        held = await open_streams(port, [f"/api/jobs/{j.job_id}/events" for j in jobs])
        done = asyncio.Event()

        async def read(reader: asyncio.StreamReader) -> None:
            buf = b""
            while not done.is_set():
                chunk = await reader.read(65536)
                if not chunk:
                    return
                now = time.perf_counter()
                buf += chunk
                for m in _DATA.finditer(buf):
                    sent = json.loads(m[1])["text"]
                    received.append(now - float(sent))
                    if len(received) >= events:
                        done.set()
                cut = buf.rfind(b"\n\n")
                if cut >= 0:
                    buf = buf[cut + 2:]

        readers = [asyncio.get_running_loop().create_task(read(r)) for r, _ in held]
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        # Producers in threads (psycopg's blocking driver, like the dispatcher): 4 connections.
        for part in await asyncio.gather(*(loop.run_in_executor(None, _produce, url, jobs[k::4], events // 4,
                                                                per_stream_hz) for k in range(4))):
            commits.extend(part)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        elapsed = time.perf_counter() - t0
        for t in readers:
            t.cancel()
        _close([w for _, w in held])
        return elapsed

    try:
        elapsed = asyncio.run(run())
    finally:
        web.stop()
    empty = {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}  # a model without the feed
    return {"streams": streams, "events_sent": events // 4 * 4, "events_received": len(received),
            "events_per_s": round(len(received) / elapsed, 1), **(summary_ms(received) if received else empty),
            "insert_and_commit": summary_ms(commits)}


def _produce(url: str, jobs: list[seed.Invocation], n: int, per_stream_hz: float) -> list[float]:
    """``n`` delta events over ``jobs`` round-robin, each in its own transaction, paced to ``per_stream_hz``."""
    conn = connect(url)
    commits: list[float] = []
    period = 1 / (per_stream_hz * len(jobs))
    next_at = time.perf_counter()
    try:
        for i in range(n):
            job = jobs[i % len(jobs)]
            now = time.perf_counter()
            if now < next_at:
                time.sleep(next_at - now)
            next_at += period
            t0 = time.perf_counter()
            event = feed.delta(job.job_id, job.session_id, message_id=f"{job.job_id}-m", index=i // len(jobs),
                               text=repr(t0))
            with conn.transaction():
                feed.insert_events(conn, [event])
            commits.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return commits


def run(url: str, quick: bool, server_cmd: list[str] | None = None) -> dict[str, Any]:
    idle_n = 1000
    out = {"idle": idle(url, streams=idle_n, invokes=600 if quick else 3000, server_cmd=server_cmd)}
    out["latency"] = latency(url, streams=100, events=1000 if quick else 6000, per_stream_hz=5, server_cmd=server_cmd)
    return out


def table_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    i, lat = r["idle"], r["latency"]
    a, b, h = i["without_streams"], i["with_streams"], i["with_streams_and_half_sent_heads"]
    return [
        (f"9 web peak RSS, {i['streams']:,} idle streams", f"{b['peak_rss_mib']} MiB", f"without: {a['peak_rss_mib']} MiB",
         "<= 250 MiB"),
        (f"9 invoke p99 beside {i['streams']:,} idle streams", f"p50 {b['p50_ms']} / p99 {b['p99_ms']} ms",
         f"without: p50 {a['p50_ms']} / p99 {a['p99_ms']} ms", f"{i['p99_ratio']:.2f}x  (<= 1.2x)"),
        ("9 ... and 1,000 half-sent request heads", f"p50 {h['p50_ms']} / p99 {h['p99_ms']} / max {h['max_ms']} ms",
         f"errors {h['errors']}",
         f"{i['p99_ratio_with_heads']:.2f}x"),
        (f"9 feed insert -> SSE client, {lat['streams']} streams", f"p50 {lat['p50_ms']} / p99 {lat['p99_ms']} ms",
         f"of which INSERT+commit p50 {lat['insert_and_commit']['p50_ms']} / p99 {lat['insert_and_commit']['p99_ms']} ms",
         "chunk->delta p50 <= 25, p99 <= 100 ms"),
    ]


def main(argv: list[str] | None = None) -> int:
    from bench.pgembed import EmbeddedPostgres
    from core.config import LogConfig
    from core.logging import configure

    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server-cmd", default=None,
                        help="serve the web another way; {port} is replaced (e.g. a uvicorn command line)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    configure(LogConfig(fmt="json", level="warning"))
    pg = EmbeddedPostgres().start()
    try:
        url = seed.migrated(pg.create_db("agenthub"))
        result = run(url, args.quick, shlex.split(args.server_cmd) if args.server_cmd else None)
    finally:
        pg.stop()
    result["server_cmd"] = args.server_cmd or "python -m ingress"
    result["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    for row in table_rows(result):
        print("  ".join(row))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
