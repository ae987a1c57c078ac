"""A pool of Piston servers behind the sandbox port: ``PISTON_URL=http://a:2000=16,http://b:2000=32``.

Each run goes to the least busy server that is not cooling down: the fewest of this dispatcher's runs in
flight per slot (ties: the one picked longest ago). A server that fails a run transiently (refused or
dropped connection, 5xx, 429, no answer in time: ``SandboxTransient``) cools down, out of the choice, for
a jittered exponential backoff (core/backoff.py: ``PISTON_COOLDOWN_BASE_S`` doubling to
``PISTON_COOLDOWN_MAX_S``, reset by its next success), and the run goes to another server at once: the
pool raises ``SandboxFailover`` and the runner sends the run again from the start, without counting a try
(dispatcher/runner.py). Only when every server is cooling down does the fault go to the runner's
ordinary retries, and the next try goes to the server whose cool-down ends first.

Each server is a ``PistonClient`` of its own (its connections, its learned limits). A pool of one server
is not used: one server behaves exactly as before (dispatcher/worker.py). Logs (``server=``), ``/metrics``
(``agenthub_piston_server_*{server=…}``) and ``python -m dispatcher verify`` name the server.
"""

from __future__ import annotations

import functools
import itertools
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from core import metrics
from core.backoff import Backoff, Clock, Rand, Streak
from dispatcher.config import DispatcherConfig
from dispatcher.sandbox.piston.client import PistonClient, server_name
from dispatcher.sandbox.port import RunResult, Sandbox, SandboxFailover, SandboxRequest, SandboxTransient

log = structlog.get_logger("piston")


@dataclass
class Member:
    """One server of the pool, as the pool sees it."""

    name: str
    slots: int
    sandbox: Sandbox
    streak: Streak
    in_flight: int = 0
    cool_until: float = 0.0
    picked: int = 0  # when it was last picked (a sequence number)

    def load(self) -> float:
        return self.in_flight / self.slots


class PistonPool:
    """Several Piston servers as one sandbox; thread-safe."""

    def __init__(self, servers: Sequence[tuple[str, int, Sandbox]], *, cooldown: Backoff,
                 rand: Rand = random.random, clock: Clock = time.monotonic) -> None:
        if len(servers) < 2:
            raise ValueError("a pool needs at least two servers")
        self.clock = clock
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self.members = [Member(name, slots, sandbox, Streak(cooldown, rand=rand, clock=clock))
                        for name, slots, sandbox in servers]
        for m in self.members:
            metrics.PISTON_SERVER_RUNS.labels(server=m.name).set_function(functools.partial(self._in_flight, m))
            metrics.PISTON_SERVER_UP.labels(server=m.name).set_function(functools.partial(self._up, m))
            metrics.PISTON_SERVER_FAILURES.labels(server=m.name)  # present from the start: rate() needs the zero

    @staticmethod
    def _in_flight(member: Member) -> float:
        return float(member.in_flight)

    def _up(self, member: Member) -> float:
        return 1.0 if self.healthy(member) else 0.0

    def healthy(self, member: Member) -> bool:
        return member.cool_until <= self.clock()

    def _best(self, members: Sequence[Member]) -> Member:
        return min(members, key=lambda m: (m.load(), m.picked))

    def take(self) -> Member:
        """The server for the next run (its run counted in flight): the least busy healthy one, else the one
        whose cool-down ends first."""
        with self._lock:
            healthy = [m for m in self.members if self.healthy(m)]
            member = self._best(healthy) if healthy else min(self.members, key=lambda m: m.cool_until)
            member.in_flight += 1
            member.picked = next(self._seq)
            return member

    def give_back(self, member: Member, *, failed: SandboxTransient | None) -> Member | None:
        """The run on ``member`` is over; after a transient fault, cool it down and return the healthy server
        the run can go to now (None: none is)."""
        with self._lock:
            member.in_flight -= 1
            if failed is None:
                member.streak.succeeded()
                return None
            wait = member.streak.failed()
            member.cool_until = max(member.cool_until, self.clock() + wait)
            others = [m for m in self.members if m is not member and self.healthy(m)]
            nxt = self._best(others) if others else None
        metrics.PISTON_SERVER_FAILURES.labels(server=member.name).inc()
        log.warning("piston_server_cooling_down", server=member.name, cooldown_s=round(wait, 3), error=str(failed),
                    started=failed.started, next_server=nxt.name if nxt else None)
        return nxt

    def run(self, request: SandboxRequest) -> RunResult:
        member = self.take()
        try:
            result = member.sandbox.run(request)
        except SandboxTransient as exc:
            nxt = self.give_back(member, failed=exc)
            if nxt is None:
                raise
            raise SandboxFailover(f"Piston server {member.name} failed ({exc})", started=exc.started,
                                  next_server=nxt.name) from exc
        except BaseException:  # refused, an error of the run itself: says nothing of the server's health
            with self._lock:
                member.in_flight -= 1
            raise
        self.give_back(member, failed=None)
        return result


def piston_sandbox(cfg: DispatcherConfig) -> Sandbox:
    """The dispatcher's sandbox: a PistonClient for one server (exactly as before pools), a pool for several."""
    servers = cfg.piston_servers
    if len(servers) <= 1:
        return PistonClient(cfg.piston_url, max_output_chars=cfg.max_output_chars, pool_size=cfg.concurrency)
    members: list[tuple[str, int, Sandbox]] = [
        (server_name(s.url), s.slots,
         PistonClient(s.url, max_output_chars=cfg.max_output_chars, pool_size=min(cfg.concurrency, s.slots)))
        for s in servers
    ]
    return PistonPool(members, cooldown=Backoff(cfg.piston_cooldown_base_s, cfg.piston_cooldown_max_s, jitter=0.5))
