"""The one runtime this server offers (python) and the interpreter that backs it."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config
from .semver import satisfies

SIGNALS: dict[int, str] = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS",
    8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE",
    14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP",
    20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ",
    26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR", 31: "SIGSYS",
    34: "SIGRTMIN", **{34 + i: f"SIGRTMIN+{i}" for i in range(1, 16)},
    **{64 - i: f"SIGRTMAX-{i}" for i in range(1, 15)}, 64: "SIGRTMAX",
}  # fmt: skip
"""Piston's globals.SIGNALS: the names it reports, and the only names a `signal` frame may carry."""

ALIASES = ["py", "py3", "python3"]


@dataclass(frozen=True)
class Runtime:
    language: str
    version: str
    aliases: list[str]
    pkgdir: str  # holds `run` and bin/python3
    timeouts: dict[str, int]
    cpu_times: dict[str, int]
    memory_limits: dict[str, int]
    max_process_count: int
    max_open_files: int
    max_file_size: int
    output_max_size: int

    @classmethod
    def python(cls, version: str, pkgdir: str, config: Config) -> Runtime:
        def lim(name: str) -> int:
            return config.limit("python", name)

        return cls(
            language="python",
            version=version,
            aliases=list(ALIASES),
            pkgdir=pkgdir,
            timeouts={"compile": lim("compile_timeout"), "run": lim("run_timeout")},
            cpu_times={"compile": lim("compile_cpu_time"), "run": lim("run_cpu_time")},
            memory_limits={"compile": lim("compile_memory_limit"), "run": lim("run_memory_limit")},
            max_process_count=lim("max_process_count"),
            max_open_files=lim("max_open_files"),
            max_file_size=lim("max_file_size"),
            output_max_size=lim("output_max_size"),
        )

    def describe(self) -> dict[str, object]:
        return {"language": self.language, "version": self.version, "aliases": list(self.aliases)}


def find_runtime(runtimes: list[Runtime], language: str, version: str) -> Runtime | None:
    """get_latest_runtime_matching_language_version: name or alias, semver range on the version."""
    matching = [rt for rt in runtimes if (rt.language == language or language in rt.aliases) and satisfies(rt.version, version)]
    return matching[0] if matching else None
