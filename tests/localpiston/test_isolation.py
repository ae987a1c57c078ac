"""What sandboxed code can and cannot reach, and that nothing outlives its run."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.waiting import wait_until

from .conftest import SECRET_VALUE, Server, netns_available, processes_with_marker


def test_server_environment_does_not_leak_into_the_child(piston: Server) -> None:
    run = piston.run("import os; print(sorted(os.environ))")
    names = eval(str(run["stdout"]))  # a printed list of names
    assert "SECRET" not in names and "DATABASE_URL" not in names
    assert {"PATH", "HOME", "PISTON_LANGUAGE"} <= set(names)
    assert SECRET_VALUE not in str(run["stdout"])


def test_piston_language_is_set_in_the_child_env(piston: Server) -> None:
    assert piston.run("import os; print(os.environ['PISTON_LANGUAGE'])")["stdout"] == "python\n"


def test_child_runs_the_base_interpreter_not_the_project_venv(piston: Server) -> None:
    run = piston.run("import sys; print(sys.prefix == sys.base_prefix, 'aiohttp' in sys.modules); import aiohttp")
    assert str(run["stdout"]).startswith("True False")
    assert run["status"] == "RE" and "ModuleNotFoundError" in str(run["stderr"])


@pytest.mark.skipif(not netns_available(), reason="network namespaces unavailable on this machine")
@pytest.mark.parametrize("host", ["127.0.0.1", "1.1.1.1"])
def test_network_is_unreachable_including_loopback(piston: Server, host: str) -> None:
    port = int(piston.url.rsplit(":", 1)[1]) if host == "127.0.0.1" else 53
    code = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout=1); print('connected')\n"
        "except OSError as e:\n"
        "    print('blocked', e.errno)\n"
    )
    assert str(piston.run(code)["stdout"]).startswith("blocked")


@pytest.mark.skipif(os.geteuid() != 0, reason="per-job uid needs root")
def test_child_runs_as_an_unprivileged_uid(piston: Server) -> None:
    uid = int(str(piston.run("import os; print(os.getuid())")["stdout"]))
    assert uid >= 60000


@pytest.mark.skipif(os.geteuid() != 0, reason="RLIMIT_NPROC only bites with a per-job uid")
def test_process_count_is_limited(piston: Server) -> None:
    code = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(5); os._exit(0)\n"
        "    n += 1\n"
        "print(n, flush=True)\n"
    )
    run = piston.run(code, run_timeout=2000)
    assert 0 < int(str(run["stdout"])) < 64


def test_fork_bomb_is_contained_and_killed(piston: Server) -> None:
    marker = f"bomb-{uuid.uuid4().hex}"
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    started = time.monotonic()
    run = piston.run(code, args=[marker], run_timeout=1000)
    assert run["status"] == "TO"
    assert time.monotonic() - started < 10  # the 1 s limit held; 10x for a machine the bomb itself loads
    # The kill is asynchronous: every process of the box must be gone soon after, not necessarily yet.
    wait_until(lambda: processes_with_marker(marker) == [], what="the box's processes to be gone")


def test_background_process_does_not_outlive_the_run(piston: Server) -> None:
    marker = f"bg-{uuid.uuid4().hex}"
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(100)', sys.argv[1]], start_new_session=True,\n"
        "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "subprocess.Popen(['sh', '-c', 'sleep 100 &', sys.argv[1]])\n"
        "print('spawned')\n"
    )
    run = piston.run(code, args=[marker])
    assert run["stdout"] == "spawned\n"
    # The kill is asynchronous: every process of the box must be gone soon after, not necessarily yet.
    wait_until(lambda: processes_with_marker(marker) == [], what="the box's processes to be gone")


def test_each_job_gets_a_fresh_box(piston: Server) -> None:
    code = (
        "import os\n"
        "print(sorted(os.listdir('.')), sorted(os.listdir(os.environ['HOME'])))\n"
        "open(os.path.join(os.environ['HOME'], 'f'), 'w')"
    )
    first = piston.run(code)
    second = piston.run(code)
    assert first["stdout"] == second["stdout"] == "['file0.code'] []\n"


def test_file_size_limit_applies(piston: Server) -> None:
    code = "import os\nwith open(os.path.join(os.environ['HOME'], 'big'), 'wb') as f:\n    f.write(b'x' * 20_000_000)\n"
    run = piston.run(code)
    assert run["status"] == "RE"
    assert "File size limit exceeded" in str(run["stderr"]) or "File too large" in str(run["stderr"])


def test_server_logs_one_line_per_job(piston: Server) -> None:
    marker_run = piston.run("print('log me')")
    assert marker_run["status"] is None
    lines = [line for line in piston.log().splitlines() if " job " in line]
    assert lines and re.search(r"job [0-9a-f]{8} python-\S+ status=\w+ wall=\d+ms", lines[-1])


def test_shared_dir_fixture_is_writable_by_the_sandbox(piston: Server, shared_dir: Path) -> None:
    target = shared_dir / "out.txt"
    piston.run("import sys; open(sys.argv[1], 'w').write('ok')", args=[str(target)])
    assert target.read_text() == "ok"
