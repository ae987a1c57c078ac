"""A pool of Piston servers (dispatcher/sandbox/pool.py), with fake servers and a fake clock: the least busy
healthy server gets the run, a transient fault cools its server down and sends the run to another at once
(SandboxFailover), and /metrics names each server."""

from __future__ import annotations

import threading

import pytest

from core import metrics
from core.backoff import Backoff
from dispatcher.config import DispatcherConfig
from dispatcher.sandbox.piston.client import PistonClient
from dispatcher.sandbox.pool import PistonPool, piston_sandbox
from dispatcher.sandbox.port import (
    RunLimits,
    RunResult,
    RunStatus,
    SandboxFailover,
    SandboxRefused,
    SandboxRequest,
    SandboxTransient,
    Transport,
)

REQUEST = SandboxRequest([{"name": "main.py", "content": ""}], RunLimits(run_timeout_ms=1000))
OK = RunResult(transport=Transport.WS, status=RunStatus.OK, code=0, signal=None, message=None, stdout="",
               stderr_tail="", wall_ms=1.0, cpu_ms=None, memory_bytes=None, started=True)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Server:
    """A fake server: answers OK, raises what it is told to, or holds its run until released."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = 0
        self.fail: Exception | None = None
        self.hold: threading.Event | None = None
        self.holding = threading.Event()

    def run(self, request: SandboxRequest) -> RunResult:
        self.runs += 1
        if self.fail is not None:
            raise self.fail
        if self.hold is not None:
            self.holding.set()
            self.hold.wait(10)
        return OK


def pool(*slots: int, clock: Clock | None = None) -> tuple[PistonPool, list[Server]]:
    servers = [Server(f"http://s{i}:2000") for i in range(len(slots))]
    p = PistonPool([(s.name, n, s) for s, n in zip(servers, slots, strict=True)],
                   cooldown=Backoff(base_s=2.0, max_s=60.0, jitter=0.0), clock=clock or Clock())
    return p, servers


def test_runs_go_to_the_least_busy_server_per_slot() -> None:
    p, (a, b) = pool(1, 3)
    held = [p.take() for _ in range(5)]
    # Busy = runs in flight per slot: a is full after one run, b after three; then the tie goes to the one picked
    # longest ago.
    assert [m.name for m in held] == [a.name, b.name, b.name, b.name, a.name]


def test_idle_servers_take_turns() -> None:
    p, (a, b) = pool(8, 8)
    for _ in range(4):
        p.run(REQUEST)
    assert (a.runs, b.runs) == (2, 2)


def test_a_transient_fault_cools_its_server_down_and_the_run_fails_over_at_once() -> None:
    clock = Clock()
    p, (a, b) = pool(8, 8, clock=clock)
    a.fail = SandboxTransient("connection refused")
    with pytest.raises(SandboxFailover) as caught:
        p.run(REQUEST)
    assert caught.value.next_server == b.name and caught.value.started is False
    for _ in range(3):  # while a cools down, every run goes to b
        assert p.run(REQUEST) is OK
    assert (a.runs, b.runs) == (1, 3)
    assert metrics.REGISTRY.get_sample_value("agenthub_piston_server_up", {"server": a.name}) == 0.0
    clock.now += 2.0  # the first cool-down (jitter 0: exactly base_s) is over: a gets runs again
    assert metrics.REGISTRY.get_sample_value("agenthub_piston_server_up", {"server": a.name}) == 1.0
    a.fail = None
    p.run(REQUEST)
    assert a.runs == 2


def test_cool_downs_grow_while_a_server_keeps_failing_and_reset_on_success() -> None:
    clock = Clock()
    p, _ = pool(8, 8, clock=clock)
    member = p.members[0]
    waits = []
    for _ in range(3):
        start = clock.now
        member.in_flight += 1
        p.give_back(member, failed=SandboxTransient("down"))
        waits.append(member.cool_until - start)
        clock.now = member.cool_until
    assert waits == [2.0, 4.0, 8.0]  # jitter 0 here: exactly the backoff's ceilings
    member.in_flight += 1
    p.give_back(member, failed=None)
    member.in_flight += 1
    p.give_back(member, failed=SandboxTransient("again"))
    assert member.cool_until - clock.now == 2.0


def test_with_every_server_cooling_down_the_fault_is_an_ordinary_transient_one() -> None:
    p, (a, b) = pool(8, 8)
    a.fail = b.fail = SandboxTransient("down")
    with pytest.raises(SandboxFailover):
        p.run(REQUEST)
    with pytest.raises(SandboxTransient) as caught:
        p.run(REQUEST)
    assert not isinstance(caught.value, SandboxFailover)


def test_with_every_server_cooling_down_the_next_run_goes_to_the_one_back_first() -> None:
    clock = Clock()
    p, (_a, b) = pool(8, 8, clock=clock)
    p.members[0].cool_until, p.members[1].cool_until = 150.0, 120.0
    assert p.take().name == b.name


def test_a_refusal_says_nothing_of_the_servers_health() -> None:
    p, (a, _b) = pool(8, 8)
    a.fail = SandboxRefused("python-9 runtime is unknown")
    with pytest.raises(SandboxRefused):
        p.run(REQUEST)
    assert all(p.healthy(m) and m.in_flight == 0 for m in p.members)


def test_runs_in_flight_per_server_are_in_the_metrics() -> None:
    p, (a, _b) = pool(8, 8)
    a.hold = threading.Event()
    t = threading.Thread(target=p.run, args=(REQUEST,))
    t.start()
    assert a.holding.wait(10)
    assert metrics.REGISTRY.get_sample_value("agenthub_piston_server_runs_in_flight", {"server": a.name}) == 1.0
    a.hold.set()
    t.join(10)
    assert metrics.REGISTRY.get_sample_value("agenthub_piston_server_runs_in_flight", {"server": a.name}) == 0.0


def test_one_server_is_a_plain_client_and_several_a_pool() -> None:
    base = {"DATABASE_URL": "postgresql://u@h/d"}
    one = piston_sandbox(DispatcherConfig.from_env({**base, "PISTON_URL": "http://p:1=16"}))
    assert isinstance(one, PistonClient)
    several = piston_sandbox(DispatcherConfig.from_env({**base, "PISTON_URL": "http://p:1=16,http://q:1"}))
    assert isinstance(several, PistonPool)
    assert [(m.name, m.slots) for m in several.members] == [("http://p:1", 16), ("http://q:1", 64)]
