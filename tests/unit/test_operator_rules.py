"""What an operator's replay and cancel may do with a row (dispatcher/states.py), for every row and Job status."""

from __future__ import annotations

import pytest

from core.vocabulary import JobStatus, OutboxStatus
from dispatcher.states import CancelMove, can_replay, cancel_move


def test_only_finished_rows_can_be_replayed() -> None:
    assert {s for s in OutboxStatus if can_replay(s)} == {OutboxStatus.SUCCEEDED, OutboxStatus.FAILED,
                                                          OutboxStatus.CANCELLED}


@pytest.mark.parametrize("job", [*[s.value for s in JobStatus], None])
def test_cancel_of_a_pending_row_cancels_it_whatever_its_job(job: str | None) -> None:
    assert cancel_move(OutboxStatus.PENDING, job) is CancelMove.CANCEL_ROW


@pytest.mark.parametrize(("job", "move"), [
    ("QUEUED", CancelMove.CANCEL_JOB), ("PROCESSING", CancelMove.CANCEL_JOB),
    ("CANCELLED", CancelMove.ALREADY_REQUESTED),
    ("SUCCEEDED", CancelMove.REFUSED_JOB), ("FAILED", CancelMove.REFUSED_JOB), (None, CancelMove.REFUSED_JOB),
])
def test_cancel_of_a_running_row_goes_through_its_job(job: str | None, move: CancelMove) -> None:
    assert cancel_move(OutboxStatus.RUNNING, job) is move


@pytest.mark.parametrize("row", [OutboxStatus.SUCCEEDED, OutboxStatus.FAILED, OutboxStatus.CANCELLED])
def test_cancel_of_a_finished_row_is_refused(row: OutboxStatus) -> None:
    assert cancel_move(row, "CANCELLED") is CancelMove.REFUSED_FINISHED
