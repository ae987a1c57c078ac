"""core/vocabulary.py is the database's vocabulary: each Python enum has exactly its database enum's labels, in
order (ours and Prisma's), and every status our SQL names is one of them."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import psycopg
import pytest

from core.vocabulary import PUBLIC_STATUS, JobStatus, JobType, OutboxStatus

SQL = Path(__file__).resolve().parents[2] / "sql"

# Every database enum this service writes or compares with, and its Python enum.
ENUMS: list[tuple[str, type[StrEnum]]] = [
    ("agent_hub.invocation_status", OutboxStatus),
    ('"JobStatus"', JobStatus),
    ('"JobType"', JobType),
]


def labels(conn: psycopg.Connection, type_name: str) -> list[str]:
    row = conn.execute("SELECT array_agg(enumlabel::text ORDER BY enumsortorder) AS labels FROM pg_enum "
                       "WHERE enumtypid = %s::regtype", (type_name,)).fetchone()
    assert row is not None
    return list(row["labels"] or [])


@pytest.mark.parametrize(("type_name", "enum"), ENUMS, ids=[t for t, _ in ENUMS])
def test_the_python_enum_has_exactly_the_database_enums_labels_in_order(
    conn: psycopg.Connection, type_name: str, enum: type[StrEnum]
) -> None:
    assert labels(conn, type_name) == [member.value for member in enum]


def test_every_enum_type_our_sql_casts_to_has_its_python_enum() -> None:
    casts: set[str] = set()
    for path in SQL.glob("queries/**/*.sql"):
        text = path.read_text(encoding="utf-8")
        casts |= {f'"{name}"' for name in re.findall(r'::"(\w+)"', text)}
        casts |= {f"agent_hub.{name}" for name in re.findall(r"::agent_hub\.(\w+)", text)}
    assert casts and casts <= {t for t, _ in ENUMS}


def _sql_texts() -> dict[str, str]:
    files = [*SQL.glob("queries/**/*.sql"), *SQL.glob("migrations/*.sql")]
    # Comments name statuses in prose ('... status changed'); only code counts.
    return {str(p.relative_to(SQL)): re.sub(r"--[^\n]*", "", p.read_text(encoding="utf-8")) for p in files}


# A status or type our SQL compares with or sets: `status = 'x'`, `"status" IN ('X', 'Y')`, `type = 'X'`,
# `%(job_status)s = 'X'`, `SET status = 'x'`, and literals cast to one of the enums ('X'::"JobStatus").
COMPARED = re.compile(r"""(?:status|type)(?:"|\)s)?\s*(?:=|<>|IN\s*\()\s*((?:'\w+'\s*,?\s*)+)""", re.IGNORECASE)
CAST = re.compile(r"""'(\w+)'::(?:"JobStatus"|"JobType"|agent_hub\.invocation_status)""")


def named_statuses() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for name, text in _sql_texts().items():
        for group in COMPARED.findall(text):
            found |= {(name, lit) for lit in re.findall(r"'(\w+)'", group)}
        found |= {(name, lit) for lit in CAST.findall(text)}
    return found


def test_every_status_or_type_our_sql_names_is_a_label_of_its_enum() -> None:
    known = {m.value for _, enum in ENUMS for m in enum}
    found = named_statuses()
    # The patterns see every outbox status and every Job status somewhere (else they are broken).
    assert {lit for _, lit in found} >= {s.value for s in OutboxStatus} | {s.value for s in JobStatus}
    assert {(name, lit) for name, lit in found if lit not in known} == set()


def test_the_public_status_names_every_outbox_status() -> None:
    assert set(PUBLIC_STATUS) == set(OutboxStatus)
