"""Run outcomes: ok, RE, SG, TO, OL, EL, with Piston's code/signal/message for each."""

from __future__ import annotations

from .conftest import Server

# For programs that must not write on until the server has read what they wrote: wait until the pipe
# behind a file descriptor is empty (FIONREAD works on the write end too).
DRAIN = (
    "import array, fcntl, termios, time\n"
    "def drained(fd):\n"
    "    n = array.array('i', [1])\n"
    "    while n[0]:\n"
    "        time.sleep(0.01)\n"
    "        fcntl.ioctl(fd, termios.FIONREAD, n)\n"
)


def test_non_zero_exit_is_re_with_exit_message(piston: Server) -> None:
    run = piston.run("import sys; print('out'); sys.exit(3)")
    assert (run["status"], run["code"], run["signal"], run["message"]) == ("RE", 3, None, "Exited with error status 3")
    assert run["stdout"] == "out\n"


def test_uncaught_exception_is_re_1_with_traceback(piston: Server) -> None:
    run = piston.run("raise ValueError('boom')")
    assert (run["status"], run["code"]) == ("RE", 1)
    assert "ValueError: boom" in str(run["stderr"])


def test_python_killed_by_signal_is_re_128_plus_n_with_bash_line(piston: Server) -> None:
    run = piston.run("import os, signal; print('lost'); os.kill(os.getpid(), signal.SIGSEGV)")
    assert (run["status"], run["code"], run["signal"]) == ("RE", 139, None)
    assert run["message"] == "Exited with error status 139"
    assert run["stdout"] == ""  # block-buffered output is lost
    assert "line 3:" in str(run["stderr"]) and "Segmentation fault" in str(run["stderr"]) and 'python3 "$@"' in str(run["stderr"])


def test_signal_death_of_the_wrapper_is_sg(piston: Server) -> None:
    run = piston.run("import os, signal; os.kill(os.getppid(), signal.SIGKILL)")
    assert (run["status"], run["code"], run["signal"], run["message"]) == ("SG", None, "SIGKILL", "Caught fatal signal 9")


def test_wall_timeout_is_to_with_sigkill_and_null_code(piston: Server) -> None:
    run = piston.run("import time; print('unflushed'); time.sleep(5)", run_timeout=300)
    assert (run["status"], run["code"], run["signal"]) == ("TO", None, "SIGKILL")
    assert run["message"] == "Time limit exceeded (wall clock)"
    assert run["stdout"] == ""
    # Killed at the requested 300 ms, not at the 3 s default nor after the 5 s sleep; the upper bound is
    # generous (8x) because a loaded machine delays the kill, and still below the default limit.
    assert 300 <= float(run["wall_time"]) < 2500  # type: ignore[arg-type]


def test_cpu_time_limit_is_to(piston: Server) -> None:
    run = piston.run("while True: pass", run_cpu_time=300, run_timeout=3000)
    assert (run["status"], run["code"], run["signal"], run["message"]) == ("TO", None, "SIGKILL", "Time limit exceeded")
    assert float(run["cpu_time"]) > 300  # type: ignore[arg-type]
    # No bound on wall time: the message above already tells the CPU limit from the wall-clock one.


def test_zero_timeout_means_no_limit(piston: Server) -> None:
    run = piston.run("import time; time.sleep(0.2); print('done')", run_timeout=0, run_cpu_time=0)
    assert (run["status"], run["stdout"]) == (None, "done\n")


def test_stdout_up_to_1024_characters_is_kept(piston: Server) -> None:
    run = piston.run("print('x' * 1023)")
    assert run["status"] is None
    assert run["stdout"] == "x" * 1023 + "\n"


def test_stdout_over_1024_is_ol_and_the_chunk_is_dropped_whole(piston: Server) -> None:
    # Waiting until the server has read the first write keeps the two in separate chunks (chunking is
    # arbitrary, as in Piston).
    run = piston.run(DRAIN + "import sys\nprint('a' * 500, flush=True)\ndrained(1)\nsys.stdout.write('b' * 600)")
    assert (run["status"], run["signal"], run["message"]) == ("OL", "SIGKILL", "stdout length exceeded")
    assert run["stdout"] == "a" * 500 + "\n"


def test_stderr_over_1024_is_el(piston: Server) -> None:
    run = piston.run("import sys, time; sys.stderr.write('e' * 2000); sys.stderr.flush(); time.sleep(30)")
    assert (run["status"], run["signal"], run["message"]) == ("EL", "SIGKILL", "stderr length exceeded")
    assert run["stderr"] == ""
    # Killed at the limit, not by the 3 s run limit (generous for a loaded machine, still below it).
    assert float(run["wall_time"]) < 2500  # type: ignore[arg-type]


def test_output_interleaves_both_streams_in_arrival_order(piston: Server) -> None:
    # Each write waits until the server has read the one before, so the arrival order is the write order.
    code = DRAIN + (
        "import sys\nprint('1', flush=True)\ndrained(1)\n"
        "sys.stderr.write('2\\n'); sys.stderr.flush()\ndrained(2)\nprint('3', flush=True)"
    )
    assert piston.run(code)["output"] == "1\n2\n3\n"


def test_memory_limit_kills_a_program_that_exceeds_it(piston: Server) -> None:
    run = piston.run("x = bytearray(300 * 1024 * 1024); print('survived')", run_memory_limit=100_000_000)
    assert run["status"] == "RE"
    assert run["stdout"] == ""


def test_memory_is_reported_in_bytes(piston: Server) -> None:
    small = piston.run("print(1)")["memory"]
    # Held for 1.5 s: 15 of the server's 0.1 s /proc samples, enough for a few to land on a loaded machine.
    big = piston.run("x = bytearray(150 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096]); import time; time.sleep(1.5)")[
        "memory"
    ]
    assert isinstance(small, int) and isinstance(big, int)
    assert big > 100_000_000 > small
