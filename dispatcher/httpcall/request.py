"""A ``hub.http`` call's arguments checked with their secrets put in (the rules: hubpy/hub/_httpargs.py, shared
with ``python -m hub run``), then encoded by requests for each hop. Nothing is sent for a refused request."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from hubpy.hub._httpargs import DEFAULT_HEADERS, CheckedRequest, check_body_size, check_request
from hubpy.hub._httperrors import bad_request
from hubpy.hub._secrets import SecretBox


@dataclass(frozen=True)
class HttpRequest(CheckedRequest):
    """A checked call, encoded by requests for each hop."""

    def prepared(self, *, url: str | None = None, method: str | None = None, headers: Mapping[str, str] | None = None,
                 with_params: bool = True, with_body: bool = True) -> requests.PreparedRequest:
        """Encoded by requests (query, JSON or form body, IDNA host) for one hop; bad_request if it cannot be."""
        return prepare(method or self.method, url or self.url, dict(self.headers if headers is None else headers),
                       self.params if with_params else None, self.json_body if with_body else None,
                       self.data if with_body else None)


def prepare(method: str, url: str, headers: dict[str, str], params: list[tuple[str, str]] | None, json_body: Any,
            data: str | dict[str, str] | None) -> requests.PreparedRequest:
    try:
        return requests.Request(method, url, headers={**DEFAULT_HEADERS, **headers}, params=params or None,
                                json=json_body, data=data).prepare()
    except (requests.RequestException, ValueError, UnicodeError) as exc:
        # Never the exception's text: requests quotes the whole url, secrets and all.
        raise bad_request(f"the request cannot be encoded ({type(exc).__name__}): check the url's host and port") from None


def build_request(params: Mapping[str, Any], box: SecretBox, *, max_request_bytes: int, max_timeout_s: float
                  ) -> HttpRequest:
    """The call's params (as ``hub.http`` sends them) checked, with secrets substituted, test-encoded."""
    checked = check_request(params, box, max_timeout_s=max_timeout_s)
    request = HttpRequest(**{f.name: getattr(checked, f.name) for f in dataclasses.fields(checked)})
    body = request.prepared().body
    check_body_size(len(body.encode() if isinstance(body, str) else body or b""), max_request_bytes)
    return request
