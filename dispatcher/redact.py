"""Masking an agent's secrets (its env var values) in text we store or log."""

from __future__ import annotations

from collections.abc import Iterable

MASK = "[redacted]"
# Shorter values would mask ordinary words and numbers; they are not secrets worth the noise.
MIN_SECRET_CHARS = 4


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text
