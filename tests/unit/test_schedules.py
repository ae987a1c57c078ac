"""When schedules are due: intervals on their grid, cron in a zone, one catch-up run, clear refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.schedules import ScheduleError, Timing, format_interval, next_due, parse_interval, parse_timing

T0 = datetime(2026, 3, 28, 23, 59, 30, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), (" 5s ", 5)])
def test_parse_interval_reads_each_unit(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "10x", "-5s", "1.5m", "4s", "400d"])
def test_parse_interval_refuses_what_is_not_a_sane_interval(text: str) -> None:
    with pytest.raises(ScheduleError, match="--every"):
        parse_interval(text)


def test_format_interval_uses_the_largest_whole_unit() -> None:
    assert [format_interval(s) for s in (45, 120, 7200, 86400, 90)] == ["45s", "2m", "2h", "1d", "90s"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "0 9 * * *", "tz": None, "every": "10s"}, "exactly one of --cron or --every"),
        ({"cron": None, "tz": None, "every": None}, "exactly one of --cron or --every"),
        ({"cron": None, "tz": "UTC", "every": "10s"}, "--tz applies to --cron only"),
        ({"cron": "0 9 * *", "tz": None, "every": None}, "must have 5 fields"),
        ({"cron": "0 25 * * *", "tz": None, "every": None}, "not a valid cron expression"),
        ({"cron": "0 9 * * XYZ", "tz": None, "every": None}, "not a valid cron expression"),
        ({"cron": "0 9 * * *", "tz": "Mars/Olympus", "every": None}, "unknown time zone 'Mars/Olympus'"),
        ({"cron": "0 0 30 2 *", "tz": None, "every": None}, "not a valid cron expression.*day-of-month"),
    ],
)
def test_parse_timing_refuses_a_bad_expression_zone_or_interval_saying_which(kwargs: dict, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_timing(**kwargs)


def test_a_cron_schedule_is_evaluated_in_its_zone() -> None:
    timing = parse_timing(cron="0 9 * * *", tz="America/New_York", every=None)
    # 9:00 in New York on 2026-03-29 (EDT, UTC-4) is 13:00 UTC.
    assert timing.next_after(T0) == datetime(2026, 3, 29, 13, 0, tzinfo=UTC)


def test_a_cron_schedule_keeps_its_local_time_across_a_dst_change() -> None:
    timing = parse_timing(cron="30 5 * * *", tz="Europe/Riga", every=None)
    # Riga moves from UTC+2 to UTC+3 on 2026-03-29: 05:30 local is 03:30 UTC the day before, 02:30 UTC after.
    first = timing.next_after(datetime(2026, 3, 28, 0, 0, tzinfo=UTC))
    assert first == datetime(2026, 3, 28, 3, 30, tzinfo=UTC)
    assert timing.next_after(first) == datetime(2026, 3, 29, 2, 30, tzinfo=UTC)


def test_next_after_is_strictly_after_even_on_a_tick() -> None:
    timing = Timing(cron="*/5 * * * *")
    tick = datetime(2026, 1, 1, 10, 5, tzinfo=UTC)
    assert timing.next_after(tick) == tick + timedelta(minutes=5)


def test_an_interval_keeps_its_grid_and_does_not_drift_by_the_firing_delay() -> None:
    timing = Timing(every_s=10)
    due = T0
    assert next_due(timing, due=due, now=due + timedelta(seconds=1.7)) == due + timedelta(seconds=10)


def test_after_downtime_an_interval_fires_once_and_its_next_due_time_is_the_next_grid_tick() -> None:
    timing = Timing(every_s=10)
    now = T0 + timedelta(hours=1, seconds=3)  # 360 ticks were missed
    later = next_due(timing, due=T0, now=now)
    assert later == T0 + timedelta(hours=1, seconds=10)
    assert later > now


def test_after_downtime_a_cron_schedule_fires_once_and_then_waits_for_its_next_tick() -> None:
    timing = Timing(cron="0 * * * *")
    due = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    now = datetime(2026, 1, 1, 9, 12, tzinfo=UTC)
    assert next_due(timing, due=due, now=now) == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def test_describe_says_what_list_shows() -> None:
    assert Timing(every_s=600).describe() == "every 10m"
    assert Timing(cron="0 9 * * 1-5", tz="Europe/Riga").describe() == "cron '0 9 * * 1-5' (Europe/Riga)"
