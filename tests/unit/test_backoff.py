"""core.backoff: the one backoff rule (exponential, capped, jittered) and its uses as loop and tenacity wait."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from core.backoff import Backoff, Streak, tenacity_wait
from dispatcher.states import next_attempt_delay_s, retry_delay_s


def rand_from(*values: float) -> Callable[[], float]:
    """A random source returning ``values`` in turn."""
    it = iter(values)
    return lambda: next(it)


@pytest.mark.parametrize(("failures", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (60, 10.0)])
def test_the_ceiling_doubles_per_failure_from_the_base_and_stops_at_the_cap(failures: int, ceiling: float) -> None:
    assert Backoff(base_s=0.5, max_s=10.0).ceiling(failures) == ceiling


def test_a_failure_count_below_one_is_the_first_failure() -> None:
    assert Backoff(0.5, 10.0).ceiling(0) == Backoff(0.5, 10.0).ceiling(1) == 0.5


def test_a_very_long_outage_stays_at_the_cap_instead_of_overflowing() -> None:
    assert Backoff(0.2, 5.0).ceiling(100_000) == 5.0
    assert Backoff(0.2, 5.0, factor=10.0).delay(100_000, rand=lambda: 0.0) == 5.0


@pytest.mark.parametrize(("jitter", "low", "high"), [(1.0, 0.0, 4.0), (0.5, 2.0, 4.0), (0.0, 4.0, 4.0)])
def test_jitter_is_the_random_share_of_the_wait(jitter: float, low: float, high: float) -> None:
    policy = Backoff(1.0, 60.0, jitter=jitter)
    assert policy.delay(3, rand=lambda: 0.0) == high  # random() = 0: the whole ceiling
    assert policy.delay(3, rand=lambda: 1.0) == pytest.approx(low)  # random() -> 1: the jittered floor
    assert policy.delay(3, rand=lambda: 0.5) == pytest.approx((low + high) / 2)


def test_waits_drawn_from_the_real_random_source_are_spread_within_their_bounds() -> None:
    rng = random.Random(14)
    waits = [Backoff(1.0, 60.0, jitter=0.5).delay(3, rng.random) for _ in range(200)]
    assert all(2.0 <= w <= 4.0 for w in waits)
    assert len({round(w, 6) for w in waits}) > 150  # spread, not one value


@pytest.mark.parametrize("kwargs", [{"base_s": -1.0, "max_s": 1.0}, {"base_s": 1.0, "max_s": -1.0},
                                    {"base_s": 1.0, "max_s": 1.0, "jitter": 1.5},
                                    {"base_s": 1.0, "max_s": 1.0, "jitter": -0.1},
                                    {"base_s": 1.0, "max_s": 1.0, "factor": 0.5}])
def test_a_nonsensical_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_a_streak_grows_with_each_failure_and_starts_over_after_a_success() -> None:
    streak = Streak(Backoff(0.5, 10.0, jitter=0.0))
    assert [streak.failed() for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    streak.succeeded()
    assert streak.failures == 0 and streak.failed() == 0.5


def test_a_streak_draws_its_jitter_from_the_injected_source() -> None:
    streak = Streak(Backoff(1.0, 10.0, jitter=1.0), rand=rand_from(0.25, 0.75))
    assert [streak.failed(), streak.failed()] == [0.75, 0.5]


def test_a_streak_gives_up_when_the_next_wait_would_end_past_the_deadline() -> None:
    now = [100.0]
    streak = Streak(Backoff(1.0, 10.0, jitter=0.0), clock=lambda: now[0])
    assert streak.failed_before(103.5) == 1.0  # 101 <= 103.5
    now[0] = 101.0
    assert streak.failed_before(103.5) == 2.0  # 103 <= 103.5
    now[0] = 103.0
    assert streak.failed_before(103.5) is None  # 107 > 103.5: give up


def test_tenacity_sleeps_follow_the_policy_and_its_random_source() -> None:
    slept: list[float] = []
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionError("down")
        return "up"

    retrying = Retrying(retry=retry_if_exception_type(ConnectionError), stop=stop_after_attempt(5), reraise=True,
                        wait=tenacity_wait(Backoff(0.2, 5.0, jitter=1.0), rand=rand_from(0.0, 0.5, 0.0)),
                        sleep=slept.append)
    assert retrying(flaky) == "up"
    assert slept == [0.2, 0.2, 0.8]  # ceilings 0.2, 0.4, 0.8; the second one halved by its draw


@pytest.mark.parametrize(("attempts", "ceiling"), [(1, 5.0), (2, 10.0), (3, 20.0), (10, 300.0)])
def test_a_rows_next_attempt_waits_between_half_and_all_of_its_backoff(attempts: int, ceiling: float) -> None:
    assert retry_delay_s(attempts, 5.0, 300.0) == ceiling
    assert next_attempt_delay_s(attempts, 5.0, 300.0, rand=lambda: 0.0) == ceiling
    assert next_attempt_delay_s(attempts, 5.0, 300.0, rand=lambda: 0.999999) == pytest.approx(ceiling / 2, rel=1e-5)


def test_rows_that_failed_in_the_same_outage_do_not_come_back_in_the_same_second() -> None:
    rng = random.Random(7)
    delays = [next_attempt_delay_s(1, 5.0, 300.0, rand=rng.random) for _ in range(100)]
    assert all(2.5 <= d <= 5.0 for d in delays)
    assert len({int(d * 10) for d in delays}) >= 20  # spread over the 2.5 s window, tenth by tenth
