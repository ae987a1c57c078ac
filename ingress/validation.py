"""Validation of the invoke request body (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingress.errors import ApiError


@dataclass(frozen=True)
class InvokeRequest:
    agent_id: str
    job_id: str
    session_id: str
    user_id: str
    prompt: str


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int
    max_id_chars: int


def _text_ok(value: str) -> str | None:
    """Why Postgres could not store this text, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def _identifier(body: dict[str, Any], name: str, limits: Limits) -> str:
    if name not in body or body[name] is None:
        raise ApiError(400, "missing_field", f"{name} is required", field=name)
    value = body[name]
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"{name} must be a string", field=name)
    if value == "" or value.strip() != value:
        raise ApiError(400, "invalid_field", f"{name} must be a non-empty id without surrounding spaces", field=name)
    if len(value) > limits.max_id_chars:
        raise ApiError(400, "invalid_field", f"{name} must be at most {limits.max_id_chars} characters", field=name)
    problem = _text_ok(value)
    if problem:
        raise ApiError(400, "invalid_field", f"{name} {problem}", field=name)
    return value


def validate_agent_id(agent_id: str, limits: Limits) -> str:
    return _identifier({"agentId": agent_id}, "agentId", limits)


def parse_invoke(agent_id: str, body: Any, limits: Limits) -> InvokeRequest:
    """Check types, required fields and sizes; raise ApiError naming the field."""
    agent = validate_agent_id(agent_id, limits)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    job_id = _identifier(body, "jobId", limits)
    session_id = _identifier(body, "sessionId", limits)
    user_id = _identifier(body, "userId", limits)
    if "prompt" not in body or body["prompt"] is None:
        raise ApiError(400, "missing_field", "prompt is required", field="prompt")
    prompt = body["prompt"]
    if not isinstance(prompt, str):
        raise ApiError(400, "invalid_field", "prompt must be a string", field="prompt")
    if prompt == "":
        raise ApiError(400, "invalid_field", "prompt must not be empty", field="prompt")
    if len(prompt) > limits.max_prompt_chars:
        raise ApiError(
            413, "prompt_too_large",
            f"prompt is {len(prompt)} characters; the limit is {limits.max_prompt_chars}",
            field="prompt",
        )
    problem = _text_ok(prompt)
    if problem:
        raise ApiError(400, "invalid_field", f"prompt {problem}", field="prompt")
    return InvokeRequest(agent_id=agent, job_id=job_id, session_id=session_id, user_id=user_id, prompt=prompt)
