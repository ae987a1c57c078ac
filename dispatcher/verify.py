"""``python -m dispatcher verify``: is this deployment able to run agents? Exit 0 when yes, 1 when not.

Checks, each printed as one ``ok`` / ``FAIL`` line saying what is wrong:
- the database answers and our migrations (sql/migrations) are all applied, none edited since;
- no object of ours is outside our schema ``agent_hub`` (a half-done move, or an older version's migrate);
- the Prisma tables and columns (and enum labels) our queries use are there;
- each Piston server of ``PISTON_URL`` (one, or a pool) answers ``GET /api/v2/runtimes`` and has a Python
  runtime; and its own run limits, found by one empty probe run asking for far more than any server allows
  (the server refuses each limit it has, naming it: dispatcher/sandbox/piston/limits.py).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core import migrate
from core.config import ConfigError, database_url, parse_int
from core.db import Conn
from core.sqlfiles import query
from core.vocabulary import JobStatus, JobType
from dispatcher.config import parse_piston_servers
from dispatcher.sandbox.piston.client import PistonClient, server_name
from dispatcher.sandbox.piston.limits import ServerLimits
from dispatcher.sandbox.port import RunLimits, SandboxError, SandboxRequest, Transport

# Every Prisma table and column a query under sql/queries/ reads or writes (keep in step with them).
PRISMA_COLUMNS: dict[str, tuple[str, ...]] = {
    "Agent": ("id", "name", "version"),
    "AgentEnvVar": ("key", "value", "agentId"),
    "AgentFile": ("id", "filename", "filepath", "filesize", "createdAt", "agentId"),
    "Session": ("id", "userId", "agentId"),
    "UserVariable": ("id", "key", "value", "createdAt", "updatedAt", "sessionId"),
    "ChatMessage": ("id", "role", "content", "timestamp", "sessionId"),
    "Job": ("id", "type", "status", "progress", "statusMessage", "errorMessage", "createdAt", "startedAt",
            "completedAt", "userId", "agentId", "sessionId"),
    "JobLog": ("id", "level", "message", "timestamp", "jobId"),
}
# The Prisma enum labels our SQL casts to and compares with (core/vocabulary.py).
PRISMA_ENUMS: dict[str, tuple[str, ...]] = {
    "JobStatus": tuple(s.value for s in JobStatus),
    "JobType": (JobType.AGENT_INVOCATION.value,),
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def check_database(url: str) -> list[Check]:
    """Migrations applied, Prisma tables/columns/enums present."""
    try:
        conn = psycopg.connect(url, row_factory=dict_row, connect_timeout=5, autocommit=True)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [Check("database", False, f"cannot connect: {first}")]
    checks = [Check("database", True, "reachable")]
    with conn:
        try:
            todo = migrate.pending(conn)
        except migrate.MigrationError as exc:
            checks.append(Check("migrations", False, f"{exc}"))
        else:
            if todo:
                names = ", ".join(m.version for m in todo)
                checks.append(Check("migrations", False, f"not applied: {names}; run `python -m core.migrate` (release step)"))
            else:
                checks.append(Check("migrations", True, f"all {len(migrate.discover())} applied"))
        stray = [r for r in conn.execute(query("verify/stray_objects")).fetchall() if _ours(conn, r)]
        if stray:
            names = ", ".join(f"{r['kind']} {r['schema_name']}.{r['name']}" for r in stray)
            checks.append(Check("schema", False, f"objects of ours outside {migrate.SCHEMA}: {names}; "
                                                 "see docs/runbook.md \"Our objects outside agent_hub\""))
        else:
            checks.append(Check("schema", True, f"every object of ours is in {migrate.SCHEMA}"))
        rows = conn.execute(query("verify/columns"), {"tables": list(PRISMA_COLUMNS)}).fetchall()
        found: dict[str, set[str]] = {}
        for row in rows:
            found.setdefault(row["table_name"], set()).add(row["column_name"])
        missing_tables = [t for t in PRISMA_COLUMNS if t not in found]
        missing_columns = [f'"{t}"."{c}"' for t, cols in PRISMA_COLUMNS.items() if t in found for c in cols if c not in found[t]]
        if missing_tables:
            checks.append(Check("prisma tables", False, "missing: " + ", ".join(f'"{t}"' for t in missing_tables)
                                + " (is DATABASE_URL the hub's Prisma database?)"))
        elif missing_columns:
            checks.append(Check("prisma tables", False, "missing columns: " + ", ".join(missing_columns)))
        else:
            checks.append(Check("prisma tables", True, f"{len(PRISMA_COLUMNS)} tables with the columns we use"))
        labels = conn.execute(query("verify/enum_labels"), {"types": list(PRISMA_ENUMS)}).fetchall()
        have: dict[str, set[str]] = {}
        for row in labels:
            have.setdefault(row["type_name"], set()).add(row["label"])
        missing_labels = [f"{t}.{v}" for t, values in PRISMA_ENUMS.items() for v in values if v not in have.get(t, set())]
        if missing_labels:
            checks.append(Check("prisma enums", False, "missing: " + ", ".join(missing_labels)))
        else:
            checks.append(Check("prisma enums", True, "JobStatus and JobType have the values we use"))
    return checks


def _ours(conn: Conn, obj: Mapping[str, str]) -> bool:
    """A stray object is ours; a table named schema_migrations only if it records one of our migrations."""
    if (obj["kind"], obj["name"]) != ("table", "schema_migrations"):
        return True
    versions = [m.version for m in migrate.discover()]
    stmt = sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.schema_migrations WHERE version = ANY(%s)) AS ours").format(
        sql.Identifier(obj["schema_name"]))
    row = conn.execute(stmt, (versions,)).fetchone()
    return bool(row and row["ours"])


# The probe asks more than any server allows, so the server names each limit it has; what it accepts it does
# not limit. The program is empty: it ends at once whatever it was given.
PROBE = RunLimits(run_timeout_ms=1_000_000_000, run_cpu_time_ms=1_000_000_000, run_memory_limit=2**40)
UNITS = {"run_timeout": "ms", "run_cpu_time": "ms", "run_memory_limit": "bytes"}


def server_limits(client: PistonClient) -> dict[str, int | None]:
    """The server's run limits (None: not limited), from one probe run (SandboxError when it cannot run)."""
    client.limits = ServerLimits(client.name, announce=False)  # reported below, not logged
    client.run(SandboxRequest([{"name": "probe.py", "content": ""}], PROBE, transport=Transport.EXECUTE))
    return {field: client.limits.known.get(field) for field in UNITS}


def check_piston(url: str, *, slots: int | None = None, run_timeout_ms: int | None = None) -> Check:
    """Piston reachable, with a Python runtime; its run limits (compared with AGENT_RUN_TIMEOUT_MS)."""
    name = "piston" if slots is None else f"piston {server_name(url)} ({slots} slots)"
    try:
        client = PistonClient(url, connect_timeout_s=3.0, execute_margin_s=10.0)
        runtimes = client.runtimes()
    except (SandboxError, OSError) as exc:
        return Check(name, False, f"{url}: not reachable or not Piston ({exc})")
    pythons = [f"{rt.get('language')} {rt.get('version')}" for rt in runtimes
               if rt.get("language") == "python" or "python" in (rt.get("aliases") or [])]
    if not pythons:
        names = ", ".join(sorted({str(rt.get("language")) for rt in runtimes})) or "none"
        return Check(name, False, f"{url}: no Python runtime installed (runtimes: {names}); install it with ppman")
    try:
        limits = server_limits(client)
    except (SandboxError, OSError) as exc:
        return Check(name, False, f"{url}: {', '.join(pythons)}; a probe run failed: {exc}")
    shown = ", ".join(f"{field} {'not limited' if value is None else f'{value} {UNITS[field]}'}"
                      for field, value in limits.items())
    detail = f"{url}: {', '.join(pythons)}; limits {shown}"
    most = limits["run_timeout"]
    if run_timeout_ms is not None and most is not None and run_timeout_ms > most:
        detail += f" (AGENT_RUN_TIMEOUT_MS {run_timeout_ms} is above it: runs go at {most} ms)"
    return Check(name, True, detail)


def check_pistons(env: Mapping[str, str]) -> list[Check]:
    """Every server of PISTON_URL (one, or a pool)."""
    try:
        servers = parse_piston_servers(env)
    except ConfigError as exc:
        return [Check("piston", False, str(exc))]
    try:
        timeout_ms: int | None = parse_int(env, "AGENT_RUN_TIMEOUT_MS", 3000, minimum=1)
    except ConfigError:
        timeout_ms = None
    if len(servers) == 1:
        return [check_piston(servers[0].url, run_timeout_ms=timeout_ms)]
    return [check_piston(s.url, slots=s.slots, run_timeout_ms=timeout_ms) for s in servers]


def run(env: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    """Print one line per check; 0 when all pass, 1 otherwise."""
    checks: list[Check] = []
    try:
        checks.extend(check_database(database_url(env)))
    except ConfigError as exc:
        checks.append(Check("database", False, str(exc)))
    checks.extend(check_pistons(env))
    for check in checks:
        print(check.line(), file=out)
    failed = [c for c in checks if not c.ok]
    print("verify: " + ("all checks passed" if not failed else f"{len(failed)} check(s) failed"), file=out)
    return 0 if not failed else 1
