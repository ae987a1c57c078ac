"""``hub.http`` for ``python -m hub run``: the local runner makes the calls itself, with the hub's rules.

The rules are the modules the dispatcher's broker uses (``_httpargs``: the arguments; ``_secrets``: substitution
and masking; ``_hosts`` and ``_httphops``: both allow-lists, each hop and redirect; ``_addresses``: the address
classes; ``_httprecord``: the reply and the log line). Only the connection is this module's own, over
``http.client`` (the package is standard-library only): it is made to the address that was checked, with the
URL's name as ``Host``, TLS SNI and the name the certificate is checked against, under one deadline per call.

- ``--allow-host`` is the hub's ``HUB_HTTP_ALLOW_HOSTS`` (none: ``hub.http`` is off), the agent's own
  ``HUB_HTTP_ALLOW`` comes from ``--env`` as on the hub, ``--allow-private`` is ``HUB_HTTP_ALLOW_PRIVATE``
  (link-local and cloud metadata stay refused);
- ``--secret SECRET_NAME=value`` (and any ``--env SECRET_…``) is withheld from the agent's process and put in
  where the agent writes ``{{SECRET_NAME}}``; the response comes back with it masked.

Simpler than the hub: no connection pool, and bodies in gzip or deflate are decoded, other encodings passed on.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from ._addresses import IPAddress, Resolver, system_resolver
from ._hosts import HostPatternError, HostPatterns
from ._httpargs import DEFAULT_HEADERS, CheckedRequest, check_body_size, check_request
from ._httperrors import HttpCallError, HttpErrorKind, bad_request, forbidden
from ._httphops import (
    OFF,
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
from ._httprecord import AGENT_ALLOW_VAR, call_target, failed_line, limit_line, limit_message, ok_line, reply
from ._secrets import SecretBox

READ_CHUNK = 64 * 1024
MAX_ADDRESSES_TRIED = 4
_URL_SAFE = "/%:@!$&'()*+,;=?-._~[]"  # kept as written; anything else (non-ASCII) is percent-encoded


@dataclass(frozen=True)
class LocalHttpSettings:
    """The hub operator's settings, as the local runner plays them (the dispatcher's defaults)."""

    allow_hosts: HostPatterns | None = None  # --allow-host; None: hub.http is off
    allow_private: bool = False              # --allow-private
    max_calls: int = 50
    max_response_bytes: int = 1 << 20
    max_request_bytes: int = 1 << 20
    timeout_s: float = 30.0
    max_redirects: int = 5


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    url: str
    redirects: int


def _timeout(message: str) -> HttpCallError:
    return HttpCallError(HttpErrorKind.TIMEOUT, message)


def _unavailable(message: str) -> HttpCallError:
    return HttpCallError(HttpErrorKind.UNAVAILABLE, message)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the checked address, with the URL's name for SNI and the certificate check."""

    def __init__(self, ip: str, port: int, server_name: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(ip, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


def _encoded(req: CheckedRequest, hop: Hop) -> tuple[str, dict[str, str], bytes | None]:
    """The hop's URL (with the params on the first), headers and body, as requests would encode them."""
    url = hop.url
    if hop.with_params and req.params:
        parts = urlsplit(url)
        query = "&".join(q for q in (parts.query, urlencode(req.params)) if q)
        url = urlunsplit(parts._replace(query=query))
    headers = {**DEFAULT_HEADERS, **hop.headers}
    have = {k.lower() for k in headers}
    body: bytes | None = None
    if hop.with_body and req.json_body is not None:
        body = json.dumps(req.json_body, allow_nan=False).encode()
        if "content-type" not in have:
            headers["Content-Type"] = "application/json"
    elif hop.with_body and isinstance(req.data, dict):
        body = urlencode(list(req.data.items())).encode()
        if "content-type" not in have:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif hop.with_body and isinstance(req.data, str):
        body = req.data.encode()
    return url, headers, body


class LocalHttp:
    """One local run's ``hub.http``: the call budget, the secrets, the agent's allow-list. Thread-safe."""

    def __init__(self, settings: LocalHttpSettings, *, env_vars: Mapping[str, str], secrets: Mapping[str, str],
                 resolver: Resolver = system_resolver, tls: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.box = SecretBox(secrets, also_mask=[v for k, v in env_vars.items() if k != AGENT_ALLOW_VAR])
        self.resolver = resolver
        self.tls = tls or ssl.create_default_context()  # honours SSL_CERT_FILE, like the system's trust store
        self._lock = threading.Lock()
        self.calls = 0
        self.agent_allow: HostPatterns | None = None
        self.agent_allow_error: str | None = None
        try:
            self.agent_allow = HostPatterns.parse(env_vars.get(AGENT_ALLOW_VAR), AGENT_ALLOW_VAR)
        except HostPatternError as exc:
            self.agent_allow_error = str(exc)

    def call(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The reply body (``ok`` with ``result``, or ``error``) and the log line (None: nothing more to say)."""
        with self._lock:
            self.calls += 1
            n = self.calls
        where_ = call_target(dict(params))
        if n > self.settings.max_calls:
            line = limit_line(self.settings.max_calls) if n == self.settings.max_calls + 1 else None
            return _error(HttpErrorKind.LIMIT.value, limit_message(self.settings.max_calls)), line
        started = time.monotonic()
        try:
            response = self._perform(params, started)
        except HttpCallError as exc:
            elapsed = int((time.monotonic() - started) * 1000)
            message = self.box.clip(exc.message, 1000)
            line = failed_line(n, where_, kind=exc.kind.value, message=message, elapsed_ms=elapsed, box=self.box)
            return _error(exc.kind.value, message), self.box.mask_for_log(line)
        elapsed = int((time.monotonic() - started) * 1000)
        text = response.body.decode(response_encoding({k.lower(): v for k, v in response.headers.items()}),
                                    errors="replace")
        result = reply(self.box, status=response.status, reason=response.reason, headers=response.headers, text=text,
                       url=response.url, elapsed_ms=elapsed, size=len(response.body), redirects=response.redirects)
        line = ok_line(n, where_, status=response.status, elapsed_ms=elapsed, size=len(response.body),
                       redirects=response.redirects, final_url=response.url)
        return {"ok": True, "result": result}, self.box.mask_for_log(line)

    def _perform(self, params: Mapping[str, Any], started: float) -> _Response:
        s = self.settings
        if s.allow_hosts is None:
            raise forbidden(OFF + "; locally: --allow-host")
        req = check_request(params, self.box, max_timeout_s=s.timeout_s)
        check_body_size(len(_encoded(req, Hop(req.url, req.method, dict(req.headers)))[2] or b""), s.max_request_bytes)
        if self.agent_allow_error is not None:
            raise bad_request(self.agent_allow_error)
        timeout_s = req.timeout_s or s.timeout_s
        deadline = started + timeout_s
        hop = Hop(req.url, req.method, dict(req.headers))
        for n in range(s.max_redirects + 1):
            url, headers, body = _encoded(req, hop)
            target = target_of(url, hub_allow=s.allow_hosts, agent_allow=self.agent_allow, hop=n)
            try:
                addresses = self.resolver(target.host, target.port, deadline - time.monotonic())
            except TimeoutError:
                raise _timeout(f"{where(n)}{target.host}: the name did not resolve in the time left") from None
            except (OSError, UnicodeError):
                raise _unavailable(f"{where(n)}{target.host}: the name does not resolve") from None
            check_addresses(target, addresses, allow_private=s.allow_private, hop=n)
            status, reason, got, conn, response = self._send(hop.method, url, headers, body, target, addresses, deadline,
                                                             timeout_s)
            try:
                location = next((v for k, v in got.items() if k.lower() == "location"), None)
                if not (req.follow_redirects and status in REDIRECT_STATUSES and location):
                    data = self._read(response, conn, target, got, deadline, timeout_s)
                    return _Response(status, reason, got, data, url, n)
            finally:
                conn.close()
            hop = redirect(req, hop, url, status, location, n + 1)
        raise too_many_redirects(s.max_redirects)

    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | None, target: Target,
              addresses: list[IPAddress], deadline: float, timeout_s: float
              ) -> tuple[int, str, dict[str, str], http.client.HTTPConnection, http.client.HTTPResponse]:
        parts = urlsplit(url)
        path = quote(parts.path or "/", safe=_URL_SAFE) + (f"?{quote(parts.query, safe=_URL_SAFE)}" if parts.query else "")
        try:
            host_header = target.host_header.encode("idna").decode("ascii")
        except UnicodeError:
            raise bad_request("the url's host cannot be encoded") from None
        last: Exception | None = None
        for ip in addresses[:MAX_ADDRESSES_TRIED]:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            conn: http.client.HTTPConnection
            if target.scheme == "https":
                conn = _PinnedHTTPSConnection(ip.compressed, target.port, target.host, left, self.tls)
            else:
                conn = http.client.HTTPConnection(ip.compressed, target.port, timeout=left)
            try:
                conn.connect()
            except TimeoutError:  # socket.timeout too (an alias since 3.10)
                conn.close()
                raise _timeout(f"{target.host} did not answer within {timeout_s:g} s") from None
            except ssl.SSLCertVerificationError as exc:
                conn.close()
                raise _unavailable(f"TLS with {target.host} failed: the certificate was not accepted "
                                   f"({exc.verify_message})") from None
            except ssl.SSLError as exc:
                conn.close()
                raise _unavailable(f"TLS with {target.host} failed ({exc.reason or type(exc).__name__})") from None
            except OSError as exc:
                conn.close()
                last = exc
                continue  # nothing was sent: the name's next address
            try:
                conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", host_header)
                for name, value in headers.items():
                    conn.putheader(name, value)
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                response = conn.getresponse()
            except TimeoutError:  # socket.timeout too (an alias since 3.10)
                conn.close()
                raise _timeout(f"{target.host} did not answer within {timeout_s:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise _unavailable(f"the connection to {target.host} failed ({type(exc).__name__})") from None
            got: dict[str, str] = {}
            for name, value in response.getheaders():
                got[name] = f"{got[name]}, {value}" if name in got else value
            return response.status, response.reason or "", got, conn, response
        if last is None:
            raise _timeout(f"{target.host} did not answer in the time left")
        reason = getattr(last, "strerror", None) or type(last).__name__
        raise _unavailable(f"cannot connect to {target.host} ({reason})")

    def _read(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection, target: Target,
              headers: dict[str, str], deadline: float, timeout_s: float) -> bytes:
        limit = self.settings.max_response_bytes
        lower = {k.lower(): v for k, v in headers.items()}
        declared = (lower.get("content-length") or "").strip()
        too_large = (f"the response from {target.host} is over the hub's limit of {limit} bytes "
                     "(HUB_HTTP_MAX_RESPONSE_BYTES)")
        if declared.isdigit() and int(declared) > limit:
            raise HttpCallError(HttpErrorKind.TOO_LARGE, too_large)
        coding = lower.get("content-encoding", "").strip().lower()
        inflate = zlib.decompressobj(47 if coding == "gzip" else zlib.MAX_WBITS) if coding in ("gzip", "deflate") else None
        body = bytearray()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _timeout(f"{target.host} did not answer within {timeout_s:g} s")
                if conn.sock is not None:
                    conn.sock.settimeout(left)  # each read waits at most the call's time left: a drip cannot hold it
                chunk = response.read1(READ_CHUNK)
                if not chunk:
                    break
                body += inflate.decompress(chunk, limit + 1 - len(body)) if inflate is not None else chunk
                if len(body) > limit:
                    raise HttpCallError(HttpErrorKind.TOO_LARGE, too_large)
        except TimeoutError:  # socket.timeout too (an alias since 3.10)
            raise _timeout(f"{target.host} did not answer within {timeout_s:g} s") from None
        except zlib.error:
            raise _unavailable(f"the response from {target.host} could not be decoded (its Content-Encoding)") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _unavailable(f"the connection to {target.host} failed ({type(exc).__name__})") from None
        return bytes(body)


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"kind": kind, "message": message}}
