"""Writing an attempt's outcome: the row's and the Job's final or next state (River's completer).

The runner decides nothing about persistence: it returns an ``Outcome``. Here that value becomes one
write: a finish (with the run's last JobLog lines in the same statement), a retry later within the
row's attempt budget and after its backoff, or a release at shutdown. Every disposition is handled.
"""

from __future__ import annotations

from core.db import Pool
from core.vocabulary import RunLabel
from dispatcher.claim import Claimed, release
from dispatcher.config import DispatcherConfig
from dispatcher.outcome import Disposition, Outcome
from dispatcher.states import OutboxStatus, next_attempt_delay_s
from dispatcher.writeback import WriteBack

STATUS_MESSAGE = {
    OutboxStatus.SUCCEEDED: "completed",
    OutboxStatus.FAILED: "failed",
    OutboxStatus.CANCELLED: "cancelled",
}


def apply_outcome(outcome: Outcome, row: Claimed, wb: WriteBack, *, cfg: DispatcherConfig, pool: Pool) -> RunLabel:
    """Write the outcome; returns the final label for logs and metrics."""
    result = {**outcome.result, "attempts": row.attempts}
    match outcome.disposition:
        case Disposition.FINISH:
            assert outcome.status is not None
            # The last log lines ride in the finish's transaction: one round trip and one commit, not three.
            logs = [("error", outcome.error)] if outcome.error else []
            logs.append(("info", f"run finished: {outcome.status.value}"))
            ok = wb.finish(outcome.status, error=outcome.error, result=result,
                           status_message=STATUS_MESSAGE[outcome.status], logs=logs)
            return RunLabel(outcome.status.value) if ok else RunLabel.LEASE_LOST
        case Disposition.RETRY_LATER:
            error = outcome.error or "transient fault"
            if row.attempts >= row.max_attempts:
                final = f"{error} (gave up after {row.attempts} attempts)"
                ok = wb.finish(OutboxStatus.FAILED, error=final, result=result, status_message="failed", logs=[("error", final)])
                return RunLabel.FAILED if ok else RunLabel.LEASE_LOST
            delay = round(next_attempt_delay_s(row.attempts, cfg.retry_delay_s, cfg.retry_max_delay_s), 3)
            wb.log("warning", f"{error}; will retry in {delay:g} s (attempt {row.attempts} of {row.max_attempts})")
            ok = wb.retry_later(delay_s=delay, error=error, status_message=f"waiting to retry: {error}")
            return RunLabel.RETRY_LATER if ok else RunLabel.LEASE_LOST
        case Disposition.RELEASE:
            wb.log("warning", f"{outcome.error}; released for another dispatcher")
            release(pool, owner=cfg.owner, rows=[(row.id, row.attempts)], events=wb.events)
            return RunLabel.RELEASED
        case Disposition.ABANDON:
            return RunLabel.LEASE_LOST
