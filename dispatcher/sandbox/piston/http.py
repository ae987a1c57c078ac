"""Piston's HTTP API: pooled connections, errors mapped onto the port's, and requests a stop can cut short.

Connections are kept alive and reused (one ``requests.Session`` per client). A request made with a stop
check is waited for in the calling thread; one watcher thread (running only while such requests are in
flight) polls their checks and, when one turns true, shuts that request's socket down, so the calling
thread returns at once and nothing is left waiting for a run nobody wants.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
import structlog
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse

from dispatcher.sandbox.port import SandboxError, SandboxRefused, SandboxTransient, StopCheck

log = structlog.get_logger("piston")

POLL_S = 0.2  # stop checks are polled this often
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)


class _Cut:
    """The socket a thread is waiting on for an answer, so that another thread can shut it down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.done = False

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.done:  # asked while the request was being sent
                _shutdown(sock)

    def detach(self) -> None:
        with self._lock:
            self._sock = None

    def cut(self) -> None:
        with self._lock:
            self.done = True
            if self._sock is not None:
                _shutdown(self._sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once; urllib3 then drops the connection


_WAITING: contextvars.ContextVar[_Cut | None] = contextvars.ContextVar("piston_waiting", default=None)


class _CuttableConnection(HTTPConnection):
    """Lets the thread that waits for the answer be cut short (see _Watcher)."""

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 declares it
        cut = _WAITING.get()
        if cut is None or self.sock is None:
            return super().getresponse()
        cut.attach(self.sock)
        try:
            return super().getresponse()
        finally:
            cut.detach()


class _CuttableTlsConnection(_CuttableConnection, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _CuttableConnection


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _CuttableTlsConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TlsPool}


class _Watcher:
    """Polls the stop checks of the requests in flight; runs only while there are some."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[_Cut, StopCheck] = {}
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, should_stop: StopCheck) -> Iterator[_Cut]:
        cut = _Cut()
        with self._lock:
            self._watched[cut] = should_stop
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="piston-stop-watch", daemon=True)
                self._thread.start()
        try:
            yield cut
        finally:
            with self._lock:
                del self._watched[cut]

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._watched:
                    self._thread = None
                    return
                watched = list(self._watched.items())
            for cut, should_stop in watched:
                try:
                    stop = not cut.done and should_stop()
                except Exception:  # a broken check must not end the watch of the others
                    log.exception("piston_stop_check_failed")
                    stop = False
                if stop:
                    cut.cut()
            time.sleep(POLL_S)


def _never_connected(err: requests.ConnectionError) -> bool:
    """True when the TCP connection was never made (refused, DNS), so nothing can have run."""
    reason = err.args[0] if err.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


class PistonHttp:
    """Calls to one Piston server's HTTP API, over pooled keep-alive connections. Thread-safe."""

    def __init__(self, api: str, *, pool_size: int = 10) -> None:
        self.api = api
        self.session = requests.Session()
        adapter = _Adapter(pool_connections=1, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._watcher = _Watcher()

    def call(
        self,
        method: str,
        path: str,
        *,
        timeout: tuple[float, float | None],
        body: dict[str, Any] | None,
        should_stop: StopCheck | None = None,
    ) -> requests.Response | None:
        """One call with errors mapped; None only when should_stop() turned true before the answer came."""
        url = self.api + path
        try:
            if should_stop is None:
                return self.session.request(method, url, json=body, timeout=timeout)
            if should_stop():
                return None
            with self._watcher.watch(should_stop) as cut:
                token = _WAITING.set(cut)
                try:
                    return self.session.request(method, url, json=body, timeout=timeout)
                except requests.RequestException:
                    if cut.done:
                        return None
                    raise
                finally:
                    _WAITING.reset(token)
        except requests.ConnectTimeout as err:
            raise SandboxTransient(f"cannot connect to {url}: connect timeout") from err
        except requests.ReadTimeout as err:
            raise SandboxTransient(f"no answer from {url} within {timeout[1]} s (Piston queues jobs)", started=True) from err
        except requests.ConnectionError as err:
            never = _never_connected(err)
            what = "cannot connect to" if never else "connection dropped by"
            raise SandboxTransient(f"{what} {url}: {type(err).__name__}", started=not never) from err
        except requests.RequestException as err:
            raise SandboxTransient(f"{method} {url} failed: {type(err).__name__}", started=True) from err

    def close(self) -> None:
        self.session.close()


def raise_for_status(resp: requests.Response) -> None:
    """The port's error for a Piston answer other than 200."""
    status = resp.status_code
    data = json_or_none(resp)
    message = data.get("message") if isinstance(data, dict) and isinstance(data.get("message"), str) else None
    if status == 400:
        if message:
            raise SandboxRefused(message)
        stack = data.get("stack") if isinstance(data, dict) else None
        if isinstance(stack, str) and stack.strip():
            # Malformed JSON or a body over 100 kB: the error name is the first word of the stack.
            raise SandboxRefused(f"Piston rejected the request body: {stack.strip().split(':', 1)[0].split()[0]}")
        raise SandboxRefused("Piston rejected the request body (HTTP 400 without a message, e.g. stdin not a string)")
    if status in TRANSIENT_STATUSES:
        raise SandboxTransient(f"Piston answered HTTP {status}" + (f": {message}" if message else ""))
    if status in (404, 405, 413, 415):
        raise SandboxRefused(f"Piston answered HTTP {status}" + (f": {message}" if message else ""))
    raise SandboxError(f"Piston answered HTTP {status}" + (f": {message}" if message else ""))

