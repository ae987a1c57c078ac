"""Real local HTTP(S) servers for the brokered-HTTP tests (stdlib http.server in threads, loopback only).

Paths: /echo (the request back as JSON, Authorization also in X-Echo-Authorization), /redirect?to=URL&status=N,
/loop (redirects to itself), /status?code=N, /big?bytes=N[&length=0] (N bytes streamed; records whether all
were sent), /declared?bytes=N (headers say N bytes, the body waits for ``release``), /hang (waits for
``release``), /drip?seconds=S (a byte every 0.1 s for S seconds), /gzip?bytes=N (N zero bytes, gzip-encoded),
/cookie (sets one), anything else: 200 "ok".
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

RELEASE_WAIT_S = 30.0  # the longest a /hang or /declared handler waits for the test to release it


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


@dataclass
class ServerState:
    requests: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    big_finished: list[bool] = field(default_factory=list)  # one entry per /big response: all bytes sent?
    sni: list[str | None] = field(default_factory=list)     # TLS: the server names clients asked for
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.state.lock:
            self.server.state.requests.append(Seen(self.command, self.path, dict(self.headers.items()), body,
                                                   int(self.client_address[1])))
        return body

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _any(self) -> None:
        body = self._record()
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        state = self.server.state
        if url.path == "/echo":
            payload = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                       "body": body.decode("utf-8", "replace")}
            extra = {"Content-Type": "application/json"}
            if self.headers.get("Authorization"):
                extra["X-Echo-Authorization"] = self.headers["Authorization"]
            self._send(200, json.dumps(payload).encode(), extra)
        elif url.path == "/redirect":
            self._send(int(q.get("status", "302")), b"", {"Location": q["to"]})
        elif url.path == "/status":
            self._send(int(q["code"]), f"status {q['code']}".encode(), {"Content-Type": "text/plain"})
        elif url.path == "/big":
            self._big(int(q["bytes"]), q.get("length", "1") == "1")
        elif url.path == "/declared":
            self.send_response(200)
            self.send_header("Content-Length", q["bytes"])
            self.end_headers()
            self.wfile.flush()
            state.release.wait(RELEASE_WAIT_S)
            self._write_quietly(b"x" * int(q["bytes"]))
        elif url.path == "/hang":
            state.release.wait(RELEASE_WAIT_S)
            self._send(200, b"late")
        elif url.path == "/drip":
            ticks = int(float(q["seconds"]) * 10)
            self.send_response(200)
            self.send_header("Content-Length", str(ticks))
            self.end_headers()
            for _ in range(ticks):
                if not self._write_quietly(b"."):
                    break
                time.sleep(0.1)
        elif url.path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif url.path == "/cookie":
            self._send(200, b"cookie set", {"Set-Cookie": "session=agent-a-cookie; Path=/"})
        elif url.path == "/gzip":
            self._send(200, gzip.compress(b"\0" * int(q["bytes"])), {"Content-Encoding": "gzip"})
        else:
            self._send(200, b"ok", {"Content-Type": "text/plain; charset=utf-8"})

    def _write_quietly(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            return False

    def _big(self, total: int, with_length: bool) -> None:
        self.send_response(200)
        if with_length:
            self.send_header("Content-Length", str(total))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        sent = 0
        chunk = b"y" * 65536
        while sent < total:
            if not self._write_quietly(chunk[: total - sent]):
                break
            sent += min(len(chunk), total - sent)
        with self.server.state.lock:
            self.server.state.big_finished.append(sent >= total)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, state: ServerState, family: int) -> None:
        self.address_family = family
        self.state = state
        super().__init__((host, 0), _Handler)


class LocalServer:
    """A server on ``host`` (a loopback address) and a free port; ``tls`` wraps it in TLS."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        import socket

        self.state = ServerState()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _Server(host, self.state, family)
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.state.sni.append(name)
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self.host = host
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/", host: str | None = None) -> str:
        name = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{self.scheme}://{name}:{self.port}{path}"

    @property
    def requests(self) -> list[Seen]:
        with self.state.lock:
            return list(self.state.requests)

    def close(self) -> None:
        self.state.release.set()
        self._server.shutdown()
        self._server.server_close()


def serve(host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Iterator[LocalServer]:
    server = LocalServer(host, tls)
    try:
        yield server
    finally:
        server.close()


@dataclass(frozen=True)
class ThrowawayCA:
    """A throwaway CA and a server certificate for ``names``, as files under ``folder``."""

    ca_file: Path
    context: ssl.SSLContext  # the server's


def make_ca(folder: Path, names: list[str]) -> ThrowawayCA:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent-hub test CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = folder / "server.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file)
    return ThrowawayCA(ca_file, context)
