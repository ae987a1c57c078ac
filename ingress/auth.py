"""Caller authentication: a shared bearer token (INGRESS_TOKEN), compared in constant time."""

from __future__ import annotations

import hmac


def bearer_problem(header: str | None, token: str) -> str | None:
    """Why ``header`` (an Authorization value) does not carry ``token``, or None when it does.

    The reasons are safe to log and to answer: they never include what the caller sent.
    """
    if not header:
        return "missing bearer token"
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return "malformed Authorization header"
    # Bytes, not str: compare_digest refuses non-ASCII str, and a caller must not be able to make us raise.
    if not hmac.compare_digest(presented.strip().encode("utf-8", "replace"), token.encode("utf-8")):
        return "invalid bearer token"
    return None
