"""PISTON_MAX_CONCURRENT_JOBS: extra jobs wait in a queue, and the limit holds (measured)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .conftest import Server

PROGRAM = "import time\nstart = time.time()\ntime.sleep(0.15)\nprint(start, time.time())"


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_max_overlap_counts_overlapping_intervals() -> None:
    assert max_overlap([(0, 2), (1, 3), (2.5, 4)]) == 2
    assert max_overlap([(0, 1), (1, 2)]) == 1


def test_fifty_concurrent_jobs_all_finish_and_never_more_than_four_run_at_once(piston4: Server) -> None:
    with ThreadPoolExecutor(max_workers=50) as pool:
        runs = list(pool.map(lambda _: piston4.run(PROGRAM), range(50)))
    assert all(run["status"] is None for run in runs), [run for run in runs if run["status"]]
    intervals = [tuple(map(float, str(run["stdout"]).split())) for run in runs]
    assert len(intervals) == 50
    peak = max_overlap(intervals)  # type: ignore[arg-type]
    assert 2 <= peak <= 4


def test_limit_overrides_raise_the_per_language_limit(piston4: Server) -> None:
    assert piston4.execute("print(1)", run_timeout=4000).status_code == 200
    response = piston4.execute("print(1)", run_timeout=6000)
    assert response.status_code == 400
    assert response.json() == {"message": "run_timeout cannot exceed the configured limit of 5000"}
