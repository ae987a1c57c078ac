"""A local stand-in for an LLM provider's REST API (``python -m fakegemini``, ``python -m fakeopenai``) run as a
subprocess on a free loopback port, for tests. Both share the ``/_control`` endpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import requests

from tests.integration.localpiston_proc import free_port

REPO = Path(__file__).resolve().parents[1]


class StandIn:
    module = ""   # the stand-in's package, run with ``python -m``
    key_env = ""  # the environment variable it reads its accepted API key from

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> Self:
        # The key goes in through the environment, like the real service's secrets.
        env = {**os.environ, self.key_env: self.api_key, "PYTHONPATH": str(REPO)}
        self._proc = subprocess.Popen([sys.executable, "-m", self.module, "--port", str(self.port)], cwd=REPO, env=env,
                                      stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited:\n{self.output()}")
            try:
                if requests.get(self.url + "/_control/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.module} did not start:\n{self.output()}")

    def requests(self, containing: str | None = None) -> list[dict[str, Any]]:
        """Recorded model requests, optionally only those whose body mentions ``containing``."""
        rows = requests.get(self.url + "/_control/requests", timeout=5).json()["requests"]
        if containing is None:
            return list(rows)
        return [r for r in rows if containing in json.dumps(r.get("body"), ensure_ascii=False)]

    def set_key(self, key: str) -> None:
        requests.post(self.url + "/_control/key", json={"key": key}, timeout=5).raise_for_status()

    def script(self, *responses: dict[str, Any]) -> None:
        requests.post(self.url + "/_control/script", json={"responses": list(responses)}, timeout=5).raise_for_status()

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
