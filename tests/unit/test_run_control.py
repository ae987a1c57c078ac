"""RunControl (dispatcher/control.py): stop() is the one way to stop a run; it calls the run's stop listeners at
once, in the stopping thread (the ws adapter's sends the hub's cancel line), and a call_agent child stops with
its caller."""

from __future__ import annotations

from dispatcher.control import RunControl, StopReason


def test_stop_calls_each_listener_once_with_the_first_reason_kept() -> None:
    control = RunControl()
    calls: list[str] = []
    control.on_stop(lambda: calls.append("a"))
    control.on_stop(lambda: calls.append("b"))
    control.stop(StopReason.CANCELLED)
    control.stop(StopReason.SHUTDOWN)
    assert calls == ["a", "b"]
    assert control.reason is StopReason.CANCELLED


def test_a_listener_added_after_the_stop_is_called_at_once_and_an_unsubscribed_one_never() -> None:
    control = RunControl()
    calls: list[str] = []
    unsubscribe = control.on_stop(lambda: calls.append("gone"))
    unsubscribe()
    control.stop(StopReason.LEASE_LOST)
    control.on_stop(lambda: calls.append("late"))
    assert calls == ["late"]


def test_a_broken_listener_does_not_keep_the_others_from_running() -> None:
    control = RunControl()
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    control.on_stop(broken)
    control.on_stop(lambda: calls.append("ok"))
    control.stop(StopReason.CANCELLED)
    assert calls == ["ok"]


def test_a_childs_listeners_run_when_its_caller_is_stopped_with_the_callers_reason() -> None:
    caller = RunControl()
    child = caller.child()
    calls: list[str] = []
    child.on_stop(lambda: calls.append("child stopped"))
    caller.stop(StopReason.SHUTDOWN)
    assert calls == ["child stopped"]  # at once: not only when the child's thread next polls should_stop
    assert child.reason is StopReason.SHUTDOWN


def test_a_child_stopped_on_its_own_leaves_its_caller_running() -> None:
    caller = RunControl()
    child = caller.child()
    child.stop(StopReason.CANCELLED)
    assert caller.reason is None and not caller.should_stop()
