"""How long every retry in this service waits: exponential backoff with jitter, one rule for all.

Jitter spreads out retries that failed together: without it, every dispatcher whose Postgres went
away reconnects in the same instant, and every row that failed in the same Piston outage comes
back in the same second. ``jitter`` is the share of the wait that is random: 1.0 waits anywhere
from 0 to the ceiling ("full jitter", what tenacity's ``wait_random_exponential`` does), 0.5 from
half the ceiling to all of it, 0.0 exactly the ceiling.

The random source (and, for ``Streak``, the clock) can be passed in, so tests pin the waits.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import RetryCallState

Rand = Callable[[], float]   # uniform in [0, 1), like random.random
Clock = Callable[[], float]  # seconds, like time.monotonic


@dataclass(frozen=True)
class Backoff:
    """After the n-th failure in a row, wait up to ``base_s * factor**(n-1)``, never more than ``max_s``."""

    base_s: float
    max_s: float
    jitter: float = 1.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError(f"backoff times must be >= 0, got base_s={self.base_s}, max_s={self.max_s}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")
        if self.factor < 1.0:
            raise ValueError(f"factor must be >= 1, got {self.factor}")

    def ceiling(self, failures: int) -> float:
        """The longest wait after ``failures`` failures in a row (1: the first failure)."""
        try:
            value = self.base_s * self.factor ** (max(1, failures) - 1)
        except OverflowError:  # long outages: the exponent outgrows a float long after the cap is reached
            return self.max_s
        return min(self.max_s, value)

    def delay(self, failures: int, rand: Rand = random.random) -> float:
        """A wait drawn between ``(1 - jitter) * ceiling`` and ``ceiling``."""
        return self.ceiling(failures) * (1.0 - self.jitter * rand())


class Streak:
    """One loop's consecutive failures: ``failed()`` says how long to wait, ``succeeded()`` starts over.

    For loops that retry forever (the claim loop, the listener's reconnect) or until a deadline
    (the hub_events sender)."""

    def __init__(self, policy: Backoff, *, rand: Rand = random.random, clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self.rand = rand
        self.clock = clock
        self.failures = 0

    def failed(self) -> float:
        """Count one more failure; the wait before the next try."""
        self.failures += 1
        return self.policy.delay(self.failures, self.rand)

    def failed_before(self, deadline: float) -> float | None:
        """Like ``failed``, but None when waiting would end past ``deadline`` (a ``clock`` time): give up."""
        wait = self.failed()
        return None if self.clock() + wait > deadline else wait

    def succeeded(self) -> None:
        self.failures = 0


def tenacity_wait(policy: Backoff, rand: Rand = random.random) -> Callable[[RetryCallState], float]:
    """``policy`` as tenacity's ``wait=`` (attempt_number is the number of the try that just failed)."""

    def wait(state: RetryCallState) -> float:
        return policy.delay(state.attempt_number, rand)

    return wait


__all__ = ["Backoff", "Clock", "Rand", "Streak", "tenacity_wait"]
