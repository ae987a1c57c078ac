"""Start-up: the server's root folder, the Python runtime package, and which isolation this machine allows."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile

from .isolation import Isolation, Limits, UidSlot, limit_preexec, sweep_dead
from .sandbox import BASE_PATH

log = logging.getLogger("localpiston")

RUN_SCRIPT = '#!/bin/bash\n\npython3 "$@"\n'



# -- start-up probing -----------------------------------------------------------------------



def traversable_by_others(path: str) -> bool:
    """Whether a process of another uid (a sandbox's) can reach entries below ``path``: every folder on the
    way needs the execute bit for others."""
    at = os.path.realpath(path)
    while True:
        try:
            if not os.stat(at).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(at)
        if parent == at:
            return True
        at = parent


def base_dir() -> str:
    """Where the server's root folder goes: the temporary folder, unless the sandboxes' uids could not reach
    through it (e.g. ``TMPDIR=$(mktemp -d)``, which is 0700): then the first of /tmp and /var/tmp they can."""
    tmp = tempfile.gettempdir()
    if traversable_by_others(tmp):
        return tmp
    for fallback in ("/tmp", "/var/tmp"):
        if traversable_by_others(fallback) and os.access(fallback, os.W_OK | os.X_OK):
            log.info("%s is not reachable by the sandboxes' uids: the server's folders go in %s", tmp, fallback)
            return fallback
    return tmp


def make_root() -> str:
    base = base_dir()
    sweep_dead(base, lambda stale: shutil.rmtree(stale, ignore_errors=True))
    root = tempfile.mkdtemp(prefix=f"localpiston-{os.getpid()}-", dir=base)
    os.chmod(root, 0o755)
    return root


def install_package(root: str, version: str, python: str) -> str:
    """Lay out the python package like Piston's: <pkgdir>/run and <pkgdir>/bin/python3."""
    pkgdir = os.path.join(root, "packages", "python", version)
    os.makedirs(os.path.join(pkgdir, "bin"), mode=0o755, exist_ok=True)
    for d in (os.path.join(root, "packages"), os.path.join(root, "packages", "python")):
        os.chmod(d, 0o755)
    link = os.path.join(pkgdir, "bin", "python3")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(python, link)
    with open(os.path.join(pkgdir, "run"), "w") as fh:
        fh.write(RUN_SCRIPT)
    os.chmod(os.path.join(pkgdir, "run"), 0o755)
    return pkgdir


def _candidates(explicit: str | None) -> list[str]:
    if explicit:
        return [explicit]
    found: list[str] = []
    base = getattr(sys, "_base_executable", None) or sys.executable
    for candidate in (os.path.realpath(base), shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        if candidate and os.path.realpath(candidate) not in found:
            found.append(os.path.realpath(candidate))
    return found


def _probe(python: str, root: str, uid: int | None, netns: bool) -> str | None:
    limits = Limits(wall_ms=0, cpu_ms=0, memory=-1, processes=64, open_files=2048, file_size=10_000_000)
    code = "import sys, socket; print('%d.%d.%d' % sys.version_info[:3])"
    try:
        done = subprocess.run(
            [python, "-I", "-c", code],
            capture_output=True,
            cwd=root,
            env={"PATH": BASE_PATH, "HOME": root},
            preexec_fn=limit_preexec(limits, uid, netns),
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    version = done.stdout.decode().strip()
    return version if done.returncode == 0 and version.count(".") == 2 else None


def probe_isolation(explicit_python: str | None, disable_networking: bool, root: str) -> Isolation:
    """Pick the strongest isolation this machine supports, and an interpreter that works under it."""
    is_root = os.geteuid() == 0
    notes: list[str] = []
    candidates = _candidates(explicit_python)
    uid_options = [True, False] if is_root else [False]
    net_options = [True, False] if disable_networking else [False]
    for use_uid in uid_options:
        for use_netns in net_options:
            slot = UidSlot() if use_uid else None
            try:
                for python in candidates:
                    version = _probe(python, root, slot.uid if slot else None, use_netns)
                    if version:
                        if not is_root:
                            notes.append("not running as root: jobs run as the server's own user, no RLIMIT_NPROC")
                        elif not use_uid:
                            notes.append("no interpreter usable by an unprivileged uid: jobs run as root")
                        if disable_networking and not use_netns:
                            notes.append("unshare(CLONE_NEWNET) unavailable: sandboxed code keeps network access")
                        if python != candidates[0]:
                            notes.append(f"{candidates[0]} is not usable by the sandbox user, using {python}")
                        return Isolation(use_uid, use_netns, python, version, notes)
            finally:
                if slot:
                    slot.release()
    raise RuntimeError(f"no usable python interpreter among {candidates}")
