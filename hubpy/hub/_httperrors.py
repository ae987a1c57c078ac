"""What a failed ``hub.http`` call is: ``hub.HttpError.kind`` and a message that names no secret.

Shared by the dispatcher's broker and ``python -m hub run``. Standard library only.
"""

from __future__ import annotations

from enum import Enum


class HttpErrorKind(str, Enum):  # noqa: UP042 - StrEnum is 3.11+, the SDK supports 3.10
    """``hub.HttpError.kind`` values."""

    FORBIDDEN = "forbidden"      # hub.http is off, a host outside either allow-list, or an address not allowed
    TIMEOUT = "timeout"          # the call's timeout or the run's remaining time ran out
    TOO_LARGE = "too_large"      # the response is over HUB_HTTP_MAX_RESPONSE_BYTES
    UNAVAILABLE = "unavailable"  # DNS, connection, TLS or protocol failure; too many redirects
    LIMIT = "limit"              # more than HUB_HTTP_MAX_CALLS calls in this run
    BAD_REQUEST = "bad_request"  # malformed arguments (nothing was sent)


class HttpCallError(Exception):
    """A call that did not produce a response; ``message`` is safe to show the agent and to log."""

    def __init__(self, kind: HttpErrorKind, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message


def forbidden(message: str) -> HttpCallError:
    return HttpCallError(HttpErrorKind.FORBIDDEN, message)


def bad_request(message: str) -> HttpCallError:
    return HttpCallError(HttpErrorKind.BAD_REQUEST, message)
