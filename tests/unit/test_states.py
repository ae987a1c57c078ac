"""The state machine's pure rules: what a claim does for each Job status, backoff, outcome checks."""

from __future__ import annotations

import pytest

from dispatcher.outcome import Disposition, Outcome, claim_outcome_for_job
from dispatcher.states import JOB_STATUS_FOR, JobStatus, OutboxStatus, retry_delay_s


@pytest.mark.parametrize("status", ["QUEUED", "PROCESSING"])
def test_claimed_job_that_is_queued_or_processing_is_ours_to_run(status: str) -> None:
    assert claim_outcome_for_job(status) is None


def test_claimed_job_that_was_cancelled_closes_the_row_cancelled_without_running() -> None:
    out = claim_outcome_for_job("CANCELLED")
    assert out is not None and out.disposition is Disposition.FINISH and out.status is OutboxStatus.CANCELLED
    assert out.result == {"skipped": True}


def test_claimed_job_that_was_deleted_fails_the_row_saying_so() -> None:
    out = claim_outcome_for_job(None)
    assert out is not None and out.status is OutboxStatus.FAILED and "no longer exists" in (out.error or "")


@pytest.mark.parametrize(("job", "row"), [("SUCCEEDED", OutboxStatus.SUCCEEDED), ("FAILED", OutboxStatus.FAILED)])
def test_claimed_job_already_finished_closes_the_row_to_match(job: str, row: OutboxStatus) -> None:
    out = claim_outcome_for_job(job)
    assert out is not None and out.status is row and out.result["skipped"] is True


def test_every_job_status_has_its_claim_rule() -> None:
    # A member without a case would come out None, i.e. run: the table must name every member.
    outcomes = {status: claim_outcome_for_job(status.value) for status in JobStatus}
    assert {s: None if o is None else (o.disposition, o.status) for s, o in outcomes.items()} == {
        JobStatus.QUEUED: None,
        JobStatus.PROCESSING: None,
        JobStatus.CANCELLED: (Disposition.FINISH, OutboxStatus.CANCELLED),
        JobStatus.SUCCEEDED: (Disposition.FINISH, OutboxStatus.SUCCEEDED),
        JobStatus.FAILED: (Disposition.FINISH, OutboxStatus.FAILED),
    }


def test_unknown_job_status_is_an_error_not_a_silent_run() -> None:
    with pytest.raises(ValueError):
        claim_outcome_for_job("PAUSED")


def test_every_terminal_row_status_maps_to_a_job_status_and_only_those() -> None:
    assert set(JOB_STATUS_FOR) == {s for s in OutboxStatus if s.terminal}


def test_finish_refuses_a_non_terminal_status() -> None:
    with pytest.raises(ValueError):
        Outcome.finish(OutboxStatus.RUNNING)


def test_failed_outcome_must_say_why() -> None:
    with pytest.raises(ValueError):
        Outcome.finish(OutboxStatus.FAILED, None)


@pytest.mark.parametrize(("attempts", "expected"), [(1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (10, 300.0)])
def test_retry_delay_doubles_per_attempt_and_is_capped(attempts: int, expected: float) -> None:
    assert retry_delay_s(attempts, 5.0, 300.0) == expected
