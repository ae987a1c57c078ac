"""When a schedule is due: cron expressions (cronsim, evaluated in the schedule's zone) or fixed intervals.

Pure logic, no database: the store (dispatcher/schedule_store.py) keeps ``next_due_at`` and asks here for the
next one. Missed ticks are not replayed: the next due time is always the first tick after *now*, so a
dispatcher that was down for a day fires once on its return, not once per missed tick.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

_EVERY = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_EVERY_S = 5  # a shorter interval would fire faster than a dispatcher polls (DISPATCHER_POLL_INTERVAL_S)
MAX_EVERY_S = 366 * 86400


class ScheduleError(ValueError):
    """A schedule that cannot be accepted; the message says which part and why."""


@dataclass(frozen=True)
class Timing:
    """A cron expression in a zone, or a fixed interval in seconds (exactly one)."""

    cron: str | None = None
    tz: str = "UTC"
    every_s: int | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every_s is None):
            raise ScheduleError("give exactly one of --cron or --every")

    def next_after(self, after: datetime) -> datetime:
        """The first due time strictly after ``after`` (an aware datetime), as an aware UTC datetime."""
        if self.every_s is not None:
            return (after + timedelta(seconds=self.every_s)).astimezone(UTC)
        assert self.cron is not None
        zone = ZoneInfo(self.tz)
        # cronsim yields times at or after its start (minute resolution): start one second later.
        local = (after + timedelta(seconds=1)).astimezone(zone)
        return next(CronSim(self.cron, local)).astimezone(UTC)

    def describe(self) -> str:
        if self.every_s is not None:
            return f"every {format_interval(self.every_s)}"
        return f"cron {self.cron!r} ({self.tz})"


def parse_interval(text: str) -> int:
    """'30s', '10m', '2h', '1d' -> seconds, within [MIN_EVERY_S, MAX_EVERY_S]."""
    m = _EVERY.match(text)
    if not m:
        raise ScheduleError(f"--every: not an interval: {text!r} (use e.g. 30s, 10m, 2h, 1d)")
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if not MIN_EVERY_S <= seconds <= MAX_EVERY_S:
        raise ScheduleError(f"--every: {text!r} is outside {MIN_EVERY_S}s..366d")
    return seconds


def format_interval(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_timing(*, cron: str | None, tz: str | None, every: str | None) -> Timing:
    """The add command's --cron/--tz/--every, checked: a bad expression, zone or interval says which."""
    if every is not None:
        if cron is not None:
            raise ScheduleError("give exactly one of --cron or --every")
        if tz is not None:
            raise ScheduleError("--tz applies to --cron only")
        return Timing(every_s=parse_interval(every))
    if cron is None:
        raise ScheduleError("give exactly one of --cron or --every")
    zone = (tz or "UTC").strip()
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"--tz: unknown time zone {zone!r} (use an IANA name such as Europe/Riga)") from None
    expr = " ".join(cron.split())
    if len(expr.split(" ")) != 5:
        raise ScheduleError(f"--cron: {cron!r} must have 5 fields (minute hour day-of-month month day-of-week)")
    try:
        CronSim(expr, datetime.now(UTC).astimezone(ZoneInfo(zone)))
    except CronSimError as exc:
        raise ScheduleError(f"--cron: {cron!r} is not a valid cron expression ({exc})") from None
    timing = Timing(cron=expr, tz=zone)
    try:
        timing.next_after(datetime.now(UTC))
    except StopIteration:
        raise ScheduleError(f"--cron: {cron!r} never fires") from None
    return timing


def next_due(timing: Timing, *, due: datetime, now: datetime) -> datetime:
    """The due time after the one being fired (``due``), past ``now``: one catch-up run for any number of
    missed ticks. Intervals stay on their grid (due + k × interval), so they do not drift by the poll delay."""
    if timing.every_s is not None:
        missed = max(0, int((now - due).total_seconds() // timing.every_s))
        later = due + timedelta(seconds=timing.every_s * (missed + 1))
        return later.astimezone(UTC)
    return timing.next_after(max(due, now))
