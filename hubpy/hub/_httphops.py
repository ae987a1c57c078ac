"""The rules of each hop of a ``hub.http`` call: which URL may be reached (both allow-lists), which addresses
it may connect to, and where a redirect leads and with what.

Shared by the dispatcher's broker (dispatcher/httpcall/broker.py, over requests) and ``python -m hub run``
(hub/_httplocal.py, over http.client): each makes the connection its own way, with these rules.
Standard library only, Python 3.10+.
"""

from __future__ import annotations

import codecs
import email.message
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from ._addresses import IPAddress, refusal
from ._hosts import HostPatterns, ip_literal, normalise_host
from ._httpargs import CREDENTIAL_HEADERS, CheckedRequest
from ._httperrors import HttpCallError, HttpErrorKind, forbidden

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
OFF = "hub.http is off on this hub (the operator has not set HUB_HTTP_ALLOW_HOSTS)"


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str         # normalised: lower case, no brackets
    port: int
    host_header: str  # the URL's authority without user info


@dataclass(frozen=True)
class Hop:
    """What one hop sends: the first is the agent's request, each redirect makes the next."""

    url: str
    method: str
    headers: dict[str, str] = field(repr=False)
    with_params: bool = True  # the first hop's query gets the params; a redirect's Location is taken as it is
    with_body: bool = True


def where(hop: int) -> str:
    return f"redirect {hop} to " if hop else ""


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, normalise_host(parts.hostname or ""), parts.port or (443 if scheme == "https" else 80)


def target_of(url: str, *, hub_allow: HostPatterns | None, agent_allow: HostPatterns | None, hop: int) -> Target:
    """The hop's target, or ``forbidden`` when a rule refuses it: the scheme, the hub's allow-list (None: off),
    the agent's own (None: it declares none)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise forbidden(f"{where(hop)}a {scheme or 'schemeless'} URL: only http and https are allowed")
    host = normalise_host(parts.hostname or "")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise HttpCallError(HttpErrorKind.UNAVAILABLE, f"{where(hop)}a URL with an invalid port") from None
    if hub_allow is None:
        raise forbidden(OFF)
    if not hub_allow.allows(host):
        raise forbidden(f"{where(hop)}{host}: not a host this hub allows (HUB_HTTP_ALLOW_HOSTS)")
    if agent_allow is None:
        raise forbidden("this agent declares no hosts: set its HUB_HTTP_ALLOW env var (e.g. api.example.com)")
    if not agent_allow.allows(host):
        raise forbidden(f"{where(hop)}{host}: not in the agent's HUB_HTTP_ALLOW")
    return Target(scheme, host, port, parts.netloc.rpartition("@")[2])


def check_addresses(target: Target, addresses: Sequence[IPAddress], *, allow_private: bool, hop: int) -> None:
    """``forbidden`` when any address the name resolved to is refused (one bad address refuses the name:
    a name that mixes public and private addresses is how DNS rebinding starts)."""
    if not addresses:
        raise HttpCallError(HttpErrorKind.UNAVAILABLE, f"{where(hop)}{target.host}: the name has no address")
    literal = ip_literal(target.host)
    for ip in addresses:
        why = refusal(ip, allow_private=allow_private, host=None if literal else target.host)
        if why is not None:
            raise forbidden(where(hop) + why)


def redirect(req: CheckedRequest, hop: Hop, sent_url: str, status: int, location: str, number: int) -> Hop:
    """The hop after a redirect (``number``, from 1) from ``sent_url`` to ``location``."""
    next_url = urljoin(sent_url, location)
    method, headers, with_body = hop.method, hop.headers, hop.with_body
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, with_body = "GET", False  # what browsers and requests do
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    if origin(next_url) != origin(sent_url):
        # Another origin gets no credential and no header that carried a secret; a body with a secret
        # is not resent to it (307/308 keep the body).
        headers = {k: v for k, v in headers.items()
                   if k.lower() not in CREDENTIAL_HEADERS and k.lower() not in req.secret_headers}
        if with_body and req.body_has_secret:
            raise forbidden(f"redirect {number} leads to another origin ({origin(next_url)[1]}) and would "
                            "resend the request body with its secret")
    return Hop(next_url, method, headers, with_params=False, with_body=with_body)


def too_many_redirects(max_redirects: int) -> HttpCallError:
    return HttpCallError(HttpErrorKind.UNAVAILABLE, f"more than {max_redirects} redirects (HUB_HTTP_MAX_REDIRECTS)")


def response_encoding(headers: Mapping[str, str]) -> str:
    """The body's text encoding: the Content-Type charset when Python knows it, else UTF-8."""
    message = email.message.Message()
    message["content-type"] = headers.get("content-type", "")
    charset = message.get_content_charset()
    if charset:
        try:
            return codecs.lookup(charset).name
        except LookupError:
            pass
    return "utf-8"
