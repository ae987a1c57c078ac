"""Start-up latency of localpiston: spawn → first 200 from GET /api/v2/runtimes → first execute.

Usage: .venv/bin/python bench/localpiston_startup.py [--runs 10]
Prints median / p90 and writes bench/results/localpiston_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "bench" / "results" / "localpiston_startup.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def one_run() -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "localpiston", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("localpiston exited during start-up")
            try:
                if requests.get(url + "/api/v2/runtimes", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.005)
        ready = time.perf_counter()
        body = {"language": "python", "version": "*", "files": [{"content": "print('hi')"}]}
        response = requests.post(url + "/api/v2/execute", json=body, timeout=30)
        assert response.status_code == 200 and response.json()["run"]["stdout"] == "hi\n", response.text
        first_exec = time.perf_counter()
        response = requests.post(url + "/api/v2/execute", json=body, timeout=30)
        warm_exec = time.perf_counter() - first_exec
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    return {
        "runtimes_ready_ms": (ready - started) * 1000,
        "first_execute_ms": (first_exec - started) * 1000,
        "first_execute_only_ms": (first_exec - ready) * 1000,
        "warm_execute_ms": warm_exec * 1000,
    }


def summarize(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median": round(statistics.median(ordered), 1),
        "p90": round(p90, 1),
        "min": round(ordered[0], 1),
        "max": round(ordered[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    summary = {key: summarize([run[key] for run in runs]) for key in runs[0]}
    result = {
        "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "summary_ms": summary,
        "raw_ms": [{k: round(v, 1) for k, v in run.items()} for run in runs],
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    for key, stats in summary.items():
        print(f"{key:24s} median {stats['median']:7.1f} ms   p90 {stats['p90']:7.1f} ms")
    print(f"wrote {RESULT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
