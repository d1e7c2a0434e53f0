"""The whole local stack (producer, scaler with the local backend, workers) as real processes.

Browser, fault and load tests and the benchmarks drive the project the way an operator runs it:
`python -m producer` and `python -m scaler --backend local` on free loopback
ports, against the test session's private vhost and a config of the test's own.
"""

from __future__ import annotations

import copy
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil

from harness.broker import Broker
from harness.configs import write_config
from harness.processes import Service, free_port
from harness.waiting import wait_until

DEFAULT_TOKEN = "test-stack-token"


class Stack:
    def __init__(
        self,
        broker: Broker,
        directory: Path,
        job_types: dict[str, dict[str, Any]],
        tick_seconds: float = 0.5,
        env: dict[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self.directory = directory
        self.config_path = write_config(directory, job_types)
        self.state_dir = directory / "scaler-state"
        self.producer_port = free_port()
        self.scaler_port = free_port()
        self.env = {
            **broker.env(),
            "JOBS_CONFIG": str(self.config_path),
            "PRODUCER_PORT": str(self.producer_port),
            "SCALER_PORT": str(self.scaler_port),
            "SCALER_TICK_SECONDS": str(tick_seconds),
            "SCALER_STATE_DIR": str(self.state_dir),
            "PRODUCER_URL": self.producer_url,
            "UPLOADS_DATABASE_URL": f"sqlite:///{directory / 'uploads.db'}",
            # Per-row "processed" lines are DEBUG; processed() counts them.
            "WORKER_LOG_LEVEL": "debug",
            # Every stack has a token, and every request the tests make sends it (auth_headers):
            # a deployment without one is the exception a test asks for explicitly.
            "PRODUCER_TOKEN": DEFAULT_TOKEN,
            **(env or {}),
        }
        self.producer_log = directory / "producer.log"
        self.producer: Service | None = None
        self.scaler: Service | None = None

    @property
    def producer_url(self) -> str:
        return f"http://127.0.0.1:{self.producer_port}"

    @property
    def scaler_url(self) -> str:
        return f"http://127.0.0.1:{self.scaler_port}"

    def config(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text())

    def queue_of(self, job_type: str) -> str:
        return self.config()[job_type]["queue"]

    def replica(self) -> Stack:
        """A second producer replica: its own port and log, the same config, broker vhost and upload store.

        Start it with `start_producer()`; stop it with `producer.stop()` (its `stop()` would stop this stack's
        scaler and workers too)."""
        other = copy.copy(self)
        other.producer_port = free_port()
        other.producer_log = self.directory / f"producer-{other.producer_port}.log"
        other.env = {**self.env, "PRODUCER_PORT": str(other.producer_port)}
        other.producer, other.scaler = None, None
        return other

    def start_producer(self) -> Service:
        self.producer = Service("producer", [], self.env, self.producer_log)
        self.producer.wait_http(f"{self.producer_url}/healthz")
        return self.producer

    def start_scaler(self) -> Service:
        self.scaler = Service("scaler", ["--backend", "local"], self.env, self.directory / "scaler.log")
        self.scaler.wait_http(f"{self.scaler_url}/healthz")
        return self.scaler

    def start(self) -> Stack:
        self.start_producer()
        self.start_scaler()
        return self

    def auth_headers(self) -> dict[str, str]:
        """The bearer header for this stack's token (empty when a test runs it without one)."""
        token = self.env.get("PRODUCER_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def login_link(self, base: str | None = None) -> str:
        """The one-click login link `./manage.sh up` prints: a browser opening it gets a session and lands on `/`."""
        return f"{base or self.scaler_url}/?token={quote(self.env['PRODUCER_TOKEN'])}"

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET with this stack's token (the tests' one way to read the producer's and the scaler's APIs)."""
        return httpx.get(url, headers={**self.auth_headers(), **kwargs.pop("headers", {})}, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST with this stack's token."""
        return httpx.post(url, headers={**self.auth_headers(), **kwargs.pop("headers", {})}, **kwargs)

    def upload(
        self, csv: bytes, job_type: str, timeout: float = 120, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return httpx.post(
            f"{self.producer_url}/submit/{job_type}",
            content=csv,
            headers={"Content-Type": "text/csv", **self.auth_headers(), **(headers or {})},
            timeout=timeout,
        )

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.scaler_url}/api/status", headers=self.auth_headers(), timeout=5)
        response.raise_for_status()
        return response.json()

    def type_status(self, job_type: str) -> dict[str, Any]:
        return self.status()["job_types"][job_type]

    def wait_workers(self, job_type: str, predicate, timeout: float = 60, what: str = "") -> dict[str, Any]:
        """Wait until `predicate(type_status)` holds; returns that status."""

        def check() -> dict[str, Any] | None:
            current = self.type_status(job_type)
            return current if predicate(current) else None

        return wait_until(check, timeout=timeout, interval=0.2, what=what or f"{job_type} workers condition")

    def processed(self) -> Counter[str]:
        """How often each message id was processed, from every worker's JSON log."""
        seen: Counter[str] = Counter()
        for log in (self.state_dir / "logs").glob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("{") and '"event": "processed"' in line:
                    seen[json.loads(line)["message_id"]] += 1
        return seen

    def live_worker_pids(self) -> dict[str, int]:
        """Worker id -> pid of every worker process the local backend recorded that is still alive."""
        alive = {}
        for record in (self.state_dir / "workers").glob("*.json"):
            try:
                data = json.loads(record.read_text())
            except FileNotFoundError:
                continue  # the worker exited and the scaler removed its record after the listing
            try:
                if psutil.Process(data["pid"]).status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            alive[data["worker_id"]] = data["pid"]
        return alive

    def stop(self) -> None:
        """Stop the scaler (its workers keep running, as in production), then every worker, then the producer."""
        for service in (self.scaler, self.producer):
            if service is not None:
                service.stop()
        kill_workers_in(self.state_dir)


def kill_workers_in(state_dir: Path) -> None:
    """SIGKILL every worker process the local backend recorded under `state_dir` (test clean-up)."""
    for record in state_dir.glob("**/*.json"):
        try:
            pid = int(json.loads(record.read_text()).get("pid", 0))
        except (ValueError, OSError, AttributeError):
            continue
        if pid > 0:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
