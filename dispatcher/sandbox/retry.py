"""In-process retries of a transient sandbox fault (the row's own retry, later, is dispatcher/completer.py)."""

from __future__ import annotations

import structlog
import tenacity

from core.backoff import Backoff, tenacity_wait
from dispatcher.sandbox.port import SandboxTransient

log = structlog.get_logger("sandbox")


def retrying(attempts: int, base_s: float, max_s: float) -> tenacity.Retrying:
    """Retry SandboxTransient only, exponential backoff with full jitter, at most `attempts` tries, then reraise."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(SandboxTransient),
        wait=tenacity_wait(Backoff(base_s, max_s)),
        stop=tenacity.stop_after_attempt(max(1, attempts)),
        reraise=True,
        before_sleep=_log_retry,
    )


def _log_retry(state: tenacity.RetryCallState) -> None:
    err = state.outcome.exception() if state.outcome is not None else None
    sleep = state.next_action.sleep if state.next_action is not None else None
    log.warning("piston_retry", attempt=state.attempt_number, sleep_s=sleep, error=str(err))
