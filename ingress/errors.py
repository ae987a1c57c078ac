"""The one error shape of the HTTP API: ``{"error": code, "message": text, "field"?}``."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered to the client; ``code`` is stable, ``message`` is for humans."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})  # e.g. Retry-After of a 429

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out
