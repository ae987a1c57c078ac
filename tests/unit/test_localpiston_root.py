"""localpiston's root folder must be reachable by the sandboxes' uids, whatever TMPDIR is: a private
TMPDIR (``mktemp -d`` makes it 0700) once made every sandboxed run fail with "Permission denied"."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from localpiston import probe


@pytest.fixture
def tempdir(tmp_path: Path) -> Iterator[Path]:
    before = tempfile.tempdir
    yield tmp_path
    tempfile.tempdir = before


def test_a_private_tmpdir_is_passed_over_for_one_the_sandboxes_can_reach(tempdir: Path) -> None:
    private = tempdir / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    tempfile.tempdir = str(private)
    assert not probe.traversable_by_others(str(private))
    chosen = probe.base_dir()
    assert chosen != str(private) and probe.traversable_by_others(chosen)
    root = probe.make_root()
    try:
        assert os.path.dirname(root) == chosen and probe.traversable_by_others(root)
    finally:
        os.rmdir(root)


def test_a_reachable_tmpdir_is_used_as_it_is(tempdir: Path) -> None:
    shared = tempfile.mkdtemp(prefix="agenthub-test-", dir="/tmp")  # /tmp: 1777 on Linux
    try:
        os.chmod(shared, 0o755)
        tempfile.tempdir = shared
        assert probe.base_dir() == shared
    finally:
        os.rmdir(shared)
