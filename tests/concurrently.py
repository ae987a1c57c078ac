"""Several "dispatchers" doing one thing at the same instant: a pool each, released together by a barrier."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from core.db import Pool, make_pool

T = TypeVar("T")


def on_pools(db_url: str, n: int, fn: Callable[[Pool, int], T], *, timeout_s: float = 30) -> list[T]:
    """Run ``fn(pool, index)`` in ``n`` threads, each with its own small pool, all released at once; returns
    the results (in completion order). An exception in any thread is raised here."""
    pools = [make_pool(db_url, min_size=1, max_size=2, timeout_s=5, statement_timeout_ms=10_000,
                       application_name=f"concurrent-{i}") for i in range(n)]
    barrier = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []

    def work(p: Pool, i: int) -> None:
        try:
            barrier.wait()
            results.append(fn(p, i))
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    try:
        for p in pools:
            p.open(wait=True)
        threads = [threading.Thread(target=work, args=(p, i)) for i, p in enumerate(pools)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout_s)
    finally:
        for p in pools:
            p.close()
    if errors:
        raise errors[0]
    return results
