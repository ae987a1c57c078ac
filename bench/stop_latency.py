"""How soon a stopped run's Piston slot is free (issue 16, item 4): stop decided → the next run has the slot.

A localpiston with ONE slot runs a hub box that sleeps for a minute; a second box (it only sends a message) is
queued behind it. Then the first run's ``RunControl.stop`` is called, as the heartbeat does for a cancelled
Job. Measured from that call, per round:
- ``cancel_to_next_started_ms``: until the queued run's first output arrives (its process has the slot);
- ``cancel_to_stopped_run_returned_ms``: until the stopped run's ``sandbox.run`` returns (the dispatcher's
  slot is free: the row is written as cancelled then);
- ``cancel_to_next_done_ms``: until the queued run has finished.
``--baseline`` adds one round without the cancel line (what happened before: the slot held until the
stopped agent's own end; there its sleep is only 5 s, to keep the round short).

Usage: .venv/bin/python -m bench.stop_latency [--rounds 20] [--baseline]
Prints median / p90 / max and writes bench/results/stop_latency.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from dispatcher.bundle import AgentSource, build_files
from dispatcher.control import RunControl, StopReason
from dispatcher.protocol import encode_control
from dispatcher.sandbox.piston.client import PistonClient
from dispatcher.sandbox.port import RunLimits, RunResult, SandboxRequest, StdinWriter, Transport
from tests.integration.localpiston_proc import start_localpiston

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "bench" / "results" / "stop_latency.json"
LIMITS = RunLimits(run_timeout_ms=120_000)


class Run:
    """A hub box run in a thread, with the time of its first output and of its end."""

    def __init__(self, client: PistonClient, code: str, control: RunControl, *, cancel_line: bool = True) -> None:
        nonce = secrets.token_hex(8)
        ctx = {"version": 1, "nonce": nonce, "transport": "ws", "agent": {"id": "a", "name": "a", "version": "1"},
               "job_id": "j", "session_id": None, "user_id": "u", "prompt": "p", "env_vars": {}, "user_vars": {},
               "chat_history": [], "history_cut": 0}
        files = build_files(ctx, [AgentSource("main.py", code)]).files
        self.first_output: float | None = None
        self.ended: float | None = None
        self.result: RunResult | None = None
        self.output = threading.Event()
        self.request = SandboxRequest(files, LIMITS, transport=Transport.WS, on_stdout=self._chunk,
                                      should_stop=control.should_stop, on_stop=control.on_stop,
                                      stop_stdin=encode_control(nonce) if cancel_line else "")
        self.thread = threading.Thread(target=self._run, args=(client,), daemon=True)
        self.thread.start()

    def _chunk(self, chunk: str, stdin: StdinWriter) -> None:
        if self.first_output is None:
            self.first_output = time.perf_counter()
            self.output.set()

    def _run(self, client: PistonClient) -> None:
        self.result = client.run(self.request)
        self.ended = time.perf_counter()


def one_round(client: PistonClient, *, sleep_s: int, cancel_line: bool) -> dict[str, float]:
    control = RunControl()
    first = Run(client, f"import time, hub\nhub.send_message('started')\ntime.sleep({sleep_s})\n", control,
                cancel_line=cancel_line)
    if not first.output.wait(30):
        raise RuntimeError("the first run never started")
    queued = Run(client, "import hub\nhub.send_message('next')\n", RunControl())
    time.sleep(0.3)  # let the second run's init reach the server and queue behind the first
    stopped_at = time.perf_counter()
    control.stop(StopReason.CANCELLED)
    first.thread.join(sleep_s + 60)
    queued.thread.join(sleep_s + 60)
    assert first.ended is not None and queued.first_output is not None and queued.ended is not None
    return {
        "cancel_to_next_started_ms": (queued.first_output - stopped_at) * 1000,
        "cancel_to_stopped_run_returned_ms": (first.ended - stopped_at) * 1000,
        "cancel_to_next_done_ms": (queued.ended - stopped_at) * 1000,
    }


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 1),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
            "min": round(ordered[0], 1), "max": round(ordered[-1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--baseline", action="store_true", help="one round without the cancel line (5 s agent)")
    args = parser.parse_args()
    limit = str(LIMITS.run_timeout_ms)
    with start_localpiston({"PISTON_MAX_CONCURRENT_JOBS": "1", "PISTON_RUN_TIMEOUT": limit,
                            "PISTON_RUN_CPU_TIME": limit}) as piston:
        client = PistonClient(piston.url)
        rounds = [one_round(client, sleep_s=60, cancel_line=True) for _ in range(args.rounds)]
        baseline = one_round(client, sleep_s=5, cancel_line=False) if args.baseline else None
    report: dict[str, Any] = {
        "rounds": args.rounds,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "summary_ms": {key: summary([r[key] for r in rounds]) for key in rounds[0]},
        "baseline_without_cancel_line_ms": baseline,
    }
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    for key, stats in report["summary_ms"].items():
        print(f"{key:38} median {stats['median']:8.1f}  p90 {stats['p90']:8.1f}  max {stats['max']:8.1f}")
    if baseline is not None:
        print("without the cancel line (agent sleeping 5 s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in baseline.items()))
    print(f"written to {RESULT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
