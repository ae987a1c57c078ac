"""ingress/openapi.json is true of the live web process: schemathesis fuzzes every operation
(positive and negative data, fixed seed, few examples) and checks each answer's status, content
type, headers and body against the document; a seeded hub lets valid invocations succeed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from psycopg.rows import dict_row
from schemathesis import checks
from schemathesis.generation import GenerationMode

from tests import factories
from tests.integration.localpiston_proc import free_port
from tests.stack import Proc

MAX_EXAMPLES = 30  # per operation and mode; fixed seed (derandomize), so the run is the same every time
# Every check except those that need state we do not model (resource lifecycles, auth scenarios).
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.unsupported_method,
]


@pytest.fixture(scope="module")
def web(module_db_url: str) -> Iterator[str]:
    port = free_port()
    proc = Proc([sys.executable, "-m", "ingress", "--host", "127.0.0.1", "--port", str(port)],
                {"DATABASE_URL": module_db_url, "LOG_FORMAT": "json", "WEB_CONCURRENCY": "1"}).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.05)
    else:
        raise RuntimeError(f"web did not start:\n{proc.output()}")
    yield url
    proc.close()


@pytest.fixture(scope="module")
def api_schema(web: str) -> Any:
    # Oversized data is rejected with 413 (body_too_large, prompt_too_large): a rejection like the 4xx defaults.
    config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {
        "expected-statuses": ["400", "401", "404", "405", "409", "413", "415"]}}})
    return schemathesis.openapi.from_url(web + "/openapi.json", config=config)


def operations(api_schema: Any) -> list[Any]:
    return [result.ok() for result in api_schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_operation_answers_as_the_openapi_document_says(api_schema: Any, web: str, mode: GenerationMode) -> None:
    # Driven with hypothesis directly: schemathesis' pytest plugin does not load under pytest 9.
    session = requests.Session()
    seen: set[str] = set()
    # Negative data needs something to negate: only the invoke route has inputs.
    targets = [op for op in operations(api_schema) if mode is GenerationMode.POSITIVE or op.path.startswith("/api/")]
    for operation in targets:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def check(case: schemathesis.Case) -> None:
            response = case.call_and_validate(base_url=web, session=session, checks=CHECKS)
            seen.add(f"{case.operation.label} {response.status_code}")

        check()
    # The fuzzing reached every operation, and the invoke route's validation (not only its 404s).
    assert {label.rsplit(" ", 1)[0] for label in seen} == {op.label for op in targets}
    if mode is GenerationMode.NEGATIVE:
        assert any(label.startswith("POST ") and label.endswith((" 400", " 415")) for label in seen), seen


def test_a_valid_invocation_and_its_repeat_conform_to_the_document(api_schema: Any, web: str, module_db_url: str) -> None:
    with psycopg.connect(module_db_url, autocommit=True, row_factory=dict_row) as conn:
        w = factories.world(conn, prompt="hello from the schema test")
    operation = api_schema["/api/agents/{agentId}/invoke"]["POST"]
    statuses = []
    for _ in range(2):
        case = operation.Case(path_parameters={"agentId": w.agent_id}, body=w.invoke_body(),
                              media_type="application/json")
        response = case.call_and_validate(base_url=web, checks=CHECKS)
        statuses.append(response.status_code)
    assert statuses == [202, 200]


def test_the_document_is_served_and_lists_every_readme_error_code(web: str) -> None:
    doc = requests.get(web + "/openapi.json", timeout=5).json()
    assert doc["openapi"].startswith("3.1")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    api_section = readme.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    documented = set()
    responses = [r for op in doc["paths"]["/api/agents/{agentId}/invoke"].values() for r in op["responses"].values()]
    for response in responses:
        for part in response.get("content", {}).get("application/json", {}).get("schema", {}).get("allOf", []):
            documented.update(part.get("properties", {}).get("error", {}).get("enum", []))
    readme_codes = {code for line in api_section.splitlines() if line.startswith("| 4") or line.startswith("| 5")
                    for code in line.split("|")[2].replace("`", "").replace(",", " ").split()}
    readme_codes.discard("not_found")  # unknown routes: documented on the invoke route all the same
    assert readme_codes - documented == set()
    assert set(doc["paths"]) == {"/api/agents/{agentId}/invoke", "/api/jobs/{jobId}/events", "/api/sessions/{sessionId}/events",
                                 "/healthz", "/readyz", "/metrics", "/openapi.json"}

