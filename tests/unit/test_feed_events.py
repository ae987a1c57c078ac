"""core.feed's event builders: the SSE data shapes of issue 20, and the wake-up payloads (pure, no database)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core import feed


def test_each_builder_gives_its_kind_and_the_issue_data_shape_with_the_job_id() -> None:
    at = datetime(2026, 3, 4, 5, 6, 7, 891234, UTC)
    cases = [
        (feed.message("j", "s", message_id="m", role="agent", content="hi", timestamp=at), "message",
         {"jobId": "j", "messageId": "m", "role": "agent", "content": "hi", "timestamp": "2026-03-04T05:06:07.891Z"}),
        (feed.delta("j", "s", message_id="m", index=2, text="lo"), "delta",
         {"jobId": "j", "messageId": "m", "index": 2, "text": "lo"}),
        (feed.progress("j", "s", progress=50.0, status_message="half"), "progress",
         {"jobId": "j", "progress": 50, "statusMessage": "half"}),
        (feed.progress("j", None, progress=12.5), "progress", {"jobId": "j", "progress": 12.5, "statusMessage": None}),
        (feed.status("j", "s", status="FAILED", error_message="boom"), "status",
         {"jobId": "j", "status": "FAILED", "errorMessage": "boom"}),
        (feed.log("j", "s", level="warning", message="***"), "log", {"jobId": "j", "level": "warning", "message": "***"}),
    ]
    for event, kind, data in cases:
        assert (str(event.kind), event.payload) == (kind, data)
        assert json.loads(event.data()) == data and "\n" not in event.data()


def test_timestamps_are_utc_milliseconds_with_z_whatever_the_zone_or_a_naive_time() -> None:
    riga = timezone(timedelta(hours=2))
    assert feed.timestamp_text(datetime(2026, 1, 1, 2, 0, 0, 5000, riga)) == "2026-01-01T00:00:00.005Z"
    assert feed.timestamp_text(datetime(2026, 1, 1, 0, 0, 0)) == "2026-01-01T00:00:00.000Z"


def test_a_status_outside_the_hubs_job_statuses_or_a_negative_delta_index_is_refused() -> None:
    with pytest.raises(ValueError, match="Job status"):
        feed.status("j", "s", status="DONE")
    with pytest.raises(ValueError):
        feed.delta("j", "s", message_id="m", index=-1, text="x")


def test_wake_payloads_name_each_session_and_job_once_with_its_highest_id() -> None:
    events = [feed.log("a", "s", level="info", message="1"), feed.log("b", "s", level="info", message="2"),
              feed.log("a", "s", level="info", message="3"), feed.log("c", None, level="info", message="4")]
    got = [json.loads(p) for p in feed.wake_payloads(events, [10, 11, 12, 13])]
    assert got == [{"sessionId": "s", "jobId": "a", "id": 12}, {"sessionId": "s", "jobId": "b", "id": 11},
                   {"sessionId": None, "jobId": "c", "id": 13}]
