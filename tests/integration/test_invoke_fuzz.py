"""Property-based fuzzing of the invoke endpoint (hypothesis, fixed seed) on a real Postgres.

Thousands of generated requests (bodies, JSON shapes, headers, content types, methods, paths, raw
bytes) against the Flask app. For every one: no 5xx, a JSON error body on any refusal, an answer
within the deadline, and the outbox changed by exactly what the status promises: a refusal wrote
nothing, a 202 wrote exactly one row (for that jobId), a 200 repeat wrote nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from core.config import IngressConfig
from ingress.app import create_app
from tests import factories as f
from tests import pg

TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORLDS = 40
FUZZ = settings(
    derandomize=True,  # a fixed seed: the same examples on every run and machine
    database=None,     # nothing written to .hypothesis/
    deadline=timedelta(seconds=5),  # a request that hangs fails the example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Target:
    client: FlaskClient
    conn: psycopg.Connection
    worlds: list[f.World]
    expected_rows: int = 0  # only these tests write: one count query per request is enough

    def rows(self) -> int:
        row = self.conn.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox").fetchone()
        assert row is not None
        return int(row["n"])


@pytest.fixture(scope="module")
def target(pg_server_url: str, template_name: str) -> Iterator[Target]:
    name, url = pg.create_from_template(pg_server_url, template_name, prefix="fz")
    cfg = IngressConfig.from_env({
        "DATABASE_URL": url, "DB_POOL_MIN": "0", "DB_POOL_MAX": "4", "INGRESS_TOKEN": TOKEN,
        "MAX_BODY_BYTES": "4096", "MAX_PROMPT_CHARS": "200", "MAX_ID_CHARS": "40",
    })
    app = create_app(cfg)
    try:
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            worlds = [f.world(conn, prompt=f"prompt {i}") for i in range(WORLDS)]
            yield Target(app.test_client(), conn, worlds)
    finally:
        app.extensions["pool"].close()
        pg.drop(pg_server_url, name)


def check(target: Target, resp: Any, body: Any) -> None:
    """The invariants every answer must keep."""
    before, after = target.expected_rows, target.rows()
    target.expected_rows = after
    assert resp.status_code < 500, (resp.status_code, resp.get_data()[:300])
    if resp.status_code == 202:
        assert after == before + 1
        assert isinstance(body, dict) and resp.get_json()["jobId"] == body["jobId"]
        row = target.conn.execute("SELECT job_id FROM agent_hub.invocation_outbox WHERE job_id = %s", (body["jobId"],)).fetchall()
        assert len(row) == 1
    else:
        assert after == before, f"{resp.status_code} wrote {after - before} row(s)"
    if resp.status_code >= 400 and resp.request.method != "HEAD":  # HEAD answers carry no body
        payload = resp.get_json(silent=True)
        assert isinstance(payload, dict) and isinstance(payload.get("error"), str), resp.get_data()[:300]


# --- strategies -------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=60)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
weird_text = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", " ", "\t", "\ud800"]), max_size=50)
field_values = (json_values | weird_text | st.text(min_size=0, max_size=300) | st.just("")
                | st.integers(min_value=-(2**70), max_value=2**70))


@st.composite
def invoke_bodies(draw: st.DrawFn, worlds: list[f.World]) -> tuple[f.World, Any]:
    """A real world's body with some fields dropped, replaced, or taken from another world."""
    w = draw(st.sampled_from(worlds))
    body: dict[str, Any] = dict(w.invoke_body())
    other = draw(st.sampled_from(worlds)).invoke_body()
    for key in list(body):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            del body[key]
        elif choice == 1:
            body[key] = draw(field_values)
        elif choice == 2:
            body[key] = other[key]
    if draw(st.booleans()):
        body.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=3)))
    return w, body if draw(st.integers(0, 19)) else draw(json_values)


def test_fuzzed_json_bodies_never_5xx_and_write_exactly_what_the_status_says(target: Target) -> None:
    @settings(FUZZ, max_examples=900)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        w, body = data.draw(invoke_bodies(target.worlds))
        path = w.invoke_path if data.draw(st.integers(0, 9)) else data.draw(st.sampled_from(target.worlds)).invoke_path
        resp = target.client.post(path, data=json.dumps(body), headers={**AUTH, "Content-Type": "application/json"})
        check(target, resp, body)

    run()


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)
content_types = st.sampled_from([
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/json; charset=latin-1",
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx",
    "", "*/*", "application/problem+json",
]) | header_text
methods = st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])


@st.composite
def paths(draw: st.DrawFn, worlds: list[f.World]) -> str:
    choice = draw(st.integers(0, 5))
    if choice <= 1:
        return draw(st.sampled_from(worlds)).invoke_path
    if choice == 2:
        return "/api/agents/" + _quote(draw(weird_text)) + "/invoke"
    if choice == 3:
        return draw(st.sampled_from(["/", "/healthz", "/readyz", "/api", "/api/agents", "/api/agents//invoke",
                                     "/api/agents/x/invoke/", "/api/agents/%2e%2e/invoke", "/../etc/passwd"]))
    return "/" + "/".join(_quote(s) or "_" for s in draw(st.lists(weird_text, max_size=5)))  # "//" would be a host


def _quote(segment: str) -> str:
    # surrogatepass: a lone surrogate becomes bytes that are not UTF-8, as a hostile client could send.
    return quote(segment.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def auth_headers(draw: st.DrawFn) -> dict[str, str]:
    choice = draw(st.integers(0, 5))
    if choice <= 2:
        return dict(AUTH)
    if choice == 3:
        return {}
    return {"Authorization": draw(st.sampled_from(["Bearer ", "bearer " + TOKEN[:-1], "Basic " + TOKEN]) | header_text)}


def test_fuzzed_methods_paths_headers_and_content_types_never_5xx_or_write_on_refusal(target: Target) -> None:
    @settings(FUZZ, max_examples=900)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        _, body = data.draw(invoke_bodies(target.worlds))
        headers = {**data.draw(auth_headers()), "Content-Type": data.draw(content_types)}
        extra = data.draw(st.dictionaries(st.sampled_from(["X-Request-ID", "Content-Encoding", "Transfer-Encoding-X",
                                                           "Accept", "X-Forwarded-For", "Expect"]), header_text, max_size=3))
        headers.update(extra)
        method = data.draw(methods)
        path = data.draw(paths(target.worlds))
        resp = target.client.open(path, method=method, data=json.dumps(body), headers=headers)
        check(target, resp, body)
        if headers.get("Authorization") != AUTH["Authorization"] and path.startswith("/api/"):
            assert resp.status_code == 401

    run()


def test_fuzzed_raw_bytes_never_5xx_or_write(target: Target) -> None:
    w = target.worlds[0]
    valid = json.dumps(w.invoke_body()).encode()

    @settings(FUZZ, max_examples=700)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        choice = data.draw(st.integers(0, 4))
        if choice == 0:
            raw = data.draw(st.binary(max_size=600))
        elif choice == 1:  # a valid body, corrupted at some bytes
            raw = bytearray(valid)
            for _ in range(data.draw(st.integers(1, 5))):
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
            raw = bytes(raw)
        elif choice == 2:  # a valid body, cut short
            raw = valid[: data.draw(st.integers(0, len(valid) - 1))]
        elif choice == 3:  # deep nesting and big bodies
            depth = data.draw(st.integers(1, 3000))
            raw = (b"[" * depth + b"]" * depth) if data.draw(st.booleans()) else b"x" * data.draw(st.integers(4000, 20_000))
        else:  # valid JSON in other encodings
            raw = json.dumps(w.invoke_body()).encode(data.draw(st.sampled_from(["utf-16", "utf-32", "utf-8-sig"])))
        resp = target.client.post(w.invoke_path, data=raw, headers={**AUTH, "Content-Type": "application/json"})
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = None
        check(target, resp, body)

    run()
