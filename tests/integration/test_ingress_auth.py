"""Caller authentication (INGRESS_TOKEN): the Flask app on a real Postgres, and `python -m ingress`'s bind guard.

A refused request must write nothing: no outbox row, whatever its body says.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from core.config import ConfigError, IngressConfig
from ingress.__main__ import _is_loopback
from ingress.app import create_app
from ingress.auth import bearer_problem
from tests import factories as f
from tests.integration.localpiston_proc import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "t0k3n-" + "a" * 26


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    app = create_app(IngressConfig.from_env({"DATABASE_URL": db_url, "DB_POOL_MIN": "0", "INGRESS_TOKEN": TOKEN}))
    yield app
    app.extensions["pool"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def outbox_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox").fetchone()
    assert row is not None
    return int(row["n"])


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic " + TOKEN, TOKEN, "Bearer " + TOKEN[:-1], "Bearer " + TOKEN + "x",
     "Bearer " + TOKEN.upper(), "Bearer tökén-ünïcødé-ßßßßßßßßßßßß"],
    ids=["absent", "empty", "no-token", "blank-token", "basic", "bare", "short", "long", "case", "non-ascii"],
)
def test_invoke_without_the_right_bearer_token_is_401_and_queues_nothing(
    client: FlaskClient, conn: psycopg.Connection, header: str | None
) -> None:
    w = f.world(conn)
    headers = {} if header is None else {"Authorization": header}
    resp = client.post(w.invoke_path, json=w.invoke_body(), headers=headers)
    assert resp.status_code == 401
    body = resp.get_json()
    assert body["error"] == "unauthorized" and body["message"]
    assert TOKEN not in resp.get_data(as_text=True)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.headers.get("X-Request-ID")
    assert outbox_count(conn) == 0


def test_invoke_with_the_bearer_token_is_accepted(client: FlaskClient, conn: psycopg.Connection) -> None:
    w = f.world(conn)
    resp = client.post(w.invoke_path, json=w.invoke_body(), headers={"Authorization": f"bearer  {TOKEN} "})
    assert resp.status_code == 202, resp.get_json()
    assert outbox_count(conn) == 1


def test_unauthenticated_caller_is_refused_before_the_body_is_looked_at(client: FlaskClient, conn: psycopg.Connection) -> None:
    # Oversized, wrong content type, wrong method, unknown route under /api: all 401, nothing learnt.
    assert client.post("/api/agents/x/invoke", data=b"x" * 10_000_000, content_type="application/json").status_code == 401
    assert client.post("/api/agents/x/invoke", data=b"hi", content_type="text/plain").status_code == 401
    assert client.get("/api/agents/x/invoke").status_code == 401
    assert client.post("/api/other").status_code == 401
    assert outbox_count(conn) == 0


def test_health_and_readiness_need_no_token(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_without_a_configured_token_the_app_needs_no_header(db_url: str, conn: psycopg.Connection) -> None:
    app = create_app(IngressConfig.from_env({"DATABASE_URL": db_url, "DB_POOL_MIN": "0"}))
    try:
        w = f.world(conn)
        assert app.test_client().post(w.invoke_path, json=w.invoke_body()).status_code == 202
    finally:
        app.extensions["pool"].close()


@pytest.mark.parametrize(("header", "problem"), [
    (None, "missing bearer token"),
    ("Token abc", "malformed Authorization header"),
    ("Bearer nope", "invalid bearer token"),
    ("Bearer \udcff\ud800", "invalid bearer token"),
    (f"Bearer {TOKEN}", None),
])
def test_bearer_problem_names_the_reason_without_echoing_the_header(header: str | None, problem: str | None) -> None:
    assert bearer_problem(header, TOKEN) == problem


@pytest.mark.parametrize("value", ["short", " " + TOKEN, TOKEN + "\n", "a b" * 10])
def test_a_weak_or_malformed_token_stops_the_config_without_echoing_it(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        IngressConfig.from_env({"DATABASE_URL": "postgresql://u@h/db", "INGRESS_TOKEN": value})
    assert "INGRESS_TOKEN" in str(err.value) and value.strip() not in str(err.value)


def test_the_token_is_not_in_the_config_repr() -> None:
    cfg = IngressConfig.from_env({"DATABASE_URL": "postgresql://u@h/db", "INGRESS_TOKEN": TOKEN})
    assert cfg.ingress_token == TOKEN and TOKEN not in repr(cfg)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.com", False),
])
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert _is_loopback(host) is loopback


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INGRESS_TOKEN", "ALLOW_UNAUTHENTICATED", "PORT")}
    return {**env, "PYTHONPATH": str(REPO), "WEB_CONCURRENCY": "1", **settings}


def test_web_refuses_a_public_bind_without_a_token(db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ingress", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=REPO, env=_env(DATABASE_URL=db_url), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "INGRESS_TOKEN" in result.stderr and "ALLOW_UNAUTHENTICATED" in result.stderr


@pytest.mark.parametrize(("settings", "warns"), [
    ({"ALLOW_UNAUTHENTICATED": "1"}, True),
    ({"INGRESS_TOKEN": TOKEN}, False),
], ids=["allowed-unauthenticated", "with-token"])
def test_web_binds_a_public_address_when_authenticated_or_explicitly_allowed(
    db_url: str, tmp_path: Path, settings: dict[str, str], warns: bool
) -> None:
    port = free_port()
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ingress", "--host", "0.0.0.0", "--port", str(port)],
                                cwd=REPO, env=_env(DATABASE_URL=db_url, **settings), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90  # gunicorn's boot can take tens of seconds on a loaded 2-core machine
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or the worker still booting
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(20)
    text = log.read_text()
    assert ('"unauthenticated"' in text) is warns, text
    assert TOKEN not in text
