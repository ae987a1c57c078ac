"""The pooled HTTP client of brokered calls: requests' HTTPAdapter (urllib3 pools) that connects to the
address the broker checked, never to whatever the name resolves to later.

- **Pinning.** The broker puts a ``Pin`` (the checked IP and the URL's host name) on each prepared request;
  the adapter picks the urllib3 pool for that IP, with TLS SNI and certificate verification for the host
  name (``server_hostname``/``assert_hostname``), and the request carries ``Host: <name>``. urllib3 never
  resolves the name, so DNS cannot change between the check and the connection (no rebinding).
- **No Session.** A ``requests.Session`` keeps a cookie jar and reads proxy settings from the environment:
  one agent's cookies would ride along with another agent's calls, and a proxy would bypass the pin. The
  adapter is used directly; each call carries exactly the headers its agent gave.
- **A deadline for the whole call.** Socket timeouts bound each read, not the call: a server that drips a
  byte a second would never time out. A ``Guard`` (a timer) shuts the socket of the connection in use when
  the call's deadline passes, which ends whatever read is blocked on it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from hubpy.hub._addresses import IPAddress

PIN_ATTRIBUTE = "_hub_pin"
_current = threading.local()  # the Guard of the call this thread is making, if any


@dataclass(frozen=True)
class Pin:
    ip: IPAddress
    hostname: str  # the URL's host: SNI, certificate check, Host header


class UnpinnedRequest(RuntimeError):
    """A request reached the adapter without a checked address: a bug, never sent."""


class Guard:
    """Ends a call at ``deadline`` (time.monotonic()) by shutting the socket its connection reads from."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self._lock = threading.Lock()
        self._conn: HTTPConnection | None = None
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Guard:
        _current.guard = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _current.guard = None
        with self._lock:
            self._conn = None

    def attach(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
            if self.expired:
                _shut(conn)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            if self._conn is not None:
                _shut(self._conn)


def _shut(conn: HTTPConnection) -> None:
    sock = conn.sock
    if sock is None:
        return  # still connecting: the connect timeout (cut to the time left) bounds that
    # socket.socket's own shutdown, also for a TLS socket: SSLSocket.shutdown would drop its TLS state under
    # the reading thread; a shut socket just reads EOF there.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _GuardedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        guard: Guard | None = getattr(_current, "guard", None)
        if guard is not None:
            guard.attach(self)
        super().request(*args, **kwargs)


class _GuardedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        guard: Guard | None = getattr(_current, "guard", None)
        if guard is not None:
            guard.attach(self)
        super().request(*args, **kwargs)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class PinnedAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools are keyed by the checked IP (and, for TLS, the host name it serves)."""

    def __init__(self, *, pools: int = 64, per_pool: int = 8) -> None:
        super().__init__(pool_connections=pools, pool_maxsize=per_pool, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: Mapping[str, str] | None = None, cert: Any = None) -> HTTPConnectionPool:
        pin: Pin | None = getattr(request, PIN_ATTRIBUTE, None)
        if pin is None:
            raise UnpinnedRequest("a brokered request must carry the address it was checked against")
        host_params, key_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        pool_kwargs: dict[str, Any] = dict(key_kwargs)
        host_params["host"] = pin.ip.compressed
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = pin.hostname
            pool_kwargs["assert_hostname"] = pin.hostname
        pool: HTTPConnectionPool = self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)
        return pool


def pin(prepared: requests.PreparedRequest, target: Pin, host_header: str) -> None:
    """Make ``prepared`` go to ``target.ip`` with ``Host: host_header``."""
    setattr(prepared, PIN_ATTRIBUTE, target)
    prepared.headers["Host"] = host_header
