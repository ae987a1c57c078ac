"""Host allow-lists: ``HUB_HTTP_ALLOW_HOSTS`` (the operator's) and ``HUB_HTTP_ALLOW`` (the agent's).

A list is comma-separated patterns, matched against the URL's host (case-insensitive, trailing dot ignored):

- ``api.example.com``: that host only;
- ``*.example.com``: any host under example.com (``a.example.com``, ``a.b.example.com``), **not**
  ``example.com`` itself (list both when both are meant);
- ``*``: any host (the address rules still keep private ones out);
- an IP literal, ``203.0.113.7`` or ``[2001:db8::1]``: that address written as the URL's host.

No schemes, ports, paths or inner wildcards; hosts in ASCII (an internationalised name in its
``xn--`` form). A call must pass both lists.

Shared by the dispatcher's broker and ``python -m hub run`` (``--allow-host``). Standard library only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_LABEL_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class HostPatternError(ValueError):
    """A pattern that is not one; the message names the list and the pattern."""


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_hostname(host: str) -> bool:
    if not host or len(host) > 253 or not host.isascii():
        return False
    return all(_LABEL_RE.match(label) for label in host.split("."))


def normalise_host(host: str) -> str:
    """Lower case, no trailing dot, an IP literal in its compressed form without brackets."""
    host = host.strip().lower()
    ip = ip_literal(host)
    if ip is not None:
        return ip.compressed
    return host.rstrip(".")


@dataclass(frozen=True)
class HostPatterns:
    any_host: bool
    exact: frozenset[str]
    suffixes: frozenset[str]  # "example.com" for "*.example.com"
    source: str = ""

    @classmethod
    def parse(cls, text: str | None, source: str) -> HostPatterns | None:
        """The patterns of ``text``; None when it is unset or holds none (the list is off)."""
        items = [item.strip() for item in (text or "").split(",") if item.strip()]
        if not items:
            return None
        any_host = False
        exact: set[str] = set()
        suffixes: set[str] = set()
        for item in items:
            pattern = item.lower()
            if pattern == "*":
                any_host = True
            elif pattern.startswith("*.") and is_hostname(pattern[2:].rstrip(".")):
                suffixes.add(pattern[2:].rstrip("."))
            elif ip_literal(pattern) is not None and (":" not in pattern or pattern.startswith("[") == pattern.endswith("]")):
                exact.add(normalise_host(pattern))
            elif is_hostname(pattern.rstrip(".")) and ip_literal(pattern.rstrip(".")) is None:
                exact.add(pattern.rstrip("."))
            else:
                raise HostPatternError(
                    f"{source}: {item[:80]!r} is not a host pattern (expected e.g. api.example.com, *.example.com, "
                    "* or an IP address; no scheme, port, path or other wildcard)")
        return cls(any_host=any_host, exact=frozenset(exact), suffixes=frozenset(suffixes), source=source)

    def allows(self, host: str) -> bool:
        host = normalise_host(host)
        if not host:
            return False
        if self.any_host or host in self.exact:
            return True
        if ip_literal(host) is not None:
            return False  # "*.example.com" never matches an address
        return any(host.endswith("." + suffix) for suffix in self.suffixes)

    def __str__(self) -> str:
        items = (["*"] if self.any_host else []) + sorted(self.exact) + sorted(f"*.{s}" for s in self.suffixes)
        return ",".join(items)
