"""The self-fence (dispatcher/leases.py): a run whose lease could lapse before this dispatcher renews it is
stopped first, from the time its lease was last set, with no database round trip to wait for."""

from __future__ import annotations

from dispatcher.control import RunControl, StopReason
from dispatcher.leases import HeldRows, self_fence, self_fence_margin


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_margin_is_two_beats_and_at_least_a_quarter_of_the_lease() -> None:
    assert self_fence_margin(30, 2) == 7.5
    assert self_fence_margin(6, 2) == 4
    assert self_fence_margin(4, 0.5) == 1


def test_a_run_is_stopped_once_its_lease_was_set_longer_ago_than_the_lease_minus_the_margin() -> None:
    clock = Clock()
    held = HeldRows(clock)
    fresh, stale = RunControl(), RunControl()
    held.add(1, stale, lease_set_at=clock.now)
    held.add(2, fresh, lease_set_at=clock.now)
    clock.now += 21.0
    held.renewed([2], clock.now)  # row 2's beat got through; row 1's did not
    assert self_fence(held, lease_s=30, margin_s=7.5) == []
    clock.now += 1.5  # row 1: 22.5 s since its lease was set = 30 - 7.5
    assert self_fence(held, lease_s=30, margin_s=7.5) == [1]
    assert (stale.reason, fresh.reason) == (StopReason.LEASE_EXPIRING, None)
    assert self_fence(held, lease_s=30, margin_s=7.5) == []  # stopped once


def test_a_renewal_never_moves_a_lease_back_and_a_removed_row_is_forgotten() -> None:
    clock = Clock()
    held = HeldRows(clock)
    held.add(1, RunControl(), lease_set_at=clock.now)
    held.renewed([1], clock.now - 100)  # a beat that was sent before the claim cannot age the lease
    clock.now += 10
    assert self_fence(held, lease_s=30, margin_s=7.5) == []
    held.remove(1)
    held.renewed([1], clock.now)
    clock.now += 100
    assert self_fence(held, lease_s=30, margin_s=7.5) == []


def test_a_run_already_stopped_for_another_reason_keeps_that_reason() -> None:
    clock = Clock()
    held = HeldRows(clock)
    control = RunControl()
    control.stop(StopReason.CANCELLED)
    held.add(1, control, lease_set_at=clock.now)
    clock.now += 60
    assert self_fence(held, lease_s=30, margin_s=7.5) == []
    assert control.reason is StopReason.CANCELLED
