"""Run the project's components as real processes, the way an operator does."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from harness.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]


#: Where ports for test services are picked: below the kernel's range of ephemeral ports (the source ports of
#: outgoing connections), so no connection a test opens can take a port between choosing it and the service
#: binding it (asking the kernel for port 0 hands out exactly those ports).
def _service_ports() -> range:
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32_768  # Linux's default
    return range(10_000, max(ephemeral_low, 11_000))


SERVICE_PORTS = _service_ports()
#: RabbitMQ's inter-node port: free for a moment while the broker restarts, and it must get it back.
RABBITMQ_DIST_PORT = 25_672


def free_port() -> int:
    """A port no one listens on now, outside the ephemeral range (see `SERVICE_PORTS`)."""
    for _ in range(1000):
        port = random.choice(SERVICE_PORTS)
        if port == RABBITMQ_DIST_PORT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {SERVICE_PORTS}")


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
