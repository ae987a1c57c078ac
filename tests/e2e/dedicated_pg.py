"""A Postgres server of a test's own that the test may stop and start (CI's shared server cannot be restarted),
migrated with the Prisma tables and ours on first start."""

from __future__ import annotations

import os

from core import migrate
from devstack.embedded_pg import EmbeddedPostgres


class DedicatedPostgres(EmbeddedPostgres):
    def __init__(self) -> None:
        # Not durable: it holds nothing worth keeping, and fsync off makes the restart quick.
        super().__init__(prefix="agenthub-dpg-", durable=False, database="hub")

    def start(self) -> DedicatedPostgres:
        first = not (self.data / "PG_VERSION").exists()
        super().start()
        if first:
            migrate.apply(self.url, prisma=True, out=open(os.devnull, "w"))  # noqa: SIM115
        return self
