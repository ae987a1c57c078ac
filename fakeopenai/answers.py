"""What the stand-in answers: canned text, token counts, scripted faults, in the chat completions JSON shape."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

CANNED = "[canned]"
# A marker in the last user message scripts the answer to that request, e.g. "[fake:error=429 times=1]".
MARKER_RE = re.compile(r"\[fake:([a-z_]+)(?:=([A-Za-z0-9_.]+))?(?:\s+times=(\d+))?\]")
ERROR_STATUSES = (400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, 504)
ROLES = ("system", "developer", "user", "assistant", "tool")


class Fault(StrEnum):
    """A scripted non-normal answer."""

    ERROR = "error"                    # an HTTP error with OpenAI's error body (value: the status code)
    QUOTA = "quota"                    # 429 insufficient_quota (a billing limit, not a rate limit)
    REFUSAL = "refusal"                # message.refusal set, content null
    CONTENT_FILTER = "content_filter"  # finish_reason content_filter, content null
    MAX_TOKENS = "max_tokens"          # finish_reason length, empty content
    SLOW = "slow"                      # wait this many seconds, then answer normally
    TEXT = "text"                      # answer with this exact text (control script only)


@dataclass(frozen=True)
class Script:
    fault: Fault
    value: str | None = None
    times: int | None = None  # markers only: the first `times` requests with this prompt get the fault


def tokens(text: str) -> int:
    """About 4 characters a token, never 0 for non-empty text."""
    return math.ceil(len(text) / 4) if text else 0


def parse_marker(text: str) -> Script | None:
    m = MARKER_RE.search(text)
    if m is None:
        return None
    try:
        fault = Fault(m.group(1))
    except ValueError:
        return None
    return Script(fault, m.group(2), int(m.group(3)) if m.group(3) else None)


def error_body(message: str, *, type_: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def status_error(status: int, model: str = "") -> dict[str, Any]:
    """OpenAI's error bodies for each status, as the real API sends them."""
    match status:
        case 400:
            return error_body("Invalid request.")
        case 401:
            return error_body("Incorrect API key provided. You can find your API key at "
                              "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
        case 403:
            return error_body("You are not allowed to sample from this model", type_="invalid_request_error")
        case 404:
            return error_body(f"The model `{model}` does not exist or you do not have access to it.",
                              code="model_not_found")
        case 408:
            return error_body("Request timed out.", type_="timeout")
        case 409:
            return error_body("The engine is currently overloaded, please try again later", type_="conflict")
        case 422:
            return error_body("Unprocessable entity.")
        case 429:
            return error_body(f"Rate limit reached for {model or 'the model'} on requests per min (RPM): Limit 3, "
                              "Used 3, Requested 1. Please try again in 20s.", type_="requests", code="rate_limit_exceeded")
        case 503:
            return error_body("The server is overloaded or not ready yet.", type_="server_error")
        case _:
            return error_body("The server had an error while processing your request. Sorry about that!",
                              type_="server_error")


def quota_error() -> dict[str, Any]:
    return error_body("You exceeded your current quota, please check your plan and billing details.",
                      type_="insufficient_quota", code="insufficient_quota")


def content_text(content: Any) -> str:
    """A message's text: a str, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def request_text(body: dict[str, Any]) -> str:
    """Every text the request carries (all messages), for the prompt token count."""
    return "\n".join(content_text(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))


def last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def max_tokens_of(body: dict[str, Any]) -> Any:
    return body.get("max_completion_tokens", body.get("max_tokens"))


def validate(body: Any) -> tuple[str, str | None] | None:
    """OpenAI's 400 checks that matter to a client, as (message, param); None when the request is fine."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request.", None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter", "model"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "[] is too short - 'messages'", "messages"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return f"Invalid value for 'messages[{i}].role'", f"messages[{i}].role"
        if not isinstance(m.get("content"), (str, list)):
            return f"Invalid type for 'messages[{i}].content'", f"messages[{i}].content"
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
        return f"Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got {temperature}.", \
            "temperature"
    limit = max_tokens_of(body)
    if limit is not None and not (isinstance(limit, int) and limit >= 1):
        return "Invalid 'max_completion_tokens': integer below minimum value.", "max_completion_tokens"
    return None


def completion_id(body_text: str) -> str:
    return "chatcmpl-" + hashlib.sha256(body_text.encode()).hexdigest()[:24]


def canned_text(model: str, body: dict[str, Any]) -> str:
    """Deterministic: the same request always gets the same answer."""
    prompt = last_user_text(body)
    digest = hashlib.sha256(request_text(body).encode()).hexdigest()[:8]
    excerpt = " ".join(prompt.split())[:120]
    return f"{CANNED} {model} answer {digest} to {len(prompt)} characters: {excerpt}"


def completion(model: str, body: dict[str, Any], *, text: str | None, finish: str, refusal: str | None = None,
               created: int = 0) -> dict[str, Any]:
    prompt_tokens = tokens(request_text(body))
    output_tokens = tokens(text or "")
    return {
        "id": completion_id(request_text(body)),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": refusal,
                                             "annotations": []},
                     "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": output_tokens,
                  "total_tokens": prompt_tokens + output_tokens},
        "system_fingerprint": "fp_fakeopenai",
    }


def success(model: str, body: dict[str, Any], text: str | None = None, created: int = 0) -> dict[str, Any]:
    """A normal answer; over the max tokens it is cut and marked ``length``, as OpenAI does."""
    answer = canned_text(model, body) if text is None else text
    finish = "stop"
    limit = max_tokens_of(body)
    if isinstance(limit, int) and tokens(answer) > limit:
        answer = answer[: limit * 4]
        finish = "length"
    return completion(model, body, text=answer, finish=finish, created=created)


def stream_chunks(full: dict[str, Any], include_usage: bool, pieces: int = 3) -> list[dict[str, Any]]:
    """A completion as ``chat.completion.chunk`` events: role, the text in pieces, finish, then usage if asked."""
    choice = full["choices"][0]
    text = choice["message"]["content"] or ""
    base = {"id": full["id"], "object": "chat.completion.chunk", "created": full["created"], "model": full["model"],
            "system_fingerprint": full["system_fingerprint"]}
    size = max(1, math.ceil(len(text) / pieces))
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": text[i:i + size]} for i in range(0, len(text), size)]
    chunks = [{**base, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None}]} for d in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": choice["finish_reason"]}]})
    if include_usage:
        chunks.append({**base, "choices": [], "usage": full["usage"]})
    return chunks
