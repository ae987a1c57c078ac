"""Performing one checked ``hub.http`` request: allow-lists, address rules and pinning on every hop,
redirects followed here (at most ``max_redirects``), one deadline for the whole call, a size cap.

The broker knows nothing of the run: it gets a request whose secrets are already in place (request.py)
and returns the raw response; ``run.RunHttp`` counts, masks, records and builds the reply.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from urllib3.util.ssl_match_hostname import CertificateError

from dispatcher.config import HttpSettings
from dispatcher.httpcall.request import HttpRequest
from dispatcher.httpcall.transport import Guard, Pin, PinnedAdapter, pin
from hubpy.hub._addresses import IPAddress, Resolver, system_resolver
from hubpy.hub._hosts import HostPatterns
from hubpy.hub._httperrors import HttpCallError, HttpErrorKind
from hubpy.hub._httphops import (
    REDIRECT_STATUSES,
    Hop,
    Target,
    check_addresses,
    redirect,
    response_encoding,
    target_of,
    too_many_redirects,
    where,
)

MIN_CALL_S = 0.05     # no call is started with less time than this left
CONNECT_TIMEOUT_S = 10.0
MAX_ADDRESSES_TRIED = 4  # of one name, on connection failures only (nothing was sent)
READ_CHUNK = 64 * 1024


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


def _timeout(message: str) -> HttpCallError:
    return HttpCallError(HttpErrorKind.TIMEOUT, message)


def _unavailable(message: str) -> HttpCallError:
    return HttpCallError(HttpErrorKind.UNAVAILABLE, message)


def _too_large(message: str) -> HttpCallError:
    return HttpCallError(HttpErrorKind.TOO_LARGE, message)


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
        timeout_s = req.timeout_s or self.settings.http_timeout_s
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
        hop = Hop(req.url, req.method, dict(req.headers))
        for n in range(self.settings.http_max_redirects + 1):
            prepared = req.prepared(url=hop.url, method=hop.method, headers=hop.headers, with_params=hop.with_params,
                                    with_body=hop.with_body)
            assert prepared.url is not None
            target = target_of(prepared.url, hub_allow=self.settings.http_allow_hosts, agent_allow=agent_allow, hop=n)
            addresses = self._addresses(target, guard, n)
            response = self._send(prepared, target, addresses, guard)
            location = response.headers.get("location")
            if not (req.follow_redirects and response.status_code in REDIRECT_STATUSES and location):
                body = self._read(response, target)
                return HttpResponse(
                    status=response.status_code, reason=response.reason or "", headers=dict(response.headers), body=body,
                    encoding=response_encoding(response.headers), url=prepared.url,
                    elapsed_ms=int((time.monotonic() - started) * 1000), redirects=n,
                )
            response.close()
            hop = redirect(req, hop, prepared.url, response.status_code, location, n + 1)
        raise too_many_redirects(self.settings.http_max_redirects)

    def _addresses(self, target: Target, guard: Guard, hop: int) -> list[IPAddress]:
        try:
            addresses = self.resolver(target.host, target.port, guard.deadline - time.monotonic())
        except TimeoutError:
            raise _timeout(f"{where(hop)}{target.host}: the name did not resolve in the time left") from None
        except (OSError, UnicodeError):
            raise _unavailable(f"{where(hop)}{target.host}: the name does not resolve") from None
        check_addresses(target, addresses, allow_private=self.settings.http_allow_private, hop=hop)
        return addresses

    def _send(self, prepared: requests.PreparedRequest, target: Target, addresses: list[IPAddress], guard: Guard
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

    def _read(self, response: requests.Response, target: Target) -> bytes:
        limit = self.settings.http_max_response_bytes
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
