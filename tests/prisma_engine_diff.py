"""Prisma's own migration diff from a live database to a schema.prisma, for tests.

Prisma 7's CLI fetches a native schema engine from Prisma's download host at start-up (every command,
``--version`` included), which is unreachable here. ``tests/prisma_engine/`` runs the same engine as
Prisma ships it in WebAssembly (byte-identical to the one inside prisma@7.10.0), through a small Node
script that makes the request ``prisma migrate diff --from-config-datasource --to-schema ... --script
--exit-code`` makes. Needs Node >= 20.6 and npm; ``install`` puts the pinned packages (about 10 MB, no
install scripts) into a folder of the caller's from the committed lockfile, from npm's cache when it
has them, else from the npm registry.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINE_SOURCE = REPO / "tests" / "prisma_engine"
ENGINE_FILES = ("package.json", "package-lock.json", "migrate_diff.mjs")
LOCAL_SCHEMA = REPO / "sql" / "prisma" / "schema.prisma"
MIN_NODE = (20, 6)
# Safety limits only (a hung npm or engine must not hang the run): an install takes seconds, a diff about one.
INSTALL_TIMEOUT_S = 600
DIFF_TIMEOUT_S = 300


class PrismaEngineUnavailable(RuntimeError):
    """Node, npm or the engine's packages cannot be had on this machine."""


@dataclass(frozen=True)
class Diff:
    exit_code: int  # 0: empty, 2: not empty (the CLI's --exit-code)
    sql: str  # the script Prisma would run to bring the database to the schema

    @property
    def empty(self) -> bool:
        return self.exit_code == 0


def contract_schema() -> Path:
    """The hub's schema.prisma: ``../shared/contract/`` beside the repository when present, else our copy."""
    shared = REPO.parent / "shared" / "contract" / "schema.prisma"
    return shared if shared.is_file() else LOCAL_SCHEMA


def for_prisma7(schema: str) -> str:
    """The schema without connection URLs in its datasource block, which Prisma 7 rejects (P1012).

    The contract is written for Prisma 6 (``url = env("DATABASE_URL")``); Prisma 7 takes the URL from
    prisma.config.ts instead, and here the database comes from the caller. Nothing else changes.
    """

    def strip(block: re.Match[str]) -> str:
        return re.sub(r"(?m)^[ \t]*(url|directUrl|shadowDatabaseUrl)[ \t]*=.*\n", "", block[0])

    return re.sub(r"(?ms)^datasource\s+\w+\s*\{.*?^\}", strip, schema)


def _run(cmd: list[str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)


def _node_version(node: str) -> tuple[int, ...]:
    out = _run([node, "--version"], REPO, 60).stdout.strip().lstrip("v")
    return tuple(int(x) for x in re.findall(r"\d+", out)[:3])


def install(dest: Path) -> Path:
    """Install the engine into ``dest`` (``npm ci`` from the committed lockfile) and return ``dest``."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PrismaEngineUnavailable(
            "Prisma's migration engine needs Node.js >= 20.6 and npm on PATH (Debian: apt-get install nodejs npm)"
        )
    version = _node_version(node)
    if version < MIN_NODE:
        raise PrismaEngineUnavailable(f"Prisma's migration engine needs Node.js >= 20.6; {node} is {version}")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ENGINE_FILES:
        shutil.copy2(ENGINE_SOURCE / name, dest / name)
    # --prefer-offline: npm's cache when it has the exact tarballs; the lockfile's integrity hashes either way.
    cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"]
    done = _run(cmd, dest, INSTALL_TIMEOUT_S)
    if done.returncode != 0:
        raise PrismaEngineUnavailable(
            f"`npm ci` of tests/prisma_engine failed (exit {done.returncode}); it needs the npm registry "
            f"unless npm's cache already holds the packages:\n{done.stderr.strip() or done.stdout.strip()}"
        )
    return dest


def migrate_diff(engine: Path, database_url: str, schema: Path) -> Diff:
    """What Prisma would run to bring ``database_url``'s ``public`` schema to ``schema`` (a schema.prisma)."""
    with tempfile.TemporaryDirectory(prefix="prisma-schema-") as tmp:
        adapted = Path(tmp) / "schema.prisma"
        adapted.write_text(for_prisma7(schema.read_text(encoding="utf-8")), encoding="utf-8")
        done = _run(["node", str(engine / "migrate_diff.mjs"), database_url, str(adapted)], engine, DIFF_TIMEOUT_S)
    if done.returncode not in (0, 2):
        raise RuntimeError(f"Prisma's migrate diff failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return Diff(exit_code=done.returncode, sql=done.stdout)
