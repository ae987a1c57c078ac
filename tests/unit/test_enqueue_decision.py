"""ingress.enqueue.check: from the lookup row, repeat / insert / refuse (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ingress.admission import REQUIREMENTS, Rules, SessionPolicy, expected
from ingress.enqueue import PUBLIC_STATUS, Accepted, check
from ingress.errors import ApiError
from ingress.validation import InvokeRequest

REQ = InvokeRequest(agent_id="a1", job_id="j1", session_id="s1", user_id="u1", prompt="hello")
QUEUED_AT = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def lookup_row(**over: Any) -> dict[str, Any]:
    """The lookup row for a request whose agent, job and session all match and that was never queued."""
    row: dict[str, Any] = {
        "agent_exists": True,
        "job_id": "j1",
        "job_type": "AGENT_INVOCATION",
        "job_status": "QUEUED",
        "job_user_id": "u1",
        "job_agent_id": "a1",
        "job_session_id": "s1",
        "session_id": "s1",
        "session_user_id": "u1",
        "session_agent_id": "a1",
        "outbox_id": None,
        "outbox_status": None,
        "outbox_agent_id": None,
        "outbox_session_id": None,
        "outbox_user_id": None,
        "outbox_prompt": None,
        "outbox_created_at": None,
    }
    row.update(over)
    return row


def queued_row(**over: Any) -> dict[str, Any]:
    """The lookup row once this very request has been queued as outbox row 42."""
    row = lookup_row(
        outbox_id=42, outbox_status="pending", outbox_agent_id="a1", outbox_session_id="s1",
        outbox_user_id="u1", outbox_prompt="hello", outbox_created_at=QUEUED_AT,
    )
    row.update(over)
    return row


def refused(row: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as exc:
        check(REQ, row)
    return exc.value


def test_a_matching_never_queued_request_is_to_be_inserted() -> None:
    assert check(REQ, lookup_row()) is None


def test_an_identical_repeat_answers_the_existing_row() -> None:
    assert check(REQ, queued_row()) == Accepted(False, 42, "j1", "pending", QUEUED_AT)


def test_repeat_body_shows_the_public_status_and_the_original_time() -> None:
    accepted = check(REQ, queued_row())
    assert accepted is not None
    assert accepted.body() == {
        "jobId": "j1", "invocationId": 42, "status": "queued", "queuedAt": "2024-05-01T12:00:00.123456+00:00",
    }


@pytest.mark.parametrize("status", sorted(PUBLIC_STATUS))
def test_repeat_after_the_row_moved_on_still_answers_it_with_its_status(status: str) -> None:
    # The job has left QUEUED too by then; a repeat is still the same invocation, not an error.
    accepted = check(REQ, queued_row(outbox_status=status, job_status="PROCESSING"))
    assert accepted is not None
    assert accepted.body()["status"] == PUBLIC_STATUS[status]


def test_public_status_covers_every_outbox_status() -> None:
    assert set(PUBLIC_STATUS) == {"pending", "running", "succeeded", "failed", "cancelled"}
    assert PUBLIC_STATUS["pending"] == "queued"


@pytest.mark.parametrize(
    "column",
    ["outbox_agent_id", "outbox_session_id", "outbox_user_id", "outbox_prompt"],
)
def test_repeat_with_any_difference_is_409_job_already_queued(column: str) -> None:
    err = refused(queued_row(**{column: "something else"}))
    assert (err.status, err.code, err.field) == (409, "job_already_queued", "jobId")


def test_already_queued_wins_over_the_job_having_disappeared() -> None:
    # Next.js may delete the Job later; the outbox row still decides.
    assert check(REQ, queued_row(job_id=None, job_type=None, job_status=None)) == Accepted(False, 42, "j1", "pending", QUEUED_AT)


def test_unknown_agent_is_404_agent_not_found() -> None:
    err = refused(lookup_row(agent_exists=False))
    assert (err.status, err.code, err.field) == (404, "agent_not_found", "agentId")


def test_unknown_job_is_404_job_not_found() -> None:
    err = refused(lookup_row(job_id=None, job_type=None, job_status=None, job_user_id=None, job_agent_id=None,
                             job_session_id=None))
    assert (err.status, err.code, err.field) == (404, "job_not_found", "jobId")


def test_unknown_session_is_404_session_not_found() -> None:
    err = refused(lookup_row(session_id=None, session_user_id=None, session_agent_id=None))
    assert (err.status, err.code, err.field) == (404, "session_not_found", "sessionId")


def test_not_found_checks_run_agent_then_job_then_session() -> None:
    nothing = lookup_row(agent_exists=False, job_id=None, session_id=None)
    assert refused(nothing).code == "agent_not_found"
    assert refused({**nothing, "agent_exists": True}).code == "job_not_found"
    assert refused({**nothing, "agent_exists": True, "job_id": "j1"}).code == "session_not_found"


@pytest.mark.parametrize(
    "job_type", ["AGENT_CREATE", "AGENT_UPDATE", "MODEL_CREATE", "MODEL_UPDATE", "DATASET_CREATE", "DATASET_UPDATE"],
)
def test_job_of_another_type_is_409_job_wrong_type(job_type: str) -> None:
    err = refused(lookup_row(job_type=job_type))
    assert (err.status, err.code, err.field) == (409, "job_wrong_type", "jobId")
    assert job_type in err.message


@pytest.mark.parametrize(
    ("column", "field"),
    [("job_user_id", "userId"), ("job_agent_id", "agentId"), ("job_session_id", "sessionId")],
)
@pytest.mark.parametrize("value", ["other", None])
def test_job_belonging_elsewhere_is_409_job_mismatch_naming_the_field(column: str, field: str, value: str | None) -> None:
    err = refused(lookup_row(**{column: value}))
    assert (err.status, err.code, err.field) == (409, "job_mismatch", field)


@pytest.mark.parametrize(("column", "field"), [("session_user_id", "userId"), ("session_agent_id", "agentId")])
def test_session_of_another_user_or_agent_is_409_session_mismatch(column: str, field: str) -> None:
    err = refused(lookup_row(**{column: "other"}))
    assert (err.status, err.code, err.field) == (409, "session_mismatch", field)


@pytest.mark.parametrize("status", ["PROCESSING", "SUCCEEDED", "FAILED", "CANCELLED"])
def test_job_not_queued_is_409_job_not_queued(status: str) -> None:
    err = refused(lookup_row(job_status=status))
    assert (err.status, err.code, err.field) == (409, "job_not_queued", "jobId")
    assert status in err.message


def test_wrong_type_is_reported_before_a_mismatch_or_status() -> None:
    assert refused(lookup_row(job_type="AGENT_CREATE", job_user_id="x", job_status="FAILED")).code == "job_wrong_type"
    assert refused(lookup_row(job_user_id="x", job_status="FAILED")).code == "job_mismatch"
    assert refused(lookup_row(session_user_id="x", job_status="FAILED")).code == "session_mismatch"


def contains(row: dict[str, Any], wanted: dict[str, object]) -> bool:
    """What the enqueue statement asks of its lookup row: to_jsonb(look) @> expected."""
    return all(key in row and row[key] == value for key, value in wanted.items())


def test_the_statement_inserts_exactly_the_rows_check_would_insert() -> None:
    # The statement's condition is admission.expected(); check() walks the same REQUIREMENTS.
    assert check(REQ, lookup_row()) is None and contains(lookup_row(), expected(REQ))
    assert not contains(queued_row(), expected(REQ))  # a repeat is answered, never inserted again
    for requirement in REQUIREMENTS:
        row = lookup_row(**{requirement.column: "something else"})
        assert refused(row).code == requirement.code
        assert not contains(row, expected(REQ)), requirement.column


REJECT = Rules(SessionPolicy.REJECT)


def test_under_reject_a_busy_session_is_refused_with_409_session_busy() -> None:
    with pytest.raises(ApiError) as caught:
        check(REQ, lookup_row(session_busy=True), REJECT)
    assert (caught.value.status, caught.value.code, caught.value.field) == (409, "session_busy", "sessionId")
    assert check(REQ, lookup_row(session_busy=False), REJECT) is None
    assert expected(REQ, REJECT)["session_busy"] is False  # the statement inserts only when idle


@pytest.mark.parametrize("policy", [SessionPolicy.ENQUEUE, SessionPolicy.INTERRUPT])
def test_other_policies_queue_behind_a_busy_session(policy: SessionPolicy) -> None:
    assert check(REQ, lookup_row(session_busy=True), Rules(policy)) is None
    assert "session_busy" not in expected(REQ, Rules(policy))


def test_under_reject_a_repeat_of_a_queued_job_is_still_answered_as_a_repeat() -> None:
    # Its own row makes the session busy: the repeat is recognised before the policy is looked at.
    assert check(REQ, queued_row(session_busy=True), REJECT) == Accepted(False, 42, "j1", "pending", QUEUED_AT)


RATED = Rules(rate_limit=30, rate_window_s=60.0)


def test_over_the_rate_a_prompt_is_refused_with_429_rate_limited_and_retry_after() -> None:
    with pytest.raises(ApiError) as caught:
        check(REQ, lookup_row(rate_exceeded=True, rate_retry_after_s=17), RATED)
    err = caught.value
    assert (err.status, err.code, err.field, err.headers) == (429, "rate_limited", "userId", {"Retry-After": "17"})
    assert check(REQ, lookup_row(rate_exceeded=False, rate_retry_after_s=1), RATED) is None
    assert expected(REQ, RATED)["rate_exceeded"] is False


def test_without_a_rate_the_count_is_not_a_requirement() -> None:
    assert check(REQ, lookup_row(rate_exceeded=True), Rules()) is None
    assert "rate_exceeded" not in expected(REQ)


def test_a_busy_session_is_reported_before_the_rate() -> None:
    with pytest.raises(ApiError, match="queued or running"):
        check(REQ, lookup_row(session_busy=True, rate_exceeded=True, rate_retry_after_s=5),
              Rules(SessionPolicy.REJECT, rate_limit=1))
