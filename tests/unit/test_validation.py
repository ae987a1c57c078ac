"""parse_invoke: types, required fields, sizes and unstorable text, each error naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.errors import ApiError
from ingress.validation import InvokeRequest, Limits, parse_invoke

LIMITS = Limits(max_prompt_chars=20, max_id_chars=12)
AGENT = "agent-1"
IDS = ("jobId", "sessionId", "userId")


def body(**over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"sessionId": "sess-1", "jobId": "job-1", "userId": "user-1", "prompt": "hi there"}
    out.update(over)
    return out


def rejected(agent_id: str, payload: Any) -> ApiError:
    with pytest.raises(ApiError) as exc:
        parse_invoke(agent_id, payload, LIMITS)
    return exc.value


def test_the_nextjs_body_parses_into_an_invoke_request() -> None:
    assert parse_invoke(AGENT, body(), LIMITS) == InvokeRequest(
        agent_id=AGENT, job_id="job-1", session_id="sess-1", user_id="user-1", prompt="hi there"
    )


def test_unknown_extra_fields_are_ignored() -> None:
    assert parse_invoke(AGENT, body(extra=1, note="x"), LIMITS).prompt == "hi there"


def test_prompt_keeps_its_whitespace_and_unicode() -> None:
    prompt = "  héllo 👋\n\t"
    assert parse_invoke(AGENT, body(prompt=prompt), LIMITS).prompt == prompt


def test_limits_are_inclusive() -> None:
    req = parse_invoke("a" * 12, body(jobId="j" * 12, prompt="p" * 20), LIMITS)
    assert (len(req.agent_id), len(req.job_id), len(req.prompt)) == (12, 12, 20)


@pytest.mark.parametrize("payload", [[], ["x"], "text", 3, 1.5, True])
def test_body_that_is_not_an_object_is_invalid_body(payload: Any) -> None:
    err = rejected(AGENT, payload)
    assert (err.status, err.code, err.field) == (400, "invalid_body", None)


@pytest.mark.parametrize("field", [*IDS, "prompt"])
@pytest.mark.parametrize("how", ["absent", "null"])
def test_missing_field_is_named(field: str, how: str) -> None:
    payload = body()
    if how == "absent":
        del payload[field]
    else:
        payload[field] = None
    err = rejected(AGENT, payload)
    assert (err.status, err.code, err.field) == (400, "missing_field", field)
    assert err.body() == {"error": "missing_field", "message": f"{field} is required", "field": field}


@pytest.mark.parametrize("field", [*IDS, "prompt"])
@pytest.mark.parametrize("value", [1, 1.5, True, [], ["a"], {"a": 1}])
def test_field_of_wrong_type_is_invalid_field(field: str, value: Any) -> None:
    err = rejected(AGENT, body(**{field: value}))
    assert (err.status, err.code, err.field) == (400, "invalid_field", field)
    assert "must be a string" in err.message


@pytest.mark.parametrize("field", [*IDS, "prompt"])
def test_empty_field_is_invalid_field(field: str) -> None:
    err = rejected(AGENT, body(**{field: ""}))
    assert (err.status, err.code, err.field) == (400, "invalid_field", field)


@pytest.mark.parametrize("field", IDS)
@pytest.mark.parametrize("value", [" job", "job ", "   ", "\tjob"])
def test_id_with_surrounding_spaces_is_invalid_field(field: str, value: str) -> None:
    err = rejected(AGENT, body(**{field: value}))
    assert (err.status, err.code, err.field) == (400, "invalid_field", field)


@pytest.mark.parametrize("field", IDS)
def test_id_over_max_id_chars_is_invalid_field(field: str) -> None:
    err = rejected(AGENT, body(**{field: "x" * 13}))
    assert (err.status, err.code, err.field) == (400, "invalid_field", field)
    assert "at most 12" in err.message


def test_prompt_over_max_prompt_chars_is_413_prompt_too_large() -> None:
    err = rejected(AGENT, body(prompt="p" * 21))
    assert (err.status, err.code, err.field) == (413, "prompt_too_large", "prompt")
    assert "21" in err.message and "20" in err.message


def test_prompt_limit_counts_characters_not_bytes() -> None:
    assert parse_invoke(AGENT, body(prompt="é" * 20), LIMITS).prompt == "é" * 20


@pytest.mark.parametrize("field", [*IDS, "prompt"])
def test_nul_character_is_invalid_field(field: str) -> None:
    err = rejected(AGENT, body(**{field: "a\x00b"}))
    assert (err.status, err.code, err.field) == (400, "invalid_field", field)
    assert "NUL" in err.message


@pytest.mark.parametrize("field", [*IDS, "prompt"])
@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff"])
def test_lone_surrogate_is_invalid_field(field: str, surrogate: str) -> None:
    err = rejected(AGENT, body(**{field: f"a{surrogate}b"}))
    assert (err.status, err.code, err.field) == (400, "invalid_field", field)
    assert "surrogate" in err.message


@pytest.mark.parametrize(
    ("agent_id", "why"),
    [("", "empty"), (" a", "spaces"), ("a" * 13, "at most"), ("a\x00", "NUL"), ("a\ud800", "surrogate")],
)
def test_bad_agent_id_from_the_path_is_invalid_field_agent_id(agent_id: str, why: str) -> None:
    err = rejected(agent_id, body())
    assert (err.status, err.code, err.field) == (400, "invalid_field", "agentId")
    assert why in err.message


def test_agent_id_is_checked_before_the_body() -> None:
    assert rejected("", "not an object").field == "agentId"


def test_fields_are_checked_in_a_stable_order() -> None:
    # With everything wrong, the first reported field is jobId, then sessionId, userId, prompt.
    err = rejected(AGENT, {})
    assert err.field == "jobId"
    assert rejected(AGENT, {"jobId": "j"}).field == "sessionId"
    assert rejected(AGENT, {"jobId": "j", "sessionId": "s"}).field == "userId"
    assert rejected(AGENT, {"jobId": "j", "sessionId": "s", "userId": "u"}).field == "prompt"
