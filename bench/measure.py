"""Percentiles, machine facts and a peak-RSS sampler shared by the benchmark stages."""

from __future__ import annotations

import contextlib
import os
import platform
import threading
from pathlib import Path

import psutil


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 2),
        "p95_ms": round(pct(ms, 95), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }


def machine() -> dict[str, object]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


class PeakRss:
    """Samples the RSS of named process trees every `every_s` seconds; keeps each tree's peak (MiB)."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.every_s = every_s
        self.pids: dict[str, int] = {}
        self.peak_mib: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    def watch(self, name: str, pid: int) -> None:
        self.pids[f"{name}#{pid}"] = pid

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(2)
        return self.by_role()

    def by_role(self) -> dict[str, float]:
        """The highest peak seen for each role (web, dispatcher), over every process of that role."""
        out: dict[str, float] = {}
        for key, mib in self.peak_mib.items():
            role = key.split("#", 1)[0]
            out[role] = max(out.get(role, 0.0), round(mib, 1))
        return out

    def _tree_rss(self, pid: int) -> float:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            for key, pid in list(self.pids.items()):
                mib = self._tree_rss(pid)
                if mib > self.peak_mib.get(key, 0.0):
                    self.peak_mib[key] = mib


def postgres_cpu_s(postmaster: psutil.Process) -> dict[str, float]:
    """CPU time of the server's processes, by kind: the client backends (the statements), the WAL writer,
    the checkpointer, autovacuum, the rest, and the processes that ended (the postmaster has reaped them:
    closed connections, autovacuum workers)."""
    reaped = postmaster.cpu_times()
    out: dict[str, float] = {"backends": 0.0, "walwriter": 0.0, "checkpointer": 0.0, "autovacuum": 0.0, "other": 0.0,
                             "ended": reaped.children_user + reaped.children_system}
    for p in [postmaster, *postmaster.children(recursive=True)]:
        try:
            t = p.cpu_times()
            title = " ".join(p.cmdline())
        except psutil.Error:
            continue
        kind = "other"
        for k in ("walwriter", "checkpointer", "autovacuum"):
            if k in title:
                kind = k
                break
        else:
            if "127.0.0.1(" in title or "[local]" in title:
                kind = "backends"
        out[kind] += t.user + t.system
    return out


class CpuMeter:
    """CPU spent during a stretch of work, per job: by this process (all its threads: the dispatcher or
    PgQueuer under test, and the bench's own polling, which sleeps) and by the Postgres server."""

    def __init__(self, url: str) -> None:
        import psycopg

        with psycopg.connect(url) as conn:  # the postmaster is the parent of any backend
            parent = psutil.Process(conn.info.backend_pid).parent()
        if parent is None:
            raise RuntimeError("no postmaster above the backend")
        self.postmaster = parent
        self.me = psutil.Process()
        self._pg0: dict[str, float] = {}
        self._me0 = 0.0

    def _mine(self) -> float:
        t = self.me.cpu_times()
        return float(t.user + t.system)

    def start(self) -> CpuMeter:
        self._pg0, self._me0 = postgres_cpu_s(self.postmaster), self._mine()
        return self

    def per_job_us(self, jobs: int) -> dict[str, int]:
        pg1, me1 = postgres_cpu_s(self.postmaster), self._mine()
        return {"process_cpu_us_per_job": round((me1 - self._me0) / jobs * 1e6),
                "postgres_cpu_us_per_job": round((sum(pg1.values()) - sum(self._pg0.values())) / jobs * 1e6)}
