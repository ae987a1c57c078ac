"""sql/prisma/schema.sql (our copy of Prisma's tables) matches sql/prisma/schema.prisma, the hub's schema.

sql/prisma/schema.prisma is itself compared with the hub's shared copy, ../shared/contract/schema.prisma
next to the repository, when that file is there (a skip saying so when it is not).

schema.prisma is parsed with a small parser and compared with pg_catalog of a migrated
database, the way `prisma migrate` would have created it: quoted PascalCase tables, TEXT
ids without a database default, TIMESTAMP(3), enum types, Prisma's index/constraint names
and foreign keys ON UPDATE CASCADE with Prisma's ON DELETE defaults.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests import pg

REPO = Path(__file__).resolve().parents[2]
LOCAL_COPY = REPO / "sql" / "prisma" / "schema.prisma"
# The hub's shared contract, when checked out next to this repository.
CONTRACT = REPO.parent / "shared" / "contract" / "schema.prisma"

SCALAR_TYPES = {
    "String": "text",
    "Int": "integer",
    "BigInt": "bigint",
    "Float": "double precision",
    "Decimal": "numeric(65,30)",
    "Boolean": "boolean",
    "DateTime": "timestamp(3) without time zone",
    "Json": "jsonb",
    "Bytes": "bytea",
}
ON_DELETE = {
    "Cascade": "CASCADE",
    "Restrict": "RESTRICT",
    "NoAction": "NO ACTION",
    "SetNull": "SET NULL",
    "SetDefault": "SET DEFAULT",
}
PG_ACTION = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


# --- a small schema.prisma parser ----------------------------------------------------------


@dataclass
class Field:
    name: str
    type: str
    optional: bool
    is_list: bool
    attrs: str  # the raw attribute text after the type

    def attr_args(self, name: str) -> str | None:
        """The argument text of ``@name(...)``, "" for a bare ``@name``, None when absent."""
        m = re.search(rf"@{name}\b(\((?P<args>(?:[^()]|\([^()]*\))*)\))?", self.attrs)
        if not m:
            return None
        return m.group("args") or ""


@dataclass
class Model:
    name: str
    fields: list[Field] = field(default_factory=list)
    block_attrs: list[str] = field(default_factory=list)


@dataclass
class Schema:
    models: dict[str, Model]
    enums: dict[str, list[str]]


def _strip_comment(line: str) -> str:
    return line.split("//", 1)[0].strip()


def parse(text: str) -> Schema:
    models: dict[str, Model] = {}
    enums: dict[str, list[str]] = {}
    for kind, name, body in re.findall(r"^(model|enum)\s+(\w+)\s*\{(.*?)^\}", text, re.S | re.M):
        lines = [s for s in (_strip_comment(line) for line in body.splitlines()) if s]
        if kind == "enum":
            enums[name] = lines
            continue
        model = Model(name)
        for line in lines:
            if line.startswith("@@"):
                model.block_attrs.append(line)
                continue
            m = re.fullmatch(r"(\w+)\s+(\w+)(\[\])?(\?)?\s*(.*)", line)
            assert m, f"cannot parse field line in {name}: {line!r}"
            model.fields.append(Field(m[1], m[2], optional=bool(m[4]), is_list=bool(m[3]), attrs=m[5]))
        models[name] = model
    return Schema(models, enums)


def _names(list_text: str) -> list[str]:
    return [x.strip() for x in list_text.strip().strip("[]").split(",") if x.strip()]


def scalar_fields(schema: Schema, model: Model) -> list[Field]:
    return [f for f in model.fields if f.type in SCALAR_TYPES or f.type in schema.enums]


def expected_indexes(schema: Schema, model: Model) -> set[tuple[str, bool, tuple[str, ...]]]:
    """(name, unique, columns) for every index Prisma creates besides the primary key."""
    out = set()
    for f in scalar_fields(schema, model):
        if f.attr_args("unique") is not None:
            out.add((f"{model.name}_{f.name}_key", True, (f.name,)))
    for attr in model.block_attrs:
        m = re.fullmatch(r"@@(unique|index)\(\s*(?:fields:\s*)?(\[[^\]]*\])\s*\)", attr)
        assert m, f"unsupported block attribute in {model.name}: {attr!r}"
        cols = tuple(_names(m[2]))
        unique = m[1] == "unique"
        out.add((f"{model.name}_{'_'.join(cols)}_{'key' if unique else 'idx'}", unique, cols))
    return out


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    target: str
    target_columns: tuple[str, ...]
    on_delete: str
    on_update: str


def expected_foreign_keys(schema: Schema, model: Model) -> set[ForeignKey]:
    out = set()
    for f in model.fields:
        rel = f.attr_args("relation")
        if rel is None or "fields:" not in rel:
            continue  # the back-relation side (lists, or the side without fields:)
        fields = tuple(_names(re.search(r"fields:\s*(\[[^\]]*\])", rel)[1]))  # type: ignore[index]
        refs = tuple(_names(re.search(r"references:\s*(\[[^\]]*\])", rel)[1]))  # type: ignore[index]
        on_delete = re.search(r"onDelete:\s*(\w+)", rel)
        on_update = re.search(r"onUpdate:\s*(\w+)", rel)
        # Prisma's referential-action defaults: required relation → Restrict, optional → SetNull; update → Cascade.
        delete = ON_DELETE[on_delete[1]] if on_delete else ("SET NULL" if f.optional else "RESTRICT")
        update = ON_DELETE[on_update[1]] if on_update else "CASCADE"
        out.add(ForeignKey(f"{model.name}_{'_'.join(fields)}_fkey", fields, f.type, refs, delete, update))
    return out


def expected_default(schema: Schema, f: Field) -> str | None:
    """The column default Prisma's migration writes, as pg_get_expr renders it."""
    args = f.attr_args("default")
    if args is None or f.attr_args("updatedAt") is not None:
        return None
    if args in ("uuid()", "cuid()") or args.startswith(("uuid(", "cuid(", "nanoid(")):
        return None  # generated by the Prisma client, not the database
    if args == "now()":
        return "CURRENT_TIMESTAMP"
    if f.type in schema.enums:
        return f"'{args}'::\"{f.type}\""
    if f.type == "String":
        return "'" + args.strip('"') + "'::text"
    return args


SCHEMA = parse(LOCAL_COPY.read_text(encoding="utf-8"))


# --- the catalog of the migrated database ------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(pg_server_url: str, template_name: str) -> Iterator[psycopg.Connection]:
    """A migrated database to read (a copy: a session open on the template would block CREATE DATABASE)."""
    name, url = pg.create_from_template(pg_server_url, template_name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            yield conn
    finally:
        pg.drop(pg_server_url, name)


def columns(conn: psycopg.Connection, table: str) -> dict[str, tuple[str, bool, str | None]]:
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = format('public.%%I', %s::text)::regclass AND a.attnum > 0 AND NOT a.attisdropped
        """,
        (table,),
    ).fetchall()
    return {r[0]: (r[1], not r[2], r[3]) for r in rows}


def indexes(conn: psycopg.Connection, table: str) -> set[tuple[str, bool, tuple[str, ...]]]:
    rows = conn.execute(
        """
        SELECT ic.relname, i.indisunique,
               array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n)
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = format('public.%%I', %s::text)::regclass AND NOT i.indisprimary
        """,
        (table,),
    ).fetchall()
    return {(r[0], r[1], tuple(r[2])) for r in rows}


def primary_key(conn: psycopg.Connection, table: str) -> tuple[str, tuple[str, ...]] | None:
    row = conn.execute(
        """
        SELECT c.conname, array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(attnum, n)
                                JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.n)
        FROM pg_constraint c WHERE c.conrelid = format('public.%%I', %s::text)::regclass AND c.contype = 'p'
        """,
        (table,),
    ).fetchone()
    return (row[0], tuple(row[1])) if row else None


def foreign_keys(conn: psycopg.Connection, table: str) -> set[ForeignKey]:
    rows = conn.execute(
        """
        SELECT c.conname,
               array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(attnum, n)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.n),
               t.relname,
               array(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(attnum, n)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.n),
               c.confdeltype, c.confupdtype
        FROM pg_constraint c JOIN pg_class t ON t.oid = c.confrelid
        WHERE c.conrelid = format('public.%%I', %s::text)::regclass AND c.contype = 'f'
        """,
        (table,),
    ).fetchall()
    return {ForeignKey(r[0], tuple(r[1]), r[2], tuple(r[3]), PG_ACTION[r[4]], PG_ACTION[r[5]]) for r in rows}


# --- the parser reads what it should (so a comparison cannot pass by parsing nothing) ----------


def test_local_schema_prisma_is_the_contract_copy() -> None:
    if not CONTRACT.is_file():
        pytest.skip(f"no {CONTRACT} (the hub's shared contract next to the repository): sql/prisma/schema.prisma "
                    "not compared with it; the other schema checks still compare it with sql/prisma/schema.sql")
    assert LOCAL_COPY.read_text(encoding="utf-8") == CONTRACT.read_text(encoding="utf-8")


def test_parser_finds_every_model_and_enum_of_the_contract() -> None:
    assert set(SCHEMA.models) == {
        "User",
        "Profile",
        "Agent",
        "AgentFile",
        "AgentEnvVar",
        "AgentTag",
        "StarredAgent",
        "Session",
        "UserVariable",
        "ChatMessage",
        "Dataset",
        "DatasetFile",
        "StarredDataset",
        "Model",
        "ModelFile",
        "StarredModel",
        "Job",
        "JobLog",
    }
    assert SCHEMA.enums["JobStatus"] == ["QUEUED", "PROCESSING", "SUCCEEDED", "FAILED", "CANCELLED"]
    job = {f.name: f for f in SCHEMA.models["Job"].fields}
    assert (job["sessionId"].type, job["sessionId"].optional) == ("String", True)
    assert job["logs"].is_list
    assert expected_default(SCHEMA, job["status"]) == "'QUEUED'::\"JobStatus\""
    assert ("Job_createdAt_idx", False, ("createdAt",)) in expected_indexes(SCHEMA, SCHEMA.models["Job"])
    assert ForeignKey("Job_sessionId_fkey", ("sessionId",), "Session", ("id",), "SET NULL", "CASCADE") in (
        expected_foreign_keys(SCHEMA, SCHEMA.models["Job"])
    )


# --- the comparison --------------------------------------------------------------------------


def test_every_model_is_a_quoted_pascal_case_table_and_nothing_else_is(catalog: psycopg.Connection) -> None:
    rows = catalog.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()
    pascal = {r[0] for r in rows if r[0][:1].isupper()}
    assert pascal == set(SCHEMA.models)


@pytest.mark.parametrize("model", sorted(SCHEMA.models))
def test_model_columns_have_prisma_types_nullability_and_defaults(catalog: psycopg.Connection, model: str) -> None:
    m = SCHEMA.models[model]
    expected = {}
    for f in scalar_fields(SCHEMA, m):
        pg_type = f'"{f.type}"' if f.type in SCHEMA.enums else SCALAR_TYPES[f.type]
        expected[f.name] = (pg_type, f.optional, expected_default(SCHEMA, f))
    assert columns(catalog, model) == expected


@pytest.mark.parametrize("model", sorted(SCHEMA.models))
def test_model_id_is_text_primary_key_without_a_database_default(catalog: psycopg.Connection, model: str) -> None:
    ids = [f for f in SCHEMA.models[model].fields if f.attr_args("id") is not None]
    assert [f.name for f in ids] == ["id"]
    assert primary_key(catalog, model) == (f"{model}_pkey", ("id",))
    assert columns(catalog, model)["id"] == ("text", False, None)


@pytest.mark.parametrize("model", sorted(m for m in SCHEMA.models if any(f.name == "updatedAt" for f in SCHEMA.models[m].fields)))
def test_updated_at_has_no_database_default(catalog: psycopg.Connection, model: str) -> None:
    # Prisma's client sets @updatedAt; a raw INSERT that forgets it must fail, as it would in production.
    assert columns(catalog, model)["updatedAt"] == ("timestamp(3) without time zone", False, None)


@pytest.mark.parametrize("enum", sorted(SCHEMA.enums))
def test_enum_type_has_the_prisma_labels_in_order(catalog: psycopg.Connection, enum: str) -> None:
    rows = catalog.execute(
        """
        SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
        JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typname = %s AND n.nspname = 'public' ORDER BY e.enumsortorder
        """,
        (enum,),
    ).fetchall()
    assert [r[0] for r in rows] == SCHEMA.enums[enum]


@pytest.mark.parametrize("model", sorted(SCHEMA.models))
def test_model_unique_and_plain_indexes_match(catalog: psycopg.Connection, model: str) -> None:
    assert indexes(catalog, model) == expected_indexes(SCHEMA, SCHEMA.models[model])


@pytest.mark.parametrize("model", sorted(SCHEMA.models))
def test_model_foreign_keys_cascade_on_update_with_prisma_on_delete(catalog: psycopg.Connection, model: str) -> None:
    assert foreign_keys(catalog, model) == expected_foreign_keys(SCHEMA, SCHEMA.models[model])


def test_the_referential_actions_the_hub_relies_on() -> None:
    # Spelled out, so a parser slip cannot make both sides of the comparison wrong the same way.
    fks = {fk.name: fk for m in SCHEMA.models.values() for fk in expected_foreign_keys(SCHEMA, m)}
    assert fks["ChatMessage_sessionId_fkey"].on_delete == "CASCADE"
    assert fks["Session_userId_fkey"].on_delete == "RESTRICT"
    assert fks["Job_agentId_fkey"].on_delete == "SET NULL"
    assert fks["Job_userId_fkey"].on_delete == "RESTRICT"
    assert all(fk.on_update == "CASCADE" for fk in fks.values())
    assert len(fks) == 25  # one per relation field with fields: [...] in the contract
