"""Our objects live in the schema agent_hub, out of Prisma's sight: fresh installs, and upgrades of
installations from before the move (everything of ours in public), with their data."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from core import migrate
from dispatcher import verify
from tests import factories as f
from tests import pg
from tests.legacy_layout import LEGACY_VERSIONS, install_public_layout, public_objects


@pytest.fixture
def prisma_only_objects(pg_server_url: str) -> Iterator[set[tuple[str, str]]]:
    """What public holds when only Prisma's tables are there: the reference for "nothing of ours in public"."""
    name, url = pg.create_from_template(pg_server_url, "template0", prefix="e")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(migrate.PRISMA_SCHEMA.read_text(encoding="utf-8"))
        yield public_objects(url)
    finally:
        pg.drop(pg_server_url, name)


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def dump(conn: psycopg.Connection, table: str) -> list[dict[str, object]]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def ledger(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute("SELECT version, checksum FROM agent_hub.schema_migrations").fetchall()
    return {r["version"]: r["checksum"] for r in rows}


def quiet() -> io.StringIO:
    return io.StringIO()


def test_a_fresh_install_puts_nothing_of_ours_in_public(empty_db_url: str, prisma_only_objects: set) -> None:
    migrate.apply(empty_db_url, prisma=True, out=quiet())
    assert public_objects(empty_db_url) == prisma_only_objects
    with connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('agent_hub.invocation_outbox') IS NOT NULL AS ok").fetchone()["ok"]
        assert set(ledger(conn)) == {m.version for m in migrate.discover()}
        assert conn.execute(migrate.query("verify/stray_objects")).fetchall() == []


def test_the_legacy_layout_helper_really_puts_our_objects_in_public(empty_db_url: str, prisma_only_objects: set) -> None:
    install_public_layout(empty_db_url)
    extra = public_objects(empty_db_url) - prisma_only_objects
    assert {("r", "invocation_outbox"), ("r", "invocation_outbox_event"), ("r", "schema_migrations"),
            ("type", "invocation_status"), ("function", "invocation_outbox_record_event")} <= extra


def legacy_rows(url: str) -> dict[str, int]:
    """Rows queued, running and finished, with their event history, written by the old layout's own SQL."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        ids: dict[str, int] = {}
        for state in ("pending", "running", "succeeded", "child"):
            w = f.world(conn, prompt=f"{state} prompt")
            ids[state] = conn.execute(
                "INSERT INTO public.invocation_outbox (job_id, agent_id, session_id, user_id, prompt) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id", (w.job_id, w.agent_id, w.session_id, w.user_id, w.prompt),
            ).fetchone()["id"]
        conn.execute("UPDATE public.invocation_outbox SET status = 'running', attempts = 1, lease_owner = 'old-dispatcher', "
                     "lease_expires_at = now() + interval '1 hour', started_at = now() WHERE id = ANY(%s)",
                     ([ids["running"], ids["succeeded"]],))
        conn.execute("UPDATE public.invocation_outbox SET status = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, "
                     "finished_at = now(), result = '{\"exit\": 0}' WHERE id = %s", (ids["succeeded"],))
        conn.execute("UPDATE public.invocation_outbox SET parent_id = %s, depth = 1, agent_chain = '{a,b}' WHERE id = %s",
                     (ids["running"], ids["child"]))
    return ids


def test_upgrade_moves_every_object_and_row_into_agent_hub_and_keeps_the_history(
    empty_db_url: str, prisma_only_objects: set
) -> None:
    install_public_layout(empty_db_url)
    ids = legacy_rows(empty_db_url)
    with connect(empty_db_url) as conn:
        rows_before = dump(conn, "public.invocation_outbox")
        events_before = dump(conn, "public.invocation_outbox_event")
        ledger_before = {r["version"]: r["checksum"] for r in conn.execute("SELECT * FROM public.schema_migrations")}
    assert len(events_before) == 4 + 2 + 1  # 4 queued, 2 claimed, 1 finished

    out = io.StringIO()
    applied = migrate.apply(empty_db_url, out=out)

    assert applied == [m.version for m in migrate.discover() if m.version not in LEGACY_VERSIONS]
    assert "moved this service's objects from public into agent_hub (4 migration(s) recorded)" in out.getvalue()
    assert public_objects(empty_db_url) == prisma_only_objects
    with connect(empty_db_url) as conn:
        assert dump(conn, "agent_hub.invocation_outbox") == rows_before
        assert dump(conn, "agent_hub.invocation_outbox_event") == events_before
        assert {v: c for v, c in ledger(conn).items() if v in LEGACY_VERSIONS} == ledger_before
        # The identity, the trigger and its function came along and work in the new schema.
        w = f.world(conn)
        new_id = f.enqueue(conn, w)
        assert new_id > max(ids.values())
        conn.execute("UPDATE agent_hub.invocation_outbox SET status = 'cancelled', finished_at = now() WHERE id = %s",
                     (ids["pending"],))
        reasons = [r["reason"] for r in conn.execute(
            "SELECT reason FROM agent_hub.invocation_outbox_event WHERE outbox_id = ANY(%s) ORDER BY id",
            ([new_id, ids["pending"]],)).fetchall()]
        assert reasons == ["queued", "queued", "finished"]
        assert conn.execute(migrate.query("verify/stray_objects")).fetchall() == []
    assert migrate.apply(empty_db_url, out=quiet()) == []


def test_upgrade_of_a_partly_migrated_install_moves_what_is_there_then_applies_the_rest(
    empty_db_url: str, prisma_only_objects: set
) -> None:
    install_public_layout(empty_db_url, LEGACY_VERSIONS[:2])
    applied = migrate.apply(empty_db_url, out=quiet())
    assert applied == [m.version for m in migrate.discover()][2:]
    assert public_objects(empty_db_url) == prisma_only_objects
    with connect(empty_db_url) as conn:
        f.enqueue(conn, f.world(conn))
        assert conn.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox_event").fetchone()["n"] == 1


def test_concurrent_upgrades_move_once_and_all_succeed(empty_db_url: str, prisma_only_objects: set) -> None:
    install_public_layout(empty_db_url)
    outs = [io.StringIO() for _ in range(4)]
    errors: list[BaseException] = []

    def run(out: io.StringIO) -> None:
        try:
            migrate.apply(empty_db_url, out=out)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(o,)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum("moved this service's objects" in o.getvalue() for o in outs) == 1
    assert public_objects(empty_db_url) == prisma_only_objects


def test_an_edited_legacy_migration_is_refused_before_anything_moves(empty_db_url: str) -> None:
    install_public_layout(empty_db_url)
    with connect(empty_db_url) as conn:
        conn.execute("UPDATE public.schema_migrations SET checksum = 'not-the-file' WHERE version = %s", (LEGACY_VERSIONS[1],))
    with pytest.raises(migrate.MigrationError, match=f"migration {LEGACY_VERSIONS[1]} was edited"):
        migrate.apply(empty_db_url, out=quiet())
    with connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('public.invocation_outbox') IS NOT NULL AS e").fetchone()["e"]
        assert conn.execute("SELECT to_regnamespace('agent_hub') IS NULL AS e").fetchone()["e"]


def test_someone_elses_schema_migrations_table_in_public_is_left_alone(empty_db_url: str) -> None:
    with connect(empty_db_url) as conn:
        conn.execute("CREATE TABLE public.schema_migrations (version TEXT PRIMARY KEY, checksum TEXT NOT NULL, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO public.schema_migrations (version, checksum) VALUES ('20240101_rails_users', 'x')")
    migrate.apply(empty_db_url, prisma=True, out=quiet())
    with connect(empty_db_url) as conn:
        assert conn.execute("SELECT version FROM public.schema_migrations").fetchall() == [{"version": "20240101_rails_users"}]
        assert set(ledger(conn)) == {m.version for m in migrate.discover()}
    # Nor does verify mistake it for ours: same columns, none of our versions.
    checks = {c.name: c for c in verify.check_database(empty_db_url)}
    assert checks["schema"].ok, checks["schema"].detail


def test_an_old_version_migrating_after_the_move_is_refused_and_reported_by_verify(empty_db_url: str) -> None:
    migrate.apply(empty_db_url, prisma=True, out=quiet())
    # What a version from before the move does when it is deployed again (a rollback): its objects in public.
    with connect(empty_db_url) as conn:
        conn.execute("CREATE TABLE public.schema_migrations (version TEXT PRIMARY KEY, checksum TEXT NOT NULL, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        m = migrate.discover()[0]
        conn.execute(m.sql)
        conn.execute("INSERT INTO public.schema_migrations (version, checksum) VALUES (%s, %s)", (m.version, m.checksum))
    with pytest.raises(migrate.MigrationError, match="ledger is in both public and agent_hub"):
        migrate.apply(empty_db_url, out=quiet())
    checks = {c.name: c for c in verify.check_database(empty_db_url)}
    assert not checks["schema"].ok
    assert "table public.invocation_outbox" in checks["schema"].detail
    assert "type public.invocation_status" in checks["schema"].detail
    assert "table public.schema_migrations" in checks["schema"].detail


def test_verify_says_every_object_is_in_agent_hub_on_a_fresh_install(empty_db_url: str) -> None:
    migrate.apply(empty_db_url, prisma=True, out=quiet())
    checks = {c.name: c for c in verify.check_database(empty_db_url)}
    assert checks["schema"].ok and checks["schema"].detail == "every object of ours is in agent_hub"
    assert checks["migrations"].ok
