"""Secret AgentEnvVars: keys starting with ``SECRET_`` are withheld from the sandbox and only used here.

The agent writes ``{{SECRET_NAME}}`` where a value belongs (``hub.http``'s url, headers, params, body);
the dispatcher puts the value in (``SecretBox.substitute``) and masks it again in everything that goes
back to the sandbox or into a log (``SecretBox.mask``). The agent can *use* a secret, never *read* it.

Shared by the dispatcher (``hubpy.hub._secrets``) and ``python -m hub run`` (``--secret``): one set of rules.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

from ._redact import MASK, MIN_SECRET_CHARS, Redactor

SECRET_PREFIX = "SECRET_"
# Only SECRET_-prefixed names are placeholders: "{{name}}" elsewhere (templates in a body) is left alone.
PLACEHOLDER_RE = re.compile(r"\{\{\s*(SECRET_[A-Za-z0-9_]*)\s*\}\}")

__all__ = ["MASK", "SECRET_PREFIX", "SecretBox", "SecretTooShort", "UnknownSecret", "is_secret_name", "withhold"]


def is_secret_name(name: str) -> bool:
    """``SECRET_`` and at least one more character, case as written (``secret_x`` is an ordinary env var)."""
    return name.startswith(SECRET_PREFIX) and len(name) > len(SECRET_PREFIX)


def withhold(env_vars: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The agent's env vars split into (what the sandbox may see, the secrets only the dispatcher keeps)."""
    visible: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for key, value in env_vars.items():
        (secrets if is_secret_name(key) else visible)[key] = value
    return visible, secrets


class UnknownSecret(Exception):
    """A ``{{SECRET_…}}`` placeholder names no secret of this agent (the name is not itself a secret)."""

    def __init__(self, name: str, where: str) -> None:
        super().__init__(f"unknown secret {{{{{name}}}}} in {where}: the agent has no AgentEnvVar {name}")
        self.name = name
        self.where = where


def wire_forms(value: str) -> set[str]:
    """How a value sent in a request may come back in an echo: percent-encoded (a url, a query, a form
    body), with JSON's optional ``\\/``, HTML-escaped, base64 (an echoed body). The redactor adds the raw,
    JSON- and repr-escaped forms itself."""
    forms = {
        quote(value, safe=""), quote(value), quote_plus(value),
        value.replace("/", "\\/"), json.dumps(value)[1:-1].replace("/", "\\/"),
        html.escape(value, quote=True), base64.b64encode(value.encode()).decode("ascii"),
    }
    return {f for f in forms if len(f) >= MIN_SECRET_CHARS}


class SecretTooShort(Exception):
    """A secret too short to be masked reliably is never put into a request (it could come back readable)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"secret {name} is shorter than {MIN_SECRET_CHARS} characters: too short to be masked in "
                         "what comes back, so the hub does not use it")
        self.name = name


class SecretBox:
    """One run's secrets: substitution into a request, masking of everything that leaves the dispatcher.

    ``mask`` hides the secrets (what goes back to the sandbox: a response); ``mask_for_log`` also hides
    ``also_mask`` (the agent's other env values, which every JobLog line masks) and is for log lines and
    error messages.
    """

    def __init__(self, secrets: Mapping[str, str], *, also_mask: Iterable[str] = ()) -> None:
        self._values = {k: v for k, v in secrets.items() if is_secret_name(k) and isinstance(v, str)}
        forms: set[str] = set()
        for value in self._values.values():
            forms.add(value)
            forms |= wire_forms(value)
        self.redactor = Redactor(forms)
        self.log_redactor = Redactor(forms | set(also_mask))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def placeholders(self, text: str) -> list[str]:
        return PLACEHOLDER_RE.findall(text)

    def substitute(self, text: str, where: str) -> str:
        """``text`` with every ``{{SECRET_NAME}}`` replaced by its value; UnknownSecret for a name it lacks,
        SecretTooShort for a value too short to mask."""
        def value_of(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self._values:
                raise UnknownSecret(name, where)
            value = self._values[name]
            if len(value) < MIN_SECRET_CHARS:
                raise SecretTooShort(name)
            return value

        return PLACEHOLDER_RE.sub(value_of, text)

    def mask(self, text: str) -> str:
        return self.redactor(text)

    def mask_for_log(self, text: str) -> str:
        return self.log_redactor(text)

    def head(self, text: str, limit: int) -> str:
        """The first ``limit`` characters, masked for a log, with no piece of a secret at the cut."""
        return self.log_redactor.head(text, limit)

    def clip(self, text: str, limit: int) -> str:
        """``text`` masked for a log, cut like ``head`` only when it is longer than ``limit``: a message the hub
        wrote whole has no cut, and its edges are words of its own (``169.254.169.254 is ...`` must stay
        readable even when an env value ends with ``169.254.169.254``)."""
        masked = self.log_redactor(text)
        return masked if len(masked) <= limit else self.log_redactor.head(text, limit)
