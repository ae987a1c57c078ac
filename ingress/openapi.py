"""The OpenAPI 3.1 document of the HTTP surface (ingress/openapi.json), served at /openapi.json.

tests/e2e/test_openapi_schemathesis.py runs schemathesis against the live app with this document,
so a route, status or body shape that drifts from it fails the suite.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

DOCUMENT_PATH = Path(__file__).resolve().parent / "openapi.json"


@functools.cache
def document_bytes() -> bytes:
    """The document as served (checked to be JSON once, at first use)."""
    raw = DOCUMENT_PATH.read_bytes()
    json.loads(raw)
    return raw


def document() -> dict[str, Any]:
    """The document as a dict."""
    doc: dict[str, Any] = json.loads(document_bytes())
    return doc
