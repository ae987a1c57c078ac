"""A ``hub.http`` call's arguments checked and its secrets put in; or ``bad_request`` saying what is wrong.
Nothing is sent for a request this module refuses.

Shared by the dispatcher (dispatcher/httpcall/request.py adds the encoding by requests) and
``python -m hub run`` (hub/_httplocal.py encodes with the standard library): one set of rules.
Standard library only, Python 3.10+.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ._httperrors import bad_request
from ._secrets import SecretBox, SecretTooShort, UnknownSecret

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
ARGUMENTS = frozenset({"method", "url", "headers", "params", "json", "data", "timeout", "follow_redirects"})
# Framing, hop-by-hop and routing headers are the broker's: an agent setting Host could reach another
# virtual host on the checked address, and Content-Length/Transfer-Encoding could smuggle a second request.
RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
    "expect", "proxy-authorization", "proxy-connection",
})
# Headers a server of another origin must not get when a redirect leads there (besides any carrying a secret).
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
MAX_URL_CHARS = 8192
MAX_HEADERS = 100
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_URL_BAD_RE = re.compile(r"[\x00-\x20\x7f]")
_HEADER_BAD_RE = re.compile(r"[\r\n\x00]")
DEFAULT_HEADERS = {"User-Agent": "agent-hub-http/1", "Accept": "*/*"}


@dataclass(frozen=True)
class CheckedRequest:
    """A checked call with its secrets in place: never logged whole (``repr`` shows no value)."""

    method: str
    url: str = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    params: list[tuple[str, str]] = field(repr=False)
    json_body: Any = field(repr=False)
    data: str | dict[str, str] | None = field(repr=False)
    timeout_s: float | None
    follow_redirects: bool
    secret_headers: frozenset[str]  # lower-case names of headers that carry a secret
    body_has_secret: bool


def _text(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad_request(f"{what} must be a str (or a number), got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise bad_request(f"{what} must be a finite number")
    return value if isinstance(value, str) else json.dumps(value)


def _substituted(box: SecretBox, text: str, where: str) -> str:
    try:
        return box.substitute(text, where)
    except (UnknownSecret, SecretTooShort) as exc:
        raise bad_request(str(exc)) from None


def _check_url(url: str, *, after_secrets: bool) -> None:
    suffix = " (once its secrets are put in)" if after_secrets else ""
    if len(url) > MAX_URL_CHARS:
        raise bad_request(f"url is {len(url)} characters, over the limit of {MAX_URL_CHARS}{suffix}")
    if _URL_BAD_RE.search(url):
        raise bad_request(f"url contains a space, a line break or another control character{suffix}: "
                          "percent-encode it or pass it in params")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        scheme = f"{parts.scheme[:20]}:" if parts.scheme else "no scheme"
        raise bad_request(f"url must be an http:// or https:// URL, got {scheme}")
    try:
        port = parts.port
    except ValueError:
        raise bad_request(f"url has an invalid port{suffix}") from None
    if not parts.hostname:
        raise bad_request("url has no host")
    if port == 0:
        raise bad_request("url has port 0")


def _headers(raw: Any, box: SecretBox) -> tuple[dict[str, str], frozenset[str]]:
    if raw is None:
        return {}, frozenset()
    if not isinstance(raw, Mapping):
        raise bad_request(f"headers must be a dict of str to str, got {type(raw).__name__}")
    if len(raw) > MAX_HEADERS:
        raise bad_request(f"headers has {len(raw)} entries, over the limit of {MAX_HEADERS}")
    headers: dict[str, str] = {}
    with_secret: set[str] = set()
    seen: set[str] = set()
    for name, value in raw.items():
        if not isinstance(name, str) or not _TOKEN_RE.match(name):
            shown = name[:40] if isinstance(name, str) else type(name).__name__
            raise bad_request(f"header name {shown!r} is not a valid HTTP header name (no spaces, colons or line breaks)")
        lower = name.lower()
        if lower in RESERVED_HEADERS:
            raise bad_request(f"header {name!r} is set by the hub, not by the agent")
        if lower in seen:
            raise bad_request(f"header {name!r} is given twice (names are case-insensitive)")
        seen.add(lower)
        text = _text(value, f"header {name!r}")
        if _HEADER_BAD_RE.search(text):
            raise bad_request(f"header {name!r} contains a line break (CR/LF) or NUL")
        if box.placeholders(text):
            text = _substituted(box, text, f"header {name!r}")
            with_secret.add(lower)
            if _HEADER_BAD_RE.search(text):
                raise bad_request(f"header {name!r} contains a line break (CR/LF) or NUL once its secret is put in")
        headers[name] = text
    return headers, frozenset(with_secret)


def _params(raw: Any, box: SecretBox) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        raise bad_request(f"params must be a dict (values: str, number or a list of them), got {type(raw).__name__}")
    pairs: list[tuple[str, str]] = []
    for key, value in raw.items():
        if not isinstance(key, str):
            raise bad_request(f"params keys must be str, got {type(key).__name__}")
        key_text = _substituted(box, key, "params")
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None:
                continue  # as requests does: a None value leaves the key out
            if isinstance(item, bool):
                item = "true" if item else "false"
            pairs.append((key_text, _substituted(box, _text(item, f"params[{key[:40]!r}]"), f"params[{key[:40]!r}]")))
    return pairs


def _json_with_secrets(value: Any, box: SecretBox, depth: int = 0) -> Any:
    if depth > 64:
        raise bad_request("json is nested deeper than 64 levels")
    if isinstance(value, str):
        return _substituted(box, value, "json")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise bad_request(f"json is not JSON-serialisable: an object key is a {type(k).__name__}, not a str")
            out[_substituted(box, k, "json")] = _json_with_secrets(v, box, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_with_secrets(v, box, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise bad_request("json is not JSON-serialisable: it contains NaN or Infinity")
        return value
    raise bad_request(f"json is not JSON-serialisable: it contains a {type(value).__name__}")


def _data(raw: Any, box: SecretBox) -> str | dict[str, str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return _substituted(box, raw, "data")
    if isinstance(raw, Mapping):
        form: dict[str, str] = {}
        for key, value in raw.items():
            if not isinstance(key, str):
                raise bad_request(f"data keys must be str, got {type(key).__name__}")
            form[_substituted(box, key, "data")] = _substituted(box, _text(value, f"data[{key[:40]!r}]"), "data")
        return form
    raise bad_request(f"data must be a str (a raw body) or a dict (a form), got {type(raw).__name__}")


def _has_placeholder(box: SecretBox, value: Any) -> bool:
    return bool(box.placeholders(json.dumps(value, default=str)))


def check_request(params: Mapping[str, Any], box: SecretBox, *, max_timeout_s: float) -> CheckedRequest:
    """The call's params (as ``hub.http`` sends them) checked, with secrets substituted (not yet encoded: the
    caller encodes it and checks the body's size with ``check_body_size``)."""
    unknown = sorted(str(k)[:40] for k in params if k not in ARGUMENTS)
    if unknown:
        raise bad_request(f"unknown argument {unknown[0]!r} (expected: {', '.join(sorted(ARGUMENTS))})")
    method = params.get("method")
    if not isinstance(method, str) or method.upper() not in METHODS:
        shown = method[:20] if isinstance(method, str) else type(method).__name__
        raise bad_request(f"method {shown!r} is not one of {', '.join(METHODS)}")
    method = method.upper()
    url = params.get("url")
    if not isinstance(url, str) or not url:
        raise bad_request("url must be a non-empty str")
    _check_url(url, after_secrets=False)
    url = _substituted(box, url, "url")
    _check_url(url, after_secrets=True)
    headers, secret_headers = _headers(params.get("headers"), box)
    query = _params(params.get("params"), box)
    raw_json, raw_data = params.get("json"), params.get("data")
    if raw_json is not None and raw_data is not None:
        raise bad_request("give json or data, not both")
    json_body = None if raw_json is None else _json_with_secrets(raw_json, box)
    data = _data(raw_data, box)
    timeout = params.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise bad_request("timeout must be a positive number of seconds, or None")
    follow = params.get("follow_redirects", True)
    if not isinstance(follow, bool):
        raise bad_request("follow_redirects must be a bool")
    return CheckedRequest(
        method=method, url=url, headers=headers, params=query, json_body=json_body, data=data,
        timeout_s=None if timeout is None else min(float(timeout), max_timeout_s), follow_redirects=follow,
        secret_headers=secret_headers,
        body_has_secret=_has_placeholder(box, raw_json) or _has_placeholder(box, raw_data),
    )


def check_body_size(size: int, max_request_bytes: int) -> None:
    """bad_request when the encoded body is over the hub's limit."""
    if size > max_request_bytes:
        raise bad_request(f"the request body is {size} bytes, over the hub's limit of {max_request_bytes}")
