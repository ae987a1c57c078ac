"""Loading agent files from disk and over HTTP (a real http.server on 127.0.0.1)."""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dispatcher.agentfiles import AgentFileRow, AgentFilesError, box_name, load_sources
from dispatcher.bundle import AgentSource

BINARY = bytes(range(256))
# Set when the module's tests are done: until then (or 30-60 s) /slow does not answer and /trickle goes on,
# so only the client's timeout can end those downloads quickly, however slow the machine.
RELEASE = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, *, length: bool = True) -> None:
        self.send_response(status)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up (timeout tests)
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/main.py":
            self._send(200, "print('héllo')\n".encode())
        elif path == "/blob.bin":
            self._send(200, BINARY)
        elif path == "/big":
            self._send(200, b"x" * 5000)
        elif path == "/big-unsized":
            self.close_connection = True
            self._send(200, b"x" * 200_000, length=False)
        elif path == "/slow":
            RELEASE.wait(60)
            self._send(200, b"late")
        elif path == "/trickle":
            self.send_response(200)
            self.end_headers()
            for _ in range(300):  # a byte every 0.1 s for 30 s: no single read ever waits long
                if RELEASE.wait(0.1):
                    return
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
        elif path == "/secret":
            self._send(500, b"nope")
        else:
            self._send(404, b"missing")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    RELEASE.clear()  # (the module's fixture may be set up again in the same process, e.g. under xdist)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    RELEASE.set()
    httpd.shutdown()
    httpd.server_close()


def load(rows: list[AgentFileRow], root: Path | None = None, **caps: Any) -> list[AgentSource]:
    limits: dict[str, Any] = {"max_files": 10, "max_total_bytes": 10_000, "http_timeout_s": 5.0}
    limits.update(caps)
    return load_sources(rows, files_root=root, **limits)


def row(filename: str, filepath: str) -> AgentFileRow:
    return AgentFileRow(filename=filename, filepath=filepath, filesize=0)


def test_absolute_and_root_relative_paths_load_text_as_utf8_and_bytes_as_base64(tmp_path: Path) -> None:
    (tmp_path / "agents" / "a1").mkdir(parents=True)
    (tmp_path / "agents" / "a1" / "main.py").write_text("print('é')\n", encoding="utf-8")
    (tmp_path / "agents" / "a1" / "model.bin").write_bytes(BINARY)
    sources = load(
        [row("main.py", "agents/a1/main.py"), row("model.bin", str(tmp_path / "agents" / "a1" / "model.bin"))], root=tmp_path
    )
    assert sources == [
        AgentSource("main.py", "print('é')\n"),
        AgentSource("model.bin", base64.b64encode(BINARY).decode(), "base64"),
    ]


def test_filename_folders_are_kept_and_normalised(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    sources = load([row("/pkg\\sub/./util.py", str(tmp_path / "f"))])
    assert sources[0].name == "pkg/sub/util.py"


@pytest.mark.parametrize("name", ["../evil.py", "a/../../b.py", "", "/", "a\x00b"])
def test_unusable_filenames_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(AgentFilesError, match="unusable file name"):
        load([row(name, str(tmp_path / "f"))])


def test_box_name_of_a_plain_name_is_unchanged() -> None:
    assert box_name("main.py") == "main.py"


def test_relative_path_escaping_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.py").write_text("x")
    with pytest.raises(AgentFilesError, match=r"'main.py'.*escapes the files root"):
        load([row("main.py", "../outside.py")], root=root)


def test_relative_path_without_a_root_is_refused() -> None:
    with pytest.raises(AgentFilesError, match="no files root"):
        load([row("main.py", "agents/main.py")])


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(AgentFilesError, match=re.escape("agent file 'main.py': not found at 'gone.py'")):
        load([row("main.py", "gone.py")], root=tmp_path)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(AgentFilesError, match="not a regular file"):
        load([row("main.py", "d")], root=tmp_path)


def test_total_size_cap_is_enforced_across_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a" * 600)
    (tmp_path / "b").write_bytes(b"b" * 500)
    assert len(load([row("a.py", "a"), row("b.py", "b")], root=tmp_path, max_total_bytes=1100)) == 2
    with pytest.raises(AgentFilesError, match=r"agent file 'b.py': over the size cap .*1099 bytes"):
        load([row("a.py", "a"), row("b.py", "b")], root=tmp_path, max_total_bytes=1099)


def test_too_many_files_is_refused_before_reading() -> None:
    rows = [row(f"f{i}.py", f"/nonexistent/{i}") for i in range(4)]
    with pytest.raises(AgentFilesError, match="4 files, over the limit of 3"):
        load(rows, max_files=3)


def test_no_files_is_an_error() -> None:
    with pytest.raises(AgentFilesError, match="no files"):
        load([])


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(AgentFilesError, match="two files"):
        load([row("main.py", str(tmp_path / "f")), row("./main.py", str(tmp_path / "f"))])


def test_http_urls_are_fetched(server: str) -> None:
    sources = load([row("main.py", f"{server}/main.py"), row("blob.bin", f"{server}/blob.bin?sig=1")])
    assert sources == [
        AgentSource("main.py", "print('héllo')\n"),
        AgentSource("blob.bin", base64.b64encode(BINARY).decode(), "base64"),
    ]


def test_http_error_status_names_the_file_and_hides_the_query(server: str) -> None:
    with pytest.raises(AgentFilesError, match=r"agent file 'main.py': HTTP 404") as info:
        load([row("main.py", f"{server}/nothere.py")])
    assert "/nothere.py" in str(info.value)
    with pytest.raises(AgentFilesError, match="HTTP 500") as info:
        load([row("main.py", f"{server}/secret?token=SECRET123")])
    assert "SECRET123" not in str(info.value)


def test_http_download_over_the_cap_fails_by_declared_length(server: str) -> None:
    with pytest.raises(AgentFilesError, match="over the size cap"):
        load([row("big.txt", f"{server}/big")], max_total_bytes=4999)


def test_http_download_over_the_cap_fails_while_streaming_without_a_length(server: str) -> None:
    with pytest.raises(AgentFilesError, match="over the size cap"):
        load([row("big.txt", f"{server}/big-unsized")], max_total_bytes=100_000)
    assert load([row("big.txt", f"{server}/big-unsized")], max_total_bytes=200_000)[0].content == "x" * 200_000


def test_http_timeout_names_the_file(server: str) -> None:
    with pytest.raises(AgentFilesError, match=r"agent file 'main.py': download from .*/slow timed out after 0.3s"):
        load([row("main.py", f"{server}/slow")], http_timeout_s=0.3)


def test_http_trickle_cannot_outlast_the_timeout(server: str) -> None:
    start = time.monotonic()
    with pytest.raises(AgentFilesError, match=re.escape("timed out after 0.5s")):
        load([row("main.py", f"{server}/trickle")], http_timeout_s=0.5)
    # The whole download's 0.5 s limit ended it, not a per-read one (which this trickle never trips): it
    # would go on until the module ends. 10 s is a generous bound for a loaded machine.
    assert time.monotonic() - start < 10.0


def test_connection_refused_names_the_file() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AgentFilesError, match=r"agent file 'main.py': download from http://127.0.0.1:\d+/x.py failed"):
        load([row("main.py", f"http://127.0.0.1:{port}/x.py")])
