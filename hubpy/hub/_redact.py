"""Masking an agent's secrets (its env var values) in text we store or log.

Here, in the hub package, so that ``python -m hub run`` masks exactly as the dispatcher does (which imports
it as ``hubpy.hub._redact``). Standard library only, Python 3.10+, like the rest of the package.

What we store of an agent's output is a window (a tail of stdout/stderr, the head of a long log line),
and a window's edge can cut a secret in two. ``tail``/``head`` therefore redact the whole text first and
then also mask a piece of a secret left at either edge of the window, so no fragment of a value survives.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

MASK = "[redacted]"
# Shorter values would mask ordinary words and numbers; they are not secrets worth the noise.
MIN_SECRET_CHARS = 4
# A fragment of a secret at a window's edge is masked from this length on.
MIN_FRAGMENT_CHARS = 4


def _forms(secret: str) -> set[str]:
    """The secret as it may appear in text: raw, and escaped as in JSON or a Python repr."""
    forms = {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    return {f for f in forms if len(f) >= MIN_SECRET_CHARS}


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS}
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({form for s in values for form in _forms(s)}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def tail(self, text: str, limit: int) -> str:
        """The last ``limit`` characters of ``text``, redacted, with no fragment of a secret at either edge."""
        full = self(text)
        return self._edges(full[-limit:] if limit > 0 else "")

    def head(self, text: str, limit: int) -> str:
        """The first ``limit`` characters of ``text``, redacted, with no fragment of a secret at either edge."""
        return self._edges(self(text)[:limit] if limit > 0 else "")

    def _edges(self, text: str) -> str:
        for secret in self._secrets:
            # Longest fragment first: the start may hold the end of a secret, the end its beginning.
            for n in range(len(secret) - 1, MIN_FRAGMENT_CHARS - 1, -1):
                if text.startswith(secret[-n:]):
                    text = MASK + text[n:]
                    break
            for n in range(len(secret) - 1, MIN_FRAGMENT_CHARS - 1, -1):
                if text.endswith(secret[:n]):
                    text = text[: len(text) - n] + MASK
                    break
        return text
