"""The scaler cannot be wedged by what it receives, and says so when one of its threads is dead.

Real RabbitMQ, real processes and real HTTP: malformed heartbeats and wake-ups
are published to the real exchanges of a running scaler; /healthz is asked
over HTTP of a scaler whose threads are stopped one at a time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from common.auth import AuthSettings
from common.config_watch import ConfigWatcher
from common.control_messages import CONTROL_EXCHANGE, HEARTBEAT_EXCHANGE, WAKE_ROUTING_KEY
from harness.broker import Broker
from harness.configs import write_config
from harness.processes import free_port
from harness.stack import DEFAULT_TOKEN, Stack
from harness.waiting import wait_until
from scaler.backends.local import LocalBackend
from scaler.backends.local_settings import LocalSettings
from scaler.loop import Scaler
from scaler.queue_stats import QueueStatsSource
from scaler.settings import ScalerSettings
from scaler.web import create_app
from scaler.worker_channel import WorkerChannel

SLEEP = {"handler": "sleep", "threshold": 5, "max_workers": 3, "idle_seconds": 2, "env": {"SLEEP_MS": "20"}}
MALFORMED_HEARTBEATS = [
    json.dumps({"worker_id": ["a", "list"], "job_type": "sleep", "state": "idle"}).encode(),
    json.dumps({"worker_id": {"a": 1}, "job_type": "sleep", "state": "busy"}).encode(),
    json.dumps({"worker_id": "w-1", "job_type": "sleep", "state": ["idle"]}).encode(),
    json.dumps({"worker_id": "w-2", "job_type": "sleep", "state": "idle", "processed": "many"}).encode(),
    json.dumps({"worker_id": "w-3", "job_type": 7, "state": "idle"}).encode(),
    json.dumps({"worker_id": "w-4"}).encode(),
    json.dumps(["worker_id", "job_type"]).encode(),
    b"not json at all",
    b"\xff\xfe\x00",
]
MALFORMED_WAKE_UPS = [b"{}", json.dumps({"job_type": ["sleep"]}).encode(), b"wake up!"]


def rows(count: int) -> bytes:
    return b"n\n" + b"".join(b"%d\n" % i for i in range(count))


def test_malformed_heartbeats_and_wake_ups_leave_scale_up_and_stops_working(broker: Broker, tmp_path: Path) -> None:
    stack = Stack(broker, tmp_path, {"sleep": SLEEP}, tick_seconds=0.5, env={"WORKER_HEARTBEAT_SECONDS": "0.5"})
    try:
        stack.start()
        wait_until(
            lambda: stack.get(f"{stack.scaler_url}/healthz").json()["worker_channel"]["connected"],
            timeout=10,
            what="the worker channel to listen",
        )
        with broker.channel() as channel:
            for body in MALFORMED_HEARTBEATS:
                channel.basic_publish(HEARTBEAT_EXCHANGE, "", body)
            for body in MALFORMED_WAKE_UPS:
                channel.basic_publish(CONTROL_EXCHANGE, WAKE_ROUTING_KEY, body)
        dropped = len(MALFORMED_HEARTBEATS) + len(MALFORMED_WAKE_UPS)
        health = wait_until(
            lambda: (
                (h := stack.get(f"{stack.scaler_url}/healthz")).json()["worker_channel"]["malformed_messages"]
                >= dropped
                and h
            ),
            timeout=10,
            what="every malformed message dropped",
        )
        assert health.status_code == 200 and health.json()["worker_channel"]["alive"]
        assert "dropped a malformed control message" in stack.scaler.log()

        stack.upload(rows(100), "sleep").raise_for_status()
        stack.wait_workers("sleep", lambda s: s["running"] >= 1, timeout=20, what="scale-up after the bad messages")
        wait_until(lambda: sum(stack.processed().values()) >= 100, timeout=60, what="every row processed")
        stack.wait_workers("sleep", lambda s: s["workers"] == 0, timeout=30, what="stop requests still delivered")
        exits = {w["exit_code"] for w in stack.status()["workers"]}
        assert exits <= {0}, f"workers stop gracefully on the scaler's request, not by a kill: {exits}"
    finally:
        stack.stop()


class InProcessScaler:
    """A scaler's threads (control loop, worker channel, web server) in this process, so a test can stop one."""

    def __init__(self, broker: Broker, directory: Path, tick_seconds: float = 0.2) -> None:
        watcher = ConfigWatcher(write_config(directory, {"sleep": SLEEP}))
        backend = LocalBackend(directory / "state", LocalSettings(templates=False))
        self.channel = WorkerChannel((broker.amqp_url,))
        self.scaler = Scaler(
            watcher,
            backend,
            QueueStatsSource((broker.api_url,), broker.amqp_url),
            self.channel,
            tick_seconds=tick_seconds,
            settings=ScalerSettings(health_stale_seconds=1),
        )
        self.channel.on_wake = self.scaler.wake
        self.channel.start()
        self.loop = threading.Thread(target=self.scaler.run, daemon=True)
        self.loop.start()
        self.url = f"http://127.0.0.1:{free_port()}"
        app = create_app(self.scaler, auth=AuthSettings(token=DEFAULT_TOKEN))
        config = uvicorn.Config(app, port=int(self.url.rsplit(":", 1)[1]), log_level="warning")
        self.server = uvicorn.Server(config)
        threading.Thread(target=self.server.run, daemon=True).start()

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.url}/healthz", headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}, timeout=5)

    def close(self) -> None:
        self.server.should_exit = True
        self.scaler.stop()
        self.channel.close()


@pytest.fixture()
def in_process(broker: Broker, tmp_path: Path) -> Iterator[InProcessScaler]:
    created = InProcessScaler(broker, tmp_path)
    yield created
    created.close()


def test_healthz_is_503_when_the_heartbeat_consumer_is_dead(in_process: InProcessScaler) -> None:
    healthy = wait_until(lambda: (r := in_process.health()).status_code == 200 and r, timeout=10, what="healthy")
    assert healthy.json()["worker_channel"]["alive"] is True
    in_process.channel.close()
    sick = wait_until(lambda: (r := in_process.health()).status_code == 503 and r, timeout=10, what="a 503")
    body = sick.json()
    assert body["worker_channel"]["alive"] is False
    assert body["problems"] == ["worker channel: the heartbeat and wake-up consumer thread is not running"]


def test_healthz_is_503_when_the_control_loop_stopped_ticking(in_process: InProcessScaler) -> None:
    wait_until(lambda: in_process.health().status_code == 200, timeout=10, what="healthy")
    in_process.scaler.stop()
    in_process.loop.join(timeout=10)
    sick = wait_until(lambda: (r := in_process.health()).status_code == 503 and r, timeout=10, what="a 503")
    assert [problem.split(":")[0] for problem in sick.json()["problems"]] == ["control loop"]


def test_a_burst_of_wake_ups_is_coalesced(broker: Broker, tmp_path: Path) -> None:
    in_process = InProcessScaler(broker, tmp_path, tick_seconds=60)
    try:
        wait_until(lambda: in_process.health().json()["worker_channel"]["connected"], timeout=10, what="listening")
        ticks = in_process.scaler.board.tick_number
        with broker.channel() as channel:
            for _ in range(500):
                channel.basic_publish(CONTROL_EXCHANGE, WAKE_ROUTING_KEY, json.dumps({"job_type": "sleep"}).encode())
        wait_until(lambda: in_process.channel.wake_ups == 500, timeout=20, what="every wake-up received")
        woken = in_process.scaler.board.tick_number - ticks
        assert 1 <= woken < 50, f"500 wake-ups made {woken} ticks"
    finally:
        in_process.close()
