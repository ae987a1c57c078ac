"""What the stand-in answers: canned text, token counts, scripted faults, all in Gemini's JSON shape."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

CANNED = "[canned]"
# A marker in the last user turn scripts the answer to that request, e.g. "[fake:error=429 times=1]".
MARKER_RE = re.compile(r"\[fake:([a-z_]+)(?:=([A-Za-z0-9_.]+))?(?:\s+times=(\d+))?\]")
ERROR_STATUSES = (400, 401, 403, 404, 408, 429, 500, 502, 503, 504)


class Fault(StrEnum):
    """A scripted non-normal answer."""

    ERROR = "error"            # an HTTP error with Gemini's error body (value: the status code)
    BLOCK = "block"            # promptFeedback.blockReason, no candidates (value: the reason, default SAFETY)
    SAFETY = "safety"          # a candidate with finishReason SAFETY and no content
    MAX_TOKENS = "max_tokens"  # a candidate with finishReason MAX_TOKENS and no text
    SLOW = "slow"              # wait this many seconds, then answer normally
    TEXT = "text"              # answer with this exact text (control script only)
    CUT = "cut"                # streaming only: this many chunks, then an error chunk (503) ends the stream


def split_text(text: str, chunks: int) -> list[str]:
    """``text`` in ``chunks`` consecutive pieces (fewer for a short text), cut at word ends where possible."""
    n = max(1, min(chunks, len(text)))
    size = len(text) / n
    pieces: list[str] = []
    start = 0
    for i in range(1, n):
        end = round(i * size)
        space = text.rfind(" ", start + 1, end + 1)
        end = space if space > start and end - space < size / 2 else end
        if end > start:
            pieces.append(text[start:end])
            start = end
    pieces.append(text[start:])
    return [p for p in pieces if p] or [""]


def stream_chunks(answer: dict[str, Any], chunks: int) -> list[dict[str, Any]]:
    """A whole answer as ``streamGenerateContent`` sends it: one GenerateContentResponse per piece of its text,
    the finishReason and the usage on the last one (as Gemini does). An answer without text is one chunk."""
    candidates = answer.get("candidates") or []
    parts = (candidates[0].get("content") or {}).get("parts") if candidates else None
    text = "".join(p.get("text", "") for p in parts or [])
    if not text:
        return [answer]
    pieces = split_text(text, chunks)
    out: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        candidate: dict[str, Any] = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
        chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": answer.get("modelVersion"),
                                 "responseId": answer.get("responseId")}
        if last:
            candidate["finishReason"] = candidates[0].get("finishReason")
            chunk["usageMetadata"] = answer.get("usageMetadata")
        out.append(chunk)
    return out


@dataclass(frozen=True)
class Script:
    fault: Fault
    value: str | None = None
    times: int | None = None  # markers only: the first `times` requests with this prompt get the fault


def tokens(text: str) -> int:
    """Gemini's rule of thumb (about 4 characters a token), never 0 for non-empty text."""
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


def error_body(status: int, *, model: str = "", api_version: str = "v1beta") -> dict[str, Any]:
    """Gemini's error bodies, as the real API sends them."""
    match status:
        case 400:
            return {"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}}
        case 401:
            return {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                              "status": "UNAUTHENTICATED"}}
        case 403:
            return {"error": {"code": 403, "message": "Method doesn't allow unregistered callers (callers without established "
                              "identity). Please use API Key or other form of API consumer identity to call this API.",
                              "status": "PERMISSION_DENIED"}}
        case 404:
            return {"error": {"code": 404, "message": f"models/{model} is not found for API version {api_version}, or is not "
                              "supported for generateContent.", "status": "NOT_FOUND"}}
        case 408:
            return {"error": {"code": 408, "message": "Request timed out.", "status": "DEADLINE_EXCEEDED"}}
        case 429:
            return {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                              "status": "RESOURCE_EXHAUSTED"}}
        case 503:
            return {"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                              "status": "UNAVAILABLE"}}
        case 504:
            return {"error": {"code": 504, "message": "Deadline expired before operation could complete.",
                              "status": "DEADLINE_EXCEEDED"}}
        case _:
            return {"error": {"code": status, "message": "An internal error has occurred. Please retry or report in "
                              "https://developers.generativeai.google/guide/troubleshooting", "status": "INTERNAL"}}


def api_key_invalid_body() -> dict[str, Any]:
    """What Gemini answers (HTTP 400) to a wrong API key."""
    message = "API key not valid. Please pass a valid API key."
    return {"error": {
        "code": 400,
        "message": message,
        "status": "INVALID_ARGUMENT",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
             "metadata": {"service": "generativelanguage.googleapis.com"}},
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
        ],
    }}


def invalid_argument(message: str) -> dict[str, Any]:
    return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}


def texts_of(content: Any) -> list[str]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str)]


def request_text(body: dict[str, Any]) -> str:
    """Every text the request carries (contents and system instruction), for the prompt token count."""
    pieces: list[str] = []
    for content in body.get("contents") or []:
        pieces.extend(texts_of(content))
    pieces.extend(texts_of(body.get("systemInstruction") or body.get("system_instruction")))
    return "\n".join(pieces)


def last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            return "\n".join(texts_of(content))
    return ""


def validate(body: Any) -> str | None:
    """Gemini's INVALID_ARGUMENT checks that matter to a client; None when the request is fine."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list) or not content["parts"]:
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        if content.get("role", "user") not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{i}])"
    config = body.get("generationConfig") or {}
    temperature = config.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
        return "* GenerateContentRequest.generation_config.temperature: must be in [0.0, 2.0]"
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None and not (isinstance(max_tokens, int) and max_tokens >= 1):
        return "* GenerateContentRequest.generation_config.max_output_tokens: must be positive"
    return None


def usage(prompt_tokens: int, output_tokens: int) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "totalTokenCount": prompt_tokens + output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
    }
    if output_tokens:
        meta["candidatesTokenCount"] = output_tokens
    return meta


def response_id(body_text: str) -> str:
    return hashlib.sha256(body_text.encode()).hexdigest()[:22]


def canned_text(model: str, body: dict[str, Any]) -> str:
    """Deterministic: the same request always gets the same answer."""
    prompt = last_user_text(body)
    digest = hashlib.sha256(request_text(body).encode()).hexdigest()[:8]
    excerpt = " ".join(prompt.split())[:120]
    return f"{CANNED} {model} answer {digest} to {len(prompt)} characters: {excerpt}"


def success(model: str, body: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    """A normal answer; over maxOutputTokens it is cut and marked MAX_TOKENS, as Gemini does."""
    answer = canned_text(model, body) if text is None else text
    finish = "STOP"
    limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
    if isinstance(limit, int) and tokens(answer) > limit:
        answer = answer[: limit * 4]
        finish = "MAX_TOKENS"
    prompt_tokens = tokens(request_text(body))
    return {
        "candidates": [{"content": {"parts": [{"text": answer}], "role": "model"}, "finishReason": finish, "index": 0}],
        "usageMetadata": usage(prompt_tokens, tokens(answer)),
        "modelVersion": model,
        "responseId": response_id(request_text(body)),
    }


def _safety_ratings(blocked: str) -> list[dict[str, Any]]:
    return [
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    ] if blocked else []


def blocked_prompt(model: str, body: dict[str, Any], reason: str) -> dict[str, Any]:
    prompt_tokens = tokens(request_text(body))
    return {
        "promptFeedback": {"blockReason": reason, "safetyRatings": _safety_ratings(reason)},
        "usageMetadata": usage(prompt_tokens, 0),
        "modelVersion": model,
        "responseId": response_id(request_text(body)),
    }


def finish_without_text(model: str, body: dict[str, Any], reason: str) -> dict[str, Any]:
    prompt_tokens = tokens(request_text(body))
    candidate: dict[str, Any] = {"content": {"role": "model"}, "finishReason": reason, "index": 0}
    if reason == "SAFETY":
        candidate["safetyRatings"] = _safety_ratings(reason)
    return {
        "candidates": [candidate],
        "usageMetadata": usage(prompt_tokens, 0),
        "modelVersion": model,
        "responseId": response_id(request_text(body)),
    }
