"""POST /api/agents/<agentId>/invoke against a real, migrated Postgres (Flask test client).

Every non-2xx answer must leave nothing behind (no outbox row, no NOTIFY): Next.js
deletes the Job on any error, so a row written anyway would run a deleted job.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg.rows import dict_row

from core import migrate
from core.config import IngressConfig
from core.sqlfiles import query
from ingress.app import create_app
from tests import factories as f
from tests import pg
from tests.waiting import wait_until

CHANNEL = "invocation_outbox"
MAX_BODY_BYTES = 4096
MAX_PROMPT_CHARS = 100
MAX_ID_CHARS = 40  # factories' ids are 36-character UUIDs
MAX_ATTEMPTS = 3


def make_app(db_url: str, **env: str) -> Flask:
    settings = {
        "DATABASE_URL": db_url,
        "DB_POOL_MIN": "0",
        "DB_POOL_MAX": "8",
        "DB_POOL_TIMEOUT": "5",
        "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "MAX_PROMPT_CHARS": str(MAX_PROMPT_CHARS),
        "MAX_ID_CHARS": str(MAX_ID_CHARS),
        "OUTBOX_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    }
    settings.update(env)
    return create_app(IngressConfig.from_env(settings))


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    app = make_app(db_url)
    yield app
    app.extensions["pool"].close()  # before the per-test database is dropped


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Listener:
    """A separate connection LISTENing on the outbox channel, as a dispatcher would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute(f"LISTEN {CHANNEL}")

    def wait(self, seconds: float, stop_after: int | None = None) -> list[str]:
        """Payloads that arrive within ``seconds`` (or as soon as ``stop_after`` have)."""
        return [n.payload for n in self.conn.notifies(timeout=seconds, stop_after=stop_after)]

    def received(self) -> list[str]:
        """Payloads delivered so far, proven complete by a sentinel NOTIFY sent now.

        Notifications are delivered in commit order, so anything the finished request
        committed arrives before the sentinel; no need to sleep and hope.
        """
        token = f"sentinel-{uuid.uuid4()}"
        with psycopg.connect(self.url, autocommit=True) as other:
            other.execute("SELECT pg_notify(%s, %s)", (CHANNEL, token))
        out: list[str] = []
        for n in self.conn.notifies(timeout=5):
            if n.payload == token:
                return out
            out.append(n.payload)
        raise AssertionError("the sentinel notification never arrived")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def listener(db_url: str) -> Iterator[Listener]:
    lst = Listener(db_url)
    yield lst
    lst.close()


@dataclass
class Shared:
    """One migrated database, app and listener shared by the tests that must write nothing.

    Refusals leave no trace by definition, so they need not pay for a fresh database each.
    """

    client: FlaskClient
    conn: psycopg.Connection
    listener: Listener


@pytest.fixture(scope="module")
def shared_db(pg_server_url: str, template_name: str) -> Iterator[Shared]:
    name, url = pg.create_from_template(pg_server_url, template_name)
    app = make_app(url)
    listener = Listener(url)
    try:
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            yield Shared(app.test_client(), conn, listener)
    finally:
        listener.close()
        app.extensions["pool"].close()
        pg.drop(pg_server_url, name)


@pytest.fixture
def shared(shared_db: Shared) -> Shared:
    # Start each test from an empty outbox and a drained channel, so a failure stays with its test.
    shared_db.conn.execute("TRUNCATE agent_hub.invocation_outbox CASCADE")  # and its events (0003)
    shared_db.listener.received()
    return shared_db


def outbox_rows(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM agent_hub.invocation_outbox ORDER BY id").fetchall()


def post(client: FlaskClient, path: str, payload: Any) -> Any:
    return client.post(path, json=payload)


def post_raw(client: FlaskClient, path: str, data: bytes, content_type: str = "application/json") -> Any:
    return client.post(path, data=data, headers={"Content-Type": content_type})


# ---------------------------------------------------------------------------
# The happy path and idempotent repeats
# ---------------------------------------------------------------------------


def test_nextjs_request_is_accepted_with_202_and_one_outbox_row(
    client: FlaskClient, conn: psycopg.Connection, listener: Listener
) -> None:
    w = f.world(conn)
    before = datetime.now(UTC)
    resp = client.post(w.invoke_path, data=json.dumps(w.invoke_body()), headers={"Content-Type": "application/json"})

    assert resp.status_code == 202
    assert resp.mimetype == "application/json"
    rows = outbox_rows(conn)
    assert len(rows) == 1
    row = rows[0]
    assert resp.get_json() == {
        "jobId": w.job_id,
        "invocationId": row["id"],
        "status": "queued",
        "queuedAt": row["created_at"].isoformat(),
    }
    assert list(resp.get_json()) == ["jobId", "invocationId", "status", "queuedAt"]
    assert (row["job_id"], row["agent_id"], row["session_id"], row["user_id"], row["prompt"]) == (
        w.job_id,
        w.agent_id,
        w.session_id,
        w.user_id,
        w.prompt,
    )
    assert row["status"] == "pending"
    assert row["attempts"] == 0
    assert row["max_attempts"] == MAX_ATTEMPTS  # OUTBOX_MAX_ATTEMPTS is applied
    assert row["next_attempt_at"] <= datetime.now(UTC)
    assert row["created_at"] >= before - timedelta(seconds=5)
    assert all(row[c] is None for c in ("lease_owner", "lease_expires_at", "last_error", "result", "started_at", "finished_at"))
    assert listener.received() == [str(row["id"])]


def test_ingress_leaves_the_prisma_job_untouched(client: FlaskClient, conn: psycopg.Connection) -> None:
    w = f.world(conn)
    before = conn.execute('SELECT * FROM "Job" WHERE id = %s', (w.job_id,)).fetchone()
    assert client.post(w.invoke_path, json=w.invoke_body()).status_code == 202
    assert conn.execute('SELECT * FROM "Job" WHERE id = %s', (w.job_id,)).fetchone() == before


def test_same_post_again_answers_200_with_the_same_row_and_writes_nothing(
    client: FlaskClient, conn: psycopg.Connection, listener: Listener
) -> None:
    w = f.world(conn)
    first = client.post(w.invoke_path, json=w.invoke_body())
    assert first.status_code == 202
    assert len(listener.received()) == 1

    again = client.post(w.invoke_path, json=w.invoke_body())
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert len(outbox_rows(conn)) == 1
    assert listener.received() == []


def test_repeat_after_the_dispatcher_took_the_job_still_answers_200(client: FlaskClient, conn: psycopg.Connection) -> None:
    w = f.world(conn)
    first = client.post(w.invoke_path, json=w.invoke_body()).get_json()
    conn.execute("UPDATE \"Job\" SET status = 'PROCESSING' WHERE id = %s", (w.job_id,))
    again = client.post(w.invoke_path, json=w.invoke_body())
    assert again.status_code == 200
    assert again.get_json()["invocationId"] == first["invocationId"]


@pytest.mark.parametrize(
    "change",
    [{"prompt": "a different prompt"}, {"sessionId": "other-session"}, {"userId": "other-user"}],
)
def test_repeat_of_a_queued_job_with_a_different_body_is_409_job_already_queued(
    client: FlaskClient, conn: psycopg.Connection, listener: Listener, change: dict[str, str]
) -> None:
    w = f.world(conn)
    assert client.post(w.invoke_path, json=w.invoke_body()).status_code == 202
    listener.received()

    resp = client.post(w.invoke_path, json={**w.invoke_body(), **change})
    assert resp.status_code == 409
    assert resp.get_json()["error"] == "job_already_queued"
    assert resp.get_json()["field"] == "jobId"
    assert len(outbox_rows(conn)) == 1
    assert outbox_rows(conn)[0]["prompt"] == w.prompt
    assert listener.received() == []


def test_repeat_of_a_queued_job_under_another_agent_is_409(client: FlaskClient, conn: psycopg.Connection) -> None:
    w = f.world(conn)
    other_agent = f.agent(conn, w.user_id, name="other")
    assert client.post(w.invoke_path, json=w.invoke_body()).status_code == 202
    resp = client.post(f"/api/agents/{other_agent}/invoke", json=w.invoke_body())
    assert (resp.status_code, resp.get_json()["error"]) == (409, "job_already_queued")
    assert len(outbox_rows(conn)) == 1


def test_each_turn_of_a_session_gets_its_own_row_and_notification(
    client: FlaskClient, conn: psycopg.Connection, listener: Listener
) -> None:
    w1 = f.world(conn)
    w2 = f.next_turn(conn, w1, "and then?")
    r1 = client.post(w1.invoke_path, json=w1.invoke_body())
    r2 = client.post(w2.invoke_path, json=w2.invoke_body())
    assert (r1.status_code, r2.status_code) == (202, 202)
    ids = [r1.get_json()["invocationId"], r2.get_json()["invocationId"]]
    assert ids[0] < ids[1]
    assert [r["job_id"] for r in outbox_rows(conn)] == [w1.job_id, w2.job_id]
    assert listener.received() == [str(i) for i in ids]


def test_prompt_is_stored_exactly_as_sent(client: FlaskClient, conn: psycopg.Connection) -> None:
    prompt = '  multi\nline 👋 «quotes» \\ "x" \t'
    w = f.world(conn, prompt=prompt)
    assert client.post(w.invoke_path, json=w.invoke_body()).status_code == 202
    assert outbox_rows(conn)[0]["prompt"] == prompt


def test_prompt_at_exactly_the_limit_is_accepted(client: FlaskClient, conn: psycopg.Connection) -> None:
    w = f.world(conn, prompt="é" * MAX_PROMPT_CHARS)
    assert client.post(w.invoke_path, json=w.invoke_body()).status_code == 202


def test_content_type_with_charset_is_accepted(client: FlaskClient, conn: psycopg.Connection) -> None:
    w = f.world(conn)
    resp = post_raw(client, w.invoke_path, json.dumps(w.invoke_body()).encode(), "application/json; charset=utf-8")
    assert resp.status_code == 202


def test_request_id_is_echoed_or_generated(client: FlaskClient, conn: psycopg.Connection) -> None:
    w = f.world(conn)
    resp = client.post(w.invoke_path, json=w.invoke_body(), headers={"X-Request-ID": "req-123"})
    assert resp.headers["X-Request-ID"] == "req-123"
    assert len(client.get("/healthz").headers["X-Request-ID"]) == 32


# ---------------------------------------------------------------------------
# Bad requests: status, code and field, and nothing written or notified
# ---------------------------------------------------------------------------


def assert_rejected(resp: Any, status: int, code: str, field: str | None, conn: psycopg.Connection, listener: Listener) -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body.get("field") == field
    assert set(body) <= {"error", "message", "field"}
    assert outbox_rows(conn) == []
    assert listener.received() == []


@dataclass(frozen=True)
class Bad:
    """A body change and the error it must get."""

    change: dict[str, Any]
    status: int
    code: str
    field: str | None
    drop: str | None = None


def _bad_body_cases() -> list[Any]:
    cases = []
    for field in ("jobId", "sessionId", "userId", "prompt"):
        cases += [
            pytest.param(Bad({}, 400, "missing_field", field, drop=field), id=f"{field}-missing"),
            pytest.param(Bad({field: None}, 400, "missing_field", field), id=f"{field}-null"),
            pytest.param(Bad({field: 123}, 400, "invalid_field", field), id=f"{field}-number"),
            pytest.param(Bad({field: ["x"]}, 400, "invalid_field", field), id=f"{field}-array"),
            pytest.param(Bad({field: {"x": 1}}, 400, "invalid_field", field), id=f"{field}-object"),
            pytest.param(Bad({field: True}, 400, "invalid_field", field), id=f"{field}-bool"),
            pytest.param(Bad({field: ""}, 400, "invalid_field", field), id=f"{field}-empty"),
            pytest.param(Bad({field: "a\x00b"}, 400, "invalid_field", field), id=f"{field}-nul"),
        ]
    for field in ("jobId", "sessionId", "userId"):
        cases += [
            pytest.param(Bad({field: "x" * (MAX_ID_CHARS + 1)}, 400, "invalid_field", field), id=f"{field}-too-long"),
            pytest.param(Bad({field: " padded "}, 400, "invalid_field", field), id=f"{field}-spaces"),
        ]
    cases.append(
        pytest.param(Bad({"prompt": "p" * (MAX_PROMPT_CHARS + 1)}, 413, "prompt_too_large", "prompt"), id="prompt-too-long")
    )
    return cases


@pytest.mark.parametrize("bad", _bad_body_cases())
def test_bad_field_is_rejected_naming_it_and_nothing_is_queued(shared: Shared, bad: Bad) -> None:
    client, conn, listener = shared.client, shared.conn, shared.listener
    w = f.world(conn)
    payload: dict[str, Any] = {**w.invoke_body(), **bad.change}
    if bad.drop:
        del payload[bad.drop]
    assert_rejected(post(client, w.invoke_path, payload), bad.status, bad.code, bad.field, conn, listener)


@pytest.mark.parametrize("field", ["jobId", "sessionId", "userId", "prompt"])
def test_lone_surrogate_in_raw_json_is_invalid_field(shared: Shared, field: str) -> None:
    client, conn, listener = shared.client, shared.conn, shared.listener
    w = f.world(conn)
    # Built by hand so the wire bytes hold exactly the escape a JS client could send: \ud800 alone.
    parts = {k: json.dumps(v) for k, v in w.invoke_body().items()}
    parts[field] = '"abc\\ud800def"'
    raw = "{" + ", ".join(f'"{k}": {v}' for k, v in parts.items()) + "}"
    assert "\\ud800" in raw
    assert_rejected(post_raw(client, w.invoke_path, raw.encode()), 400, "invalid_field", field, conn, listener)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[]", id="array"),
        pytest.param(b'["sessionId"]', id="array-of-strings"),
        pytest.param(b'"text"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"true", id="bool"),
        pytest.param(b"null", id="null"),
    ],
)
def test_body_that_is_not_an_object_is_400_invalid_body(shared: Shared, raw: bytes) -> None:
    client, conn, listener = shared.client, shared.conn, shared.listener
    w = f.world(conn)
    assert_rejected(post_raw(client, w.invoke_path, raw), 400, "invalid_body", None, conn, listener)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"{'jobId': 'x'}", id="single-quotes"),
        pytest.param(b'{"jobId": "x",}', id="trailing-comma"),
        pytest.param(b'{"prompt": "\xff\xfe"}', id="invalid-utf8"),
        pytest.param(b"[" * 3000, id="deeply-nested"),
    ],
)
def test_unparsable_body_is_400_invalid_json(shared: Shared, raw: bytes) -> None:
    client, conn, listener = shared.client, shared.conn, shared.listener
    w = f.world(conn)
    assert_rejected(post_raw(client, w.invoke_path, raw), 400, "invalid_json", None, conn, listener)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_body_not_sent_as_json_is_415(shared: Shared, content_type: str | None) -> None:
    client, conn, listener = shared.client, shared.conn, shared.listener
    w = f.world(conn)
    headers = {"Content-Type": content_type} if content_type else {}
    resp = client.post(w.invoke_path, data=json.dumps(w.invoke_body()), headers=headers)
    assert_rejected(resp, 415, "unsupported_media_type", None, conn, listener)


def test_body_over_max_body_bytes_is_413_body_too_large(shared: Shared) -> None:
    client, conn, listener = shared.client, shared.conn, shared.listener
    w = f.world(conn)
    payload = {**w.invoke_body(), "prompt": "p" * MAX_BODY_BYTES}
    resp = post(client, w.invoke_path, payload)
    assert_rejected(resp, 413, "body_too_large", None, conn, listener)
    assert str(MAX_BODY_BYTES) in resp.get_json()["message"]


def test_body_just_under_max_body_bytes_is_not_refused_for_its_size(client: FlaskClient, conn: psycopg.Connection) -> None:
    w = f.world(conn)
    payload = {**w.invoke_body(), "pad": ""}
    payload["pad"] = "x" * (MAX_BODY_BYTES - len(json.dumps(payload).encode()))
    data = json.dumps(payload).encode()
    assert len(data) == MAX_BODY_BYTES
    assert post_raw(client, w.invoke_path, data).status_code == 202


def test_bad_agent_id_in_the_path_is_400_invalid_field(shared: Shared) -> None:
    client, conn, listener = shared.client, shared.conn, shared.listener
    w = f.world(conn)
    resp = post(client, "/api/agents/a%00b/invoke", w.invoke_body())
    assert_rejected(resp, 400, "invalid_field", "agentId", conn, listener)
    resp = post(client, f"/api/agents/{'a' * (MAX_ID_CHARS + 1)}/invoke", w.invoke_body())
    assert_rejected(resp, 400, "invalid_field", "agentId", conn, listener)


# Database checks. Each builds, from a valid world, the (path, body) of a request the hub's tables refuse.
Scenario = Callable[[psycopg.Connection, f.World], tuple[str, dict[str, Any]]]


def _unknown_agent(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
    return f"/api/agents/{f.new_id()}/invoke", w.invoke_body()


def _unknown_job(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
    return w.invoke_path, {**w.invoke_body(), "jobId": f.new_id()}


def _unknown_session(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
    return w.invoke_path, {**w.invoke_body(), "sessionId": f.new_id()}


def _job_of_type(job_type: str) -> Scenario:
    def build(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
        jid = f.job(conn, w.user_id, w.agent_id, w.session_id, type_=job_type)
        return w.invoke_path, {**w.invoke_body(), "jobId": jid}

    return build


def _job_in_status(status: str) -> Scenario:
    def build(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
        conn.execute('UPDATE "Job" SET status = %s::"JobStatus" WHERE id = %s', (status, w.job_id))
        return w.invoke_path, w.invoke_body()

    return build


def _job_of_other_user(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
    jid = f.job(conn, f.user(conn, "Eve"), w.agent_id, w.session_id)
    return w.invoke_path, {**w.invoke_body(), "jobId": jid}


def _job_of_other_agent(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
    jid = f.job(conn, w.user_id, f.agent(conn, w.user_id, "other"), w.session_id)
    return w.invoke_path, {**w.invoke_body(), "jobId": jid}


def _job_without_agent(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
    jid = f.job(conn, w.user_id, None, w.session_id)
    return w.invoke_path, {**w.invoke_body(), "jobId": jid}


def _job_of_other_session(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
    jid = f.job(conn, w.user_id, w.agent_id, f.session(conn, w.user_id, w.agent_id))
    return w.invoke_path, {**w.invoke_body(), "jobId": jid}


def _job_without_session(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
    jid = f.job(conn, w.user_id, w.agent_id, None)
    return w.invoke_path, {**w.invoke_body(), "jobId": jid}


def _session_of_other_user(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
    # The job is the requester's, but points at (and the request names) a session owned by someone else.
    sid = f.session(conn, f.user(conn, "Eve"), w.agent_id)
    jid = f.job(conn, w.user_id, w.agent_id, sid)
    return w.invoke_path, {**w.invoke_body(), "jobId": jid, "sessionId": sid}


def _session_of_other_agent(conn: psycopg.Connection, w: f.World) -> tuple[str, dict[str, Any]]:
    sid = f.session(conn, w.user_id, f.agent(conn, w.user_id, "other"))
    jid = f.job(conn, w.user_id, w.agent_id, sid)
    return w.invoke_path, {**w.invoke_body(), "jobId": jid, "sessionId": sid}


DB_CASES = [
    pytest.param(_unknown_agent, 404, "agent_not_found", "agentId", id="unknown-agent"),
    pytest.param(_unknown_job, 404, "job_not_found", "jobId", id="unknown-job"),
    pytest.param(_unknown_session, 404, "session_not_found", "sessionId", id="unknown-session"),
    pytest.param(_job_of_type("AGENT_CREATE"), 409, "job_wrong_type", "jobId", id="job-type-agent-create"),
    pytest.param(_job_of_type("DATASET_UPDATE"), 409, "job_wrong_type", "jobId", id="job-type-dataset-update"),
    *[
        pytest.param(_job_in_status(s), 409, "job_not_queued", "jobId", id=f"job-{s.lower()}")
        for s in ("PROCESSING", "SUCCEEDED", "FAILED", "CANCELLED")
    ],
    pytest.param(_job_of_other_user, 409, "job_mismatch", "userId", id="job-user-differs"),
    pytest.param(_job_of_other_agent, 409, "job_mismatch", "agentId", id="job-agent-differs"),
    pytest.param(_job_without_agent, 409, "job_mismatch", "agentId", id="job-agent-null"),
    pytest.param(_job_of_other_session, 409, "job_mismatch", "sessionId", id="job-session-differs"),
    pytest.param(_job_without_session, 409, "job_mismatch", "sessionId", id="job-session-null"),
    pytest.param(_session_of_other_user, 409, "session_mismatch", "userId", id="session-of-other-user"),
    pytest.param(_session_of_other_agent, 409, "session_mismatch", "agentId", id="session-of-other-agent"),
]


@pytest.mark.parametrize(("scenario", "status", "code", "field"), DB_CASES)
def test_request_the_hub_tables_refuse_is_rejected_and_nothing_is_queued(
    shared: Shared, scenario: Scenario, status: int, code: str, field: str
) -> None:
    client, conn, listener = shared.client, shared.conn, shared.listener
    w = f.world(conn)
    path, payload = scenario(conn, w)
    assert_rejected(post(client, path, payload), status, code, field, conn, listener)


def test_refused_job_can_still_be_queued_once_it_is_valid(client: FlaskClient, conn: psycopg.Connection) -> None:
    # A refusal leaves no trace that would turn a later valid request into a repeat or a conflict.
    w = f.world(conn)
    conn.execute("UPDATE \"Job\" SET status = 'PROCESSING' WHERE id = %s", (w.job_id,))
    assert client.post(w.invoke_path, json=w.invoke_body()).status_code == 409
    conn.execute("UPDATE \"Job\" SET status = 'QUEUED' WHERE id = %s", (w.job_id,))
    assert client.post(w.invoke_path, json=w.invoke_body()).status_code == 202


# ---------------------------------------------------------------------------
# Routing, health and readiness
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/agents", "/api/agents/a/invoke/extra", "/api/agents//invoke", "/invoke"])
def test_unknown_route_is_json_404_not_found(shared: Shared, path: str) -> None:
    client = shared.client
    resp = client.post(path, json={})
    assert (resp.status_code, resp.mimetype) == (404, "application/json")
    assert resp.get_json()["error"] == "not_found"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_wrong_method_on_invoke_is_json_405_with_allow_header(shared: Shared, method: str) -> None:
    client = shared.client
    resp = client.open("/api/agents/a/invoke", method=method, json={})
    assert (resp.status_code, resp.mimetype) == (405, "application/json")
    assert resp.get_json()["error"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


def test_post_to_healthz_is_json_405(shared: Shared) -> None:
    client = shared.client
    resp = client.post("/healthz")
    assert (resp.status_code, resp.get_json()["error"]) == (405, "method_not_allowed")


def test_healthz_is_200(shared: Shared) -> None:
    client = shared.client
    resp = client.get("/healthz")
    assert (resp.status_code, resp.get_json()) == (200, {"status": "ok"})


def test_readyz_is_200_on_the_migrated_database(client: FlaskClient) -> None:
    resp = client.get("/readyz")
    assert (resp.status_code, resp.get_json()) == (200, {"status": "ready"})


def test_readyz_is_503_not_ready_on_an_empty_database(empty_db_url: str) -> None:
    app = make_app(empty_db_url)
    try:
        resp = app.test_client().get("/readyz")
        assert (resp.status_code, resp.get_json()["error"]) == (503, "not_ready")
        assert "migrations" in resp.get_json()["message"]
    finally:
        app.extensions["pool"].close()


def test_readyz_is_503_when_the_prisma_tables_are_missing(empty_db_url: str) -> None:
    migrate.apply(empty_db_url, prisma=False, out=io.StringIO())
    app = make_app(empty_db_url)
    try:
        resp = app.test_client().get("/readyz")
        assert (resp.status_code, resp.get_json()["error"]) == (503, "not_ready")
        assert "Prisma" in resp.get_json()["message"]
    finally:
        app.extensions["pool"].close()


def test_readyz_is_503_when_a_migration_is_pending(db_url: str, conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM agent_hub.schema_migrations")
    app = make_app(db_url)
    try:
        resp = app.test_client().get("/readyz")
        assert (resp.status_code, resp.get_json()["error"]) == (503, "not_ready")
        assert "pending" in resp.get_json()["message"]
    finally:
        app.extensions["pool"].close()


# ---------------------------------------------------------------------------
# NOTIFY after commit, rollback on failure
# ---------------------------------------------------------------------------


def _enqueue_params(w: f.World) -> dict[str, Any]:
    return w.enqueue_params()


def test_notify_is_delivered_after_commit_not_before(db_url: str, conn: psycopg.Connection, listener: Listener) -> None:
    w = f.world(conn)
    with psycopg.connect(db_url, row_factory=dict_row) as writer:
        row = writer.execute(query("ingress/enqueue"), _enqueue_params(w)).fetchone()
        assert row is not None and row["id"] is not None
        # The transaction is still open: nothing may reach a dispatcher yet (the sentinel proves it).
        assert listener.received() == []
        writer.commit()
        assert listener.wait(5, stop_after=1) == [str(row["id"])]


def test_enqueue_sql_rolled_back_leaves_no_row_and_no_notification(
    db_url: str, conn: psycopg.Connection, listener: Listener
) -> None:
    w = f.world(conn)
    with psycopg.connect(db_url, row_factory=dict_row) as writer:
        with pytest.raises(RuntimeError), writer.transaction():
            assert writer.execute(query("ingress/enqueue"), _enqueue_params(w)).fetchone()["id"] is not None
            raise RuntimeError("failure after the insert")
        assert outbox_rows(conn) == []
    assert listener.received() == []


def test_enqueue_sql_on_a_queued_job_inserts_nothing_and_sends_nothing(
    db_url: str, conn: psycopg.Connection, listener: Listener
) -> None:
    w = f.world(conn)
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as writer:
        first_id = writer.execute(query("ingress/enqueue"), _enqueue_params(w)).fetchone()["id"]
        assert [r["id"] for r in outbox_rows(conn)] == [first_id]
        assert len(listener.received()) == 1
        again = writer.execute(query("ingress/enqueue"), _enqueue_params(w)).fetchone()
        assert (again["id"], again["outbox_id"]) == (None, first_id)  # a repeat: found, not inserted
    assert listener.received() == []


_RAISE_FN = """
CREATE FUNCTION test_boom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'forced failure after the outbox insert'; END $$
"""


@pytest.mark.parametrize(
    "trigger",
    [
        pytest.param(
            "CREATE TRIGGER test_boom AFTER INSERT ON agent_hub.invocation_outbox FOR EACH ROW EXECUTE FUNCTION test_boom()",
            id="after-insert",
        ),
        pytest.param(
            "CREATE CONSTRAINT TRIGGER test_boom AFTER INSERT ON agent_hub.invocation_outbox DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION test_boom()",
            id="at-commit",
        ),
    ],
)
def test_failure_after_the_insert_rolls_back_row_and_notification(
    client: FlaskClient, conn: psycopg.Connection, listener: Listener, trigger: str
) -> None:
    w = f.world(conn)
    conn.execute(_RAISE_FN)
    conn.execute(trigger)

    resp = client.post(w.invoke_path, json=w.invoke_body())
    assert resp.status_code >= 500
    assert resp.mimetype == "application/json"
    assert resp.get_json()["error"] == "internal_error"
    assert outbox_rows(conn) == []
    assert listener.received() == []

    # The pooled connection is clean afterwards: the same request succeeds once the fault is gone.
    conn.execute("DROP TRIGGER test_boom ON agent_hub.invocation_outbox")
    assert client.post(w.invoke_path, json=w.invoke_body()).status_code == 202
    assert len(listener.received()) == 1


# ---------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------


def _post_concurrently(app: Flask, path: str, payload: dict[str, Any], n: int) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        results[i] = client.post(path, json=payload)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_eight_simultaneous_identical_posts_queue_exactly_once(app: Flask, conn: psycopg.Connection, listener: Listener) -> None:
    w = f.world(conn)
    responses = _post_concurrently(app, w.invoke_path, w.invoke_body(), 8)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 7 + [202]
    assert len({r.get_json()["invocationId"] for r in responses}) == 1
    assert len(outbox_rows(conn)) == 1
    assert listener.received() == [str(responses[0].get_json()["invocationId"])]


def test_racing_inserts_that_lose_on_the_unique_job_id_answer_200(
    app: Flask, db_url: str, conn: psycopg.Connection, listener: Listener
) -> None:
    # Block inserts so all 8 requests are in flight before any row exists; each then either sees the
    # winner's row (a repeat) or loses on the unique job_id and looks again (the ON CONFLICT path,
    # pinned on its own by the next test).
    w = f.world(conn)
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE agent_hub.invocation_outbox IN SHARE MODE")
        results: list[Any] = []
        thread = threading.Thread(target=lambda: results.extend(_post_concurrently(app, w.invoke_path, w.invoke_body(), 8)))
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                # pg_stat_activity keeps only the query's first 1 kB: match the file's first line
                "AND wait_event_type = 'Lock' AND query LIKE '-- ingress/enqueue%'"
            ).fetchone()
            if waiting and waiting["n"] == 8:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the 8 requests never all reached the insert")
        blocker.commit()
        thread.join(30)
    assert sorted(r.status_code for r in results) == [200] * 7 + [202]
    assert len({r.get_json()["invocationId"] for r in results}) == 1
    assert len(outbox_rows(conn)) == 1
    assert len(listener.received()) == 1


def test_a_post_that_loses_the_insert_to_an_uncommitted_twin_waits_and_answers_200_as_a_repeat(
    app: Flask, db_url: str, conn: psycopg.Connection, listener: Listener
) -> None:
    w = f.world(conn)
    with psycopg.connect(db_url, row_factory=dict_row) as twin:
        first = twin.execute(query("ingress/enqueue"), _enqueue_params(w)).fetchone()  # inserted, not committed
        assert first is not None and first["id"] is not None
        results: list[Any] = []
        thread = threading.Thread(target=lambda: results.append(app.test_client().post(w.invoke_path, json=w.invoke_body())))
        thread.start()
        # The request saw no row and now waits on the twin's uncommitted job_id.
        wait_until(lambda: conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE '-- ingress/enqueue%'").fetchone()["n"] == 1,
            what="the request to wait on the twin's row")
        assert thread.is_alive()
        twin.commit()
        thread.join(10)
    assert [r.status_code for r in results] == [200]
    assert results[0].get_json()["invocationId"] == first["id"]
    assert len(outbox_rows(conn)) == 1
    assert listener.received() == [str(first["id"])]


# ---------------------------------------------------------------------------
# Database unavailable
# ---------------------------------------------------------------------------


def test_database_down_answers_503_quickly_and_healthz_stays_200() -> None:
    app = make_app("postgresql://postgres@127.0.0.1:1/x", DB_POOL_TIMEOUT="0.5")
    try:
        client = app.test_client()
        started = time.monotonic()
        resp = client.post("/api/agents/a1/invoke", json={"sessionId": "s", "jobId": "j", "userId": "u", "prompt": "p"})
        elapsed = time.monotonic() - started
        assert resp.status_code == 503
        assert resp.mimetype == "application/json"
        assert resp.get_json()["error"] == "database_unavailable"
        assert resp.headers["Retry-After"] == "1"
        # The 0.5 s pool timeout answered, not the 5 s default: generous (8x) for a loaded machine, still below it.
        assert elapsed < 4
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
    finally:
        app.extensions["pool"].close()


def test_validation_errors_are_answered_even_while_the_database_is_down() -> None:
    app = make_app("postgresql://postgres@127.0.0.1:1/x", DB_POOL_TIMEOUT="0.5")
    try:
        resp = app.test_client().post("/api/agents/a1/invoke", json={"sessionId": "s", "jobId": "j", "userId": "u"})
        assert (resp.status_code, resp.get_json()["field"]) == (400, "prompt")
    finally:
        app.extensions["pool"].close()


def test_stuck_query_is_cut_by_the_statement_timeout_and_answers_503(
    db_url: str, conn: psycopg.Connection, listener: Listener
) -> None:
    w = f.world(conn)
    app = make_app(db_url, DB_STATEMENT_TIMEOUT_MS="200")
    try:
        with psycopg.connect(db_url) as blocker:
            blocker.execute("LOCK TABLE agent_hub.invocation_outbox IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            resp = app.test_client().post(w.invoke_path, json=w.invoke_body())
            elapsed = time.monotonic() - started
            blocker.rollback()
        assert (resp.status_code, resp.get_json()["error"]) == (503, "database_unavailable")
        # Cut by the 200 ms statement timeout (without it the request would wait for the lock for good); the
        # bound is generous (20x) for a loaded machine.
        assert elapsed < 4
        assert outbox_rows(conn) == []
        assert listener.received() == []
    finally:
        app.extensions["pool"].close()
