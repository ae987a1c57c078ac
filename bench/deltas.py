"""Stage 8b: a model chunk's trip to the browser, with every real process (issue 20's target).

fakegemini streams each answer in ``chunks`` pieces ``delay_ms`` apart (``:streamGenerateContent?alt=sse``) and
records when it wrote each one; ``streams`` invocations of an agent doing
``hub.send_message(hub.call_llm(..., stream=True))`` run at once (localpiston on the WebSocket transport, the real
dispatcher with as many slots, the real web process), and one raw SSE client per job reads
``/api/jobs/<jobId>/events``. A chunk's latency: from the stand-in writing it to the client parsing the ``delta``
that carries its last character (the dispatcher joins the chunks of ~25 ms into one delta). The clocks are the
same machine's wall clock.

Trip: stand-in → google-genai in the dispatcher → chunk reply line on the agent's stdin (WebSocket) → the agent's
delta line on its stdout → the relay's batcher → group commit (fence check + feed insert) → NOTIFY hub_feed after
the commit → the web's LISTEN connection → the job stream's read → the socket.

``python -m bench.deltas [--quick] [--out FILE]`` (an embedded Postgres of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

from bench import seed
from bench.measure import summary_ms
from bench.stack import PISTON_ENV, Proc, _agent_files, _wait_done, start_dispatcher
from bench.streams import open_streams, start_web
from tests.fakegemini_proc import FakeGemini
from tests.integration.localpiston_proc import LocalPiston

KEY = "AIzaBENCH-deltas"
AGENT = 'import hub\nhub.send_message(hub.call_llm("bench " + hub.get_job_id(), stream=True))\n'
# --source agent: the agent makes its chunks itself (no model), each one its wall-clock time: the agent -> client leg.
AGENT_SELF = """import time
import hub

def chunks():
    for _ in range({chunks}):
        time.sleep({delay_s})
        yield repr(time.time()) + " "

hub.send_message(chunks())
"""


class CpuSampler:
    """CPU seconds used by each named process and its descendants (agents come and go: each pid's last sample)."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.seen: dict[str, dict[int, float]] = {name: {} for name in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for name, pid in self.roots.items():
            try:
                root = psutil.Process(pid)
                if name == "postgres":  # the embedded server: its postmaster's and backends' time
                    procs = [root, *root.children(recursive=True)]
                elif pid == os.getpid():  # this process only: the servers are its children too
                    procs = [root]
                else:
                    procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    self.seen[name][p.pid] = t.user + t.system

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def start(self) -> CpuSampler:
        self._sample()
        self.base = {name: dict(v) for name, v in self.seen.items()}
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {name: round(sum(v - self.base[name].get(pid, 0.0) for pid, v in seen.items()), 2)
                for name, seen in self.seen.items()}


def _postgres() -> dict[str, int]:
    """The embedded Postgres's postmaster (a child of this process), if found."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if child.name().startswith("postgres"):
                return {"postgres": child.pid}
    return {}


def _events(buf: bytes) -> tuple[list[tuple[str, dict[str, Any]]], bytes]:
    """The complete SSE events in ``buf`` as (event, data), and what is left of it."""
    out: list[tuple[str, dict[str, Any]]] = []
    while b"\n\n" in buf:
        block, buf = buf.split(b"\n\n", 1)
        kind, data = "message", None
        for line in block.decode().split("\n"):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            out.append((kind, json.loads(data)))
    return out, buf


def run(url: str, *, streams: int, chunks: int, delay_ms: float, tmp: Path,
        profile: Path | None = None, source: str = "model") -> dict[str, Any]:
    code = AGENT if source == "model" else AGENT_SELF.format(chunks=chunks, delay_s=delay_ms / 1000)
    with psycopg.connect(url, autocommit=True) as conn:
        user_id, agent_id = seed.agent(conn, _agent_files(tmp, code))
        jobs = seed.invocations(conn, user_id, agent_id, streams, tag="deltas")
        warmups = seed.invocations(conn, user_id, agent_id, 3, tag="warmup")
    gemini = FakeGemini(KEY).start()
    requests.post(gemini.url + "/_control/stream", json={"chunks": chunks, "delay_ms": delay_ms},
                  timeout=5).raise_for_status()
    piston = LocalPiston({**PISTON_ENV, "PISTON_MAX_CONCURRENT_JOBS": str(streams + 8)}).start()
    web, base, port = start_web(url, None)
    dispatcher: Proc = start_dispatcher(url, piston.url, {
        "PISTON_TRANSPORT": "ws", "GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": gemini.url,
        "DISPATCHER_CONCURRENCY": str(streams), "DISPATCHER_BATCH_SIZE": "25", "AGENT_RUN_TIMEOUT_MS": "60000",
        "LOG_LEVEL": "warning"}, None)
    received: dict[str, list[tuple[float, str]]] = {j.job_id: [] for j in jobs}  # per job: (time, delta text)
    finals: dict[str, str] = {}
    ended: dict[str, float] = {}

    cpu = CpuSampler({"dispatcher": dispatcher.pid, "web": web.pid, "localpiston+agents": piston._proc.pid,  # type: ignore[union-attr]
                      "fakegemini": gemini._proc.pid, "bench client": os.getpid(),  # type: ignore[union-attr]
                      **_postgres()})

    spy: subprocess.Popen[bytes] | None = None

    # Warm up first (the dispatcher's imports, google-genai's client, localpiston's runtime): not measured.
    with requests.Session() as http:
        for inv in warmups:
            http.post(base + inv.path, json=inv.body(), timeout=10).raise_for_status()
    _wait_done(url, [inv.job_id for inv in warmups], 120)

    async def main() -> float:
        nonlocal spy
        held = await open_streams(port, [f"/api/jobs/{j.job_id}/events" for j in jobs])
        cpu.start()
        if profile is not None:  # py-spy on the dispatcher (GIL holder only: its Python CPU), collapsed stacks
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "-r", "200", "-f", "raw",
                                    "-o", str(profile), "-p", str(dispatcher.pid)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)

        async def read(job_id: str, reader: asyncio.StreamReader) -> None:
            buf = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                now = time.time()
                events, buf = _events(buf + chunk)
                for kind, data in events:
                    if kind == "delta":
                        received[job_id].append((now, data["text"]))
                    elif kind == "message":
                        finals[job_id] = data["content"]
                    elif kind == "status" and data["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                        ended[job_id] = now
                        return  # the job stream ends here (the connection stays open: keep-alive)

        readers = [asyncio.create_task(read(j.job_id, r)) for j, (r, _) in zip(jobs, held, strict=True)]
        t0 = time.perf_counter()
        with requests.Session() as http:  # all at once: Next.js posting 100 users' prompts
            for j in jobs:
                http.post(base + j.path, json=j.body(), timeout=10).raise_for_status()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*readers), 180)
        for _, w in held:
            w.close()
        return time.perf_counter() - t0

    cpu_s: dict[str, float] = {}

    try:
        elapsed = asyncio.run(main())
        cpu_s = cpu.stop()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        sent = {r["body"]["contents"][-1]["parts"][0]["text"].split()[-1]: r
                for r in gemini.requests(containing="bench ")}
    finally:
        dispatcher.stop()
        web.stop()
        piston.close()
        gemini.close()
    if source == "agent":
        return _agent_source(received, finals, streams=streams, chunks=chunks, delay_ms=delay_ms, cpu_s=cpu_s,
                             elapsed=elapsed)
    with psycopg.connect(url, autocommit=True) as conn:  # when each delta row was inserted (clock_timestamp())
        rows = conn.execute("SELECT job_id, extract(epoch FROM created_at)::float8 AS at FROM agent_hub.feed_event "
                            "WHERE kind = 'delta' ORDER BY id").fetchall()
    inserted: dict[str, list[float]] = {}
    for job_id, at in rows:
        inserted.setdefault(job_id, []).append(at)
    latencies: list[float] = []
    timed: list[tuple[float, float]] = []  # (chunk sent at, its latency)
    to_insert: list[float] = []
    insert_to_client: list[float] = []
    overlap: list[tuple[float, float]] = []
    broken = 0
    for j in jobs:
        record, got = sent.get(j.job_id), received[j.job_id]
        text = "".join(t for _, t in got)
        if record is None or not got or finals.get(j.job_id) != text:
            broken += 1
            continue
        pieces = _pieces(text, chunks)
        times = record["chunk_sent_at"]
        if len(pieces) != len(times):
            broken += 1
            continue
        ends = []  # for each delta, the character count up to its end
        total = 0
        for _, t in got:
            total += len(t)
            ends.append(total)
        upto = 0
        for piece, at in zip(pieces, times, strict=True):
            upto += len(piece)
            k = next(i for i, e in enumerate(ends) if e >= upto)
            latencies.append(got[k][0] - at)
            timed.append((at, got[k][0] - at))
            rows_at = inserted.get(j.job_id, [])
            if k < len(rows_at):
                to_insert.append(rows_at[k] - at)
                insert_to_client.append(got[k][0] - rows_at[k])
        overlap.append((times[0], times[-1]))
    starts, stops = sorted(a for a, _ in overlap), sorted(b for _, b in overlap)
    # Steady state: the chunks sent once every stream had started and before the first one ended (no agent
    # process starting or ending meanwhile), when there is such a window.
    steady = [lat for at, lat in timed if starts and starts[-1] <= at <= stops[0]]
    return {
        "streams": streams, "chunks_per_answer": chunks, "chunk_delay_ms": delay_ms,
        "chunks_measured": len(latencies), "answers_broken": broken,
        "deltas_received": sum(len(v) for v in received.values()),
        "max_streams_at_once": _max_overlap(overlap), "span_s": round(stops[-1] - starts[0], 2) if overlap else None,
        "cpu_s": cpu_s, "jobs_ended": len(ended), "elapsed_s": round(elapsed, 2),
        "chunk_to_delta": summary_ms(latencies) if latencies else None,
        "chunk_to_delta_all_streams_running": summary_ms(steady) if steady else None,
        "chunk_to_feed_insert": summary_ms(to_insert) if to_insert else None,
        "feed_insert_to_client": summary_ms(insert_to_client) if insert_to_client else None,
    }


def _agent_source(received: dict[str, list[tuple[float, str]]], finals: dict[str, str], *, streams: int, chunks: int,
                  delay_ms: float, cpu_s: dict[str, float], elapsed: float) -> dict[str, Any]:
    """--source agent: each chunk carries the time the agent made it."""
    latencies = [at - float(stamp) for got in received.values() for at, text in got for stamp in text.split()]
    broken = sum(1 for job_id, got in received.items() if finals.get(job_id) != "".join(t for _, t in got))
    return {"source": "agent", "streams": streams, "chunks_per_answer": chunks, "chunk_delay_ms": delay_ms,
            "answers_broken": broken, "deltas_received": sum(len(v) for v in received.values()), "cpu_s": cpu_s,
            "elapsed_s": round(elapsed, 2), "agent_chunk_to_delta": summary_ms(latencies) if latencies else None}


def _pieces(text: str, chunks: int) -> list[str]:
    from fakegemini.answers import split_text

    return split_text(text, chunks)


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    points = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    best = now = 0
    for _, step in points:
        now += step
        best = max(best, now)
    return best


def main(argv: list[str] | None = None) -> int:
    from bench.pgembed import EmbeddedPostgres
    from core.config import LogConfig
    from core.logging import configure

    parser = argparse.ArgumentParser(prog="python -m bench.deltas", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 streams instead of 100")
    parser.add_argument("--streams", type=int, default=None)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=200)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--source", choices=["model", "agent"], default="model",
                        help="model: fakegemini streams, the agent forwards (default); agent: the agent makes the chunks")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the dispatcher into this file (raw stacks)")
    args = parser.parse_args(argv)
    configure(LogConfig(fmt="json", level="warning"))
    pg = EmbeddedPostgres().start()
    try:
        url = seed.migrated(pg.create_db("agenthub"))
        with tempfile.TemporaryDirectory() as tmp:
            result = run(url, streams=args.streams or (20 if args.quick else 100), chunks=args.chunks,
                         delay_ms=args.delay_ms, tmp=Path(tmp), profile=args.profile,
                         source=args.source)
    finally:
        pg.stop()
    result["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
