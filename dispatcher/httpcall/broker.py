"""Performing one checked ``hub.http`` request: allow-lists, address rules and pinning on every hop,
redirects followed here (at most ``max_redirects``), one deadline for the whole call, a size cap.

The broker knows nothing of the run: it gets a request whose secrets are already in place (request.py)
and returns the raw response; ``run.RunHttp`` counts, masks, records and builds the reply.
"""

from __future__ import annotations

import codecs
import email.message
import http.client
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from urllib3.util.ssl_match_hostname import CertificateError

from core.config import ConfigError, parse_flag, parse_float, parse_int
from dispatcher.httpcall.addresses import IPAddress, Resolver, refusal, system_resolver
from dispatcher.httpcall.errors import HttpCallError, HttpErrorKind, forbidden
from dispatcher.httpcall.hosts import HostPatternError, HostPatterns, ip_literal, normalise_host
from dispatcher.httpcall.request import CREDENTIAL_HEADERS, HttpRequest
from dispatcher.httpcall.transport import Guard, Pin, PinnedAdapter, pin

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MIN_CALL_S = 0.05     # no call is started with less time than this left
CONNECT_TIMEOUT_S = 10.0
MAX_ADDRESSES_TRIED = 4  # of one name, on connection failures only (nothing was sent)
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class HttpSettings:
    """The operator's settings (environment variables of the dispatcher)."""

    allow_hosts: HostPatterns | None = None  # HUB_HTTP_ALLOW_HOSTS; None: hub.http is off
    allow_private: bool = False              # HUB_HTTP_ALLOW_PRIVATE=1: loopback/private/reserved allowed (dev, tests)
    max_calls: int = 50                      # HUB_HTTP_MAX_CALLS per run
    max_response_bytes: int = 1 << 20        # HUB_HTTP_MAX_RESPONSE_BYTES (decoded body)
    timeout_s: float = 30.0                  # HUB_HTTP_TIMEOUT_S: a call's default and largest timeout
    max_redirects: int = 5                   # HUB_HTTP_MAX_REDIRECTS
    max_request_bytes: int = 1 << 20         # HUB_HTTP_MAX_REQUEST_BYTES (encoded body)

    @property
    def enabled(self) -> bool:
        return self.allow_hosts is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HttpSettings:
        """From the dispatcher's environment; ConfigError naming the variable for a bad value."""
        try:
            allow_hosts = HostPatterns.parse(env.get("HUB_HTTP_ALLOW_HOSTS"), "HUB_HTTP_ALLOW_HOSTS")
        except HostPatternError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            allow_hosts=allow_hosts,
            allow_private=parse_flag(env, "HUB_HTTP_ALLOW_PRIVATE"),
            max_calls=parse_int(env, "HUB_HTTP_MAX_CALLS", 50, minimum=0),
            max_response_bytes=parse_int(env, "HUB_HTTP_MAX_RESPONSE_BYTES", 1 << 20, minimum=1),
            timeout_s=parse_float(env, "HUB_HTTP_TIMEOUT_S", 30.0, minimum=0.1),
            max_redirects=parse_int(env, "HUB_HTTP_MAX_REDIRECTS", 5, minimum=0),
            max_request_bytes=parse_int(env, "HUB_HTTP_MAX_REQUEST_BYTES", 1 << 20, minimum=0),
        )


@dataclass(frozen=True)
class HttpResponse:
    """The final response, unmasked (RunHttp masks it before anything leaves the dispatcher)."""

    status: int
    reason: str
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    encoding: str
    url: str = field(repr=False)
    elapsed_ms: int
    redirects: int

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(self.encoding, errors="replace")


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str         # normalised: lower case, no brackets
    port: int
    host_header: str  # the URL's authority without user info


def _timeout(message: str) -> HttpCallError:
    return HttpCallError(HttpErrorKind.TIMEOUT, message)


def _unavailable(message: str) -> HttpCallError:
    return HttpCallError(HttpErrorKind.UNAVAILABLE, message)


def _too_large(message: str) -> HttpCallError:
    return HttpCallError(HttpErrorKind.TOO_LARGE, message)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, normalise_host(parts.hostname or ""), parts.port or (443 if scheme == "https" else 80)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, requests' args[0], urllib3's ``reason``."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for inner in (e.__cause__, e.__context__, getattr(e, "reason", None), *(e.args[:1] if e.args else ())):
            if isinstance(inner, BaseException):
                todo.append(inner)


def _encoding(headers: Mapping[str, str]) -> str:
    message = email.message.Message()
    message["content-type"] = headers.get("content-type", "")
    charset = message.get_content_charset()
    if charset:
        try:
            return codecs.lookup(charset).name
        except LookupError:
            pass
    return "utf-8"


class HttpBroker:
    """One per dispatcher process (``broker_for``): the pooled client and the rules. Thread-safe."""

    def __init__(self, settings: HttpSettings, *, resolver: Resolver = system_resolver, verify: bool | str = True) -> None:
        self.settings = settings
        self.resolver = resolver
        self.verify = verify  # a CA bundle path in tests; True: the system's (certifi's) trust store
        self.adapter = PinnedAdapter()

    def close(self) -> None:
        self.adapter.close()

    # --- one call -------------------------------------------------------------------------

    def perform(self, req: HttpRequest, *, agent_allow: HostPatterns | None, deadline: float) -> HttpResponse:
        """The final response, or HttpCallError. ``deadline`` is the run's (time.monotonic())."""
        started = time.monotonic()
        timeout_s = req.timeout_s or self.settings.timeout_s
        call_deadline = min(deadline, started + timeout_s)
        within = (f"the call's timeout of {timeout_s:g} s" if call_deadline < deadline
                  else "the time left in the agent's run")
        if call_deadline - started < MIN_CALL_S:
            raise _timeout("no time left in the agent's run for the call")
        host = urlsplit(req.url).hostname or "?"
        with Guard(call_deadline) as guard:
            try:
                response = self._hops(req, agent_allow, guard, started)
            except HttpCallError as exc:
                if guard.expired and exc.kind is HttpErrorKind.UNAVAILABLE:
                    raise _timeout(f"{host} did not answer within {within}") from None
                raise
            except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                raise self._failure(exc, guard, host, within) from None
            if guard.expired:  # a read cut by the guard can look like a short, complete body
                raise _timeout(f"{host} did not answer within {within}")
            return response

    def _hops(self, req: HttpRequest, agent_allow: HostPatterns | None, guard: Guard, started: float) -> HttpResponse:
        url, method, headers = req.url, req.method, dict(req.headers)
        with_params = with_body = True
        for hop in range(self.settings.max_redirects + 1):
            prepared = req.prepared(url=url, method=method, headers=headers, with_params=with_params, with_body=with_body)
            assert prepared.url is not None
            target = self._target(prepared.url, agent_allow, hop)
            addresses = self._addresses(target, guard, hop)
            response = self._send(prepared, target, addresses, guard)
            location = response.headers.get("location")
            if not (req.follow_redirects and response.status_code in REDIRECT_STATUSES and location):
                body = self._read(response, target)
                return HttpResponse(
                    status=response.status_code, reason=response.reason or "", headers=dict(response.headers), body=body,
                    encoding=_encoding(response.headers), url=prepared.url,
                    elapsed_ms=int((time.monotonic() - started) * 1000), redirects=hop,
                )
            response.close()
            next_url = urljoin(prepared.url, location)
            status = response.status_code
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, with_body = "GET", False  # what browsers and requests do
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            if _origin(next_url) != _origin(prepared.url):
                # Another origin gets no credential and no header that carried a secret; a body with a secret
                # is not resent to it (307/308 keep the body).
                headers = {k: v for k, v in headers.items()
                           if k.lower() not in CREDENTIAL_HEADERS and k.lower() not in req.secret_headers}
                if with_body and req.body_has_secret:
                    raise forbidden(f"redirect {hop + 1} leads to another origin ({_origin(next_url)[1]}) and would "
                                    "resend the request body with its secret")
            url, with_params = next_url, False
        raise _unavailable(f"more than {self.settings.max_redirects} redirects (HUB_HTTP_MAX_REDIRECTS)")

    def _target(self, url: str, agent_allow: HostPatterns | None, hop: int) -> _Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        where = f"redirect {hop} to " if hop else ""
        if scheme not in ("http", "https"):
            raise forbidden(f"{where}a {scheme or 'schemeless'} URL: only http and https are allowed")
        host = normalise_host(parts.hostname or "")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise _unavailable(f"{where}a URL with an invalid port") from None
        if self.settings.allow_hosts is None:
            raise forbidden("hub.http is off on this hub (the operator has not set HUB_HTTP_ALLOW_HOSTS)")
        if not self.settings.allow_hosts.allows(host):
            raise forbidden(f"{where}{host}: not a host this hub allows (HUB_HTTP_ALLOW_HOSTS)")
        if agent_allow is None:
            raise forbidden("this agent declares no hosts: set its HUB_HTTP_ALLOW env var (e.g. api.example.com)")
        if not agent_allow.allows(host):
            raise forbidden(f"{where}{host}: not in the agent's HUB_HTTP_ALLOW")
        return _Target(scheme, host, port, parts.netloc.rpartition("@")[2])

    def _addresses(self, target: _Target, guard: Guard, hop: int) -> list[IPAddress]:
        where = f"redirect {hop} to " if hop else ""
        literal = ip_literal(target.host)
        try:
            addresses = self.resolver(target.host, target.port, guard.deadline - time.monotonic())
        except TimeoutError:
            raise _timeout(f"{where}{target.host}: the name did not resolve in the time left") from None
        except (OSError, UnicodeError):
            raise _unavailable(f"{where}{target.host}: the name does not resolve") from None
        if not addresses:
            raise _unavailable(f"{where}{target.host}: the name has no address")
        for ip in addresses:
            why = refusal(ip, allow_private=self.settings.allow_private, host=None if literal else target.host)
            if why is not None:
                raise forbidden(where + why)
        return addresses

    def _send(self, prepared: requests.PreparedRequest, target: _Target, addresses: list[IPAddress], guard: Guard
              ) -> requests.Response:
        tried = addresses[:MAX_ADDRESSES_TRIED]
        for i, ip in enumerate(tried):
            left = guard.deadline - time.monotonic()
            if left <= 0:
                break
            pin(prepared, Pin(ip, target.host), target.host_header)
            try:
                return self.adapter.send(prepared, stream=True, timeout=(min(left, CONNECT_TIMEOUT_S), left),
                                         verify=self.verify)
            except requests.ConnectionError as exc:
                # NewConnectionError is a ConnectTimeoutError: either way nothing was sent.
                not_connected = any(isinstance(e, urllib3.exceptions.ConnectTimeoutError) for e in _causes(exc))
                if not_connected and i + 1 < len(tried) and not guard.expired:
                    continue  # nothing was sent: the name's next address
                raise
        raise _timeout(f"{target.host} did not answer in the time left")

    def _read(self, response: requests.Response, target: _Target) -> bytes:
        limit = self.settings.max_response_bytes
        declared = (response.headers.get("content-length") or "").strip()
        if declared.isdigit() and int(declared) > limit:
            response.close()
            raise _too_large(f"the response from {target.host} is {int(declared)} bytes, over the hub's limit of {limit} "
                             "(HUB_HTTP_MAX_RESPONSE_BYTES)")
        body = bytearray()
        try:
            for chunk in response.iter_content(READ_CHUNK):
                body += chunk
                if len(body) > limit:
                    raise _too_large(f"the response from {target.host} is over the hub's limit of {limit} bytes "
                                     "(HUB_HTTP_MAX_RESPONSE_BYTES)")
        finally:
            response.close()  # after a full read this returns the connection to its pool; else it drops it
        return bytes(body)

    @staticmethod
    def _failure(exc: BaseException, guard: Guard, host: str, within: str) -> HttpCallError:
        """An exception of requests/urllib3 as an HttpCallError; never its text (it quotes the URL)."""
        chain = list(_causes(exc))
        if guard.expired:
            return _timeout(f"{host} did not answer within {within}")
        for e in chain:
            if isinstance(e, urllib3.exceptions.NewConnectionError):  # a subclass of ConnectTimeoutError, but a refusal
                reason = next((c.strerror for c in chain if isinstance(c, OSError) and c.strerror), "refused")
                return _unavailable(f"cannot connect to {host} ({reason})")
        if any(isinstance(e, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError) for e in chain):
            return _timeout(f"{host} did not answer within {within}")
        for e in chain:
            if isinstance(e, ssl.SSLCertVerificationError):
                return _unavailable(f"TLS with {host} failed: the certificate was not accepted ({e.verify_message})")
            if isinstance(e, ssl.SSLError):
                return _unavailable(f"TLS with {host} failed ({e.reason or type(e).__name__})")
            if isinstance(e, CertificateError):
                return _unavailable(f"TLS with {host} failed: the certificate is not for {host}")
            if isinstance(e, requests.exceptions.ContentDecodingError):
                return _unavailable(f"the response from {host} could not be decoded (its Content-Encoding)")
        return _unavailable(f"the connection to {host} failed ({type(chain[-1]).__name__})")


_brokers: dict[HttpSettings, HttpBroker] = {}
_brokers_lock = threading.Lock()


def broker_for(settings: HttpSettings) -> HttpBroker:
    """The process's broker (and its connection pools) for these settings."""
    with _brokers_lock:
        broker = _brokers.get(settings)
        if broker is None:
            broker = _brokers[settings] = HttpBroker(settings)
        return broker
