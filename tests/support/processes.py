"""Run the project's components as real processes, the way an operator does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """A component started with `python -m <module> args`, its output in a log file."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_http(self, url: str, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"process exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            return httpx.get(url, timeout=2).status_code < 500

        wait_until(ready, timeout=timeout, what=f"{url} to answer")

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, then SIGKILL of the whole process group after `timeout` s; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log_file.close()
        return self.process.returncode
