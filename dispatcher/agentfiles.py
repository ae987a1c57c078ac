"""Loading an agent's files (AgentFile rows) from disk or HTTP into AgentSource values.

``AgentFile.filepath`` is whatever the hub's upload code stored: an absolute path, a path
relative to the configured files root, or an http(s) URL. Every failure is an
``AgentFilesError`` whose message names the file and the cause; it becomes the Job's errorMessage.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from dispatcher.bundle import AgentSource

_CHUNK = 64 * 1024


class AgentFilesError(Exception):
    """An agent file could not be loaded; the message is fit for the Job's errorMessage."""


@dataclass(frozen=True)
class AgentFileRow:
    filename: str
    filepath: str
    filesize: int


def box_name(filename: str) -> str:
    """``filename`` as a relative path inside the box: separators normalised, no leading '/', no '..'."""
    parts = [p for p in filename.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or any("\x00" in p for p in parts):
        raise AgentFilesError(f"agent file {filename!r}: unusable file name")
    return "/".join(parts)


def _public_url(url: str) -> str:
    """The URL without query or credentials: signed URLs carry secrets that must not reach error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _read_local(row: AgentFileRow, files_root: Path | None, remaining: int) -> bytes:
    if os.path.isabs(row.filepath):
        path = Path(row.filepath)
    else:
        if files_root is None:
            raise AgentFilesError(f"agent file {row.filename!r}: relative path {row.filepath!r} but no files root is configured")
        root = files_root.resolve()
        path = (root / row.filepath).resolve()
        if path != root and root not in path.parents:
            raise AgentFilesError(f"agent file {row.filename!r}: path {row.filepath!r} escapes the files root")
    if not path.exists():
        raise AgentFilesError(f"agent file {row.filename!r}: not found at {row.filepath!r}")
    if not path.is_file():  # checked before opening: a FIFO would block the open
        raise AgentFilesError(f"agent file {row.filename!r}: {row.filepath!r} is not a regular file")
    try:
        with path.open("rb") as f:
            data = f.read(remaining + 1)
    except FileNotFoundError:
        raise AgentFilesError(f"agent file {row.filename!r}: not found at {row.filepath!r}") from None
    except OSError as exc:
        raise AgentFilesError(f"agent file {row.filename!r}: cannot read {row.filepath!r} ({exc.strerror or exc})") from None
    return data


def _over_cap(row: AgentFileRow, max_total_bytes: int) -> str:
    return f"agent file {row.filename!r}: over the size cap (the agent's files may total {max_total_bytes} bytes)"


def _read_url(row: AgentFileRow, session: requests.Session, remaining: int, max_total_bytes: int, timeout_s: float) -> bytes:
    shown = _public_url(row.filepath)
    deadline = time.monotonic() + timeout_s
    try:
        with session.get(row.filepath, stream=True, timeout=timeout_s) as resp:
            if not 200 <= resp.status_code < 300:
                raise AgentFilesError(f"agent file {row.filename!r}: HTTP {resp.status_code} from {shown}")
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > remaining:
                raise AgentFilesError(_over_cap(row, max_total_bytes))
            chunks: list[bytes] = []
            size = 0
            while size <= remaining:
                # read1 returns what has arrived, so a slow trickle is checked against the deadline as it
                # comes (requests' timeout is per socket read and iter_content waits for whole chunks).
                chunk = resp.raw.read1(_CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if time.monotonic() > deadline:
                    raise AgentFilesError(f"agent file {row.filename!r}: download from {shown} timed out after {timeout_s:g}s")
            return b"".join(chunks)
    except (requests.Timeout, urllib3.exceptions.TimeoutError):
        raise AgentFilesError(f"agent file {row.filename!r}: download from {shown} timed out after {timeout_s:g}s") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise AgentFilesError(f"agent file {row.filename!r}: download from {shown} failed ({type(exc).__name__})") from None


def load_sources(
    rows: list[AgentFileRow],
    *,
    files_root: Path | None,
    max_files: int,
    max_total_bytes: int,
    http_timeout_s: float,
    http_session: requests.Session | None = None,
) -> list[AgentSource]:
    """Read every file of the agent, enforcing the file-count and total-size caps while reading."""
    if not rows:
        raise AgentFilesError("the agent has no files")
    if len(rows) > max_files:
        raise AgentFilesError(f"the agent has {len(rows)} files, over the limit of {max_files}")
    session = http_session  # made on the first URL: most agents' files are on disk (docs/performance.md, session 4)
    sources: list[AgentSource] = []
    names: set[str] = set()
    used = 0
    try:
        for row in rows:
            name = box_name(row.filename)
            if name in names:
                raise AgentFilesError(f"agent file {row.filename!r}: two files are named {name!r}")
            names.add(name)
            remaining = max_total_bytes - used
            if urlsplit(row.filepath).scheme.lower() in ("http", "https"):
                if session is None:
                    session = requests.Session()
                data = _read_url(row, session, remaining, max_total_bytes, http_timeout_s)
            else:
                data = _read_local(row, files_root, remaining)
            if len(data) > remaining:
                raise AgentFilesError(_over_cap(row, max_total_bytes))
            used += len(data)
            try:
                sources.append(AgentSource(name=name, content=data.decode("utf-8")))
            except UnicodeDecodeError:
                sources.append(AgentSource(name=name, content=base64.b64encode(data).decode("ascii"), encoding="base64"))
    finally:
        if http_session is None and session is not None:
            session.close()
    return sources
