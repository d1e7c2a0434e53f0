"""The real RabbitMQ server, seen through its management API and AMQP.

Each test session gets its own virtual host, so tests never see each other's
queues or a developer's own data, and the whole vhost is deleted at the end.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pika

from harness.waiting import wait_until

API = "http://127.0.0.1:15672/api"
AUTH = ("guest", "guest")


@dataclass
class Broker:
    vhost: str

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:5672/{quote(self.vhost, safe='')}"

    @property
    def api_url(self) -> str:
        return "http://guest:guest@127.0.0.1:15672/api"

    @property
    def api(self) -> str:
        """The management API's base URL (credentials apart: AUTH)."""
        return API

    def env(self) -> dict[str, str]:
        """Environment for a component process that should use this vhost."""
        return {"RABBITMQ_URL": self.amqp_url, "RABBITMQ_API_URL": self.api_url}

    def _vhost_path(self) -> str:
        return quote(self.vhost, safe="")

    def queue(self, name: str) -> dict:
        """The management API's view of one queue (404 raises)."""
        response = httpx.get(f"{self.api}/queues/{self._vhost_path()}/{quote(name, safe='')}", auth=AUTH, timeout=10)
        response.raise_for_status()
        return response.json()

    def queue_depth(self, name: str) -> int:
        """Messages in the queue right now, from AMQP (exact, not the stats sample)."""
        with self.channel() as channel:
            return channel.queue_declare(queue=name, passive=True).method.message_count

    def settled_depth(self, name: str, quiet: float, timeout: float = 30) -> tuple[float, int]:
        """Sample the queue's exact depth every 50 ms until it held still for `quiet` seconds; returns when
        (time.monotonic()) it reached that depth, and the depth."""
        with self.channel() as channel:
            depth = channel.queue_declare(queue=name, passive=True).method.message_count
            started = since = time.monotonic()
            while time.monotonic() - since < quiet:
                assert time.monotonic() - started < timeout, f"queue {name} still changing after {timeout} s"
                time.sleep(0.05)  # the sampling period
                now = channel.queue_declare(queue=name, passive=True).method.message_count
                if now != depth:
                    depth, since = now, time.monotonic()
        return since, depth

    def channel(self) -> _Channel:
        return _Channel(self.amqp_url)

    def drain(self, name: str, limit: int = 1_000_000) -> list[tuple[pika.spec.BasicProperties, bytes]]:
        """Take (and ack) every message in the queue; returns their properties and bodies."""
        messages = []
        with self.channel() as channel:
            while len(messages) < limit:
                method, properties, body = channel.basic_get(queue=name, auto_ack=True)
                if method is None:
                    break
                messages.append((properties, body))
        return messages

    def drain_json(self, name: str) -> list[dict]:
        return [json.loads(body) for _, body in self.drain(name)]


class _Channel:
    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))

    def __enter__(self):
        return self.connection.channel()

    def __exit__(self, *exc) -> None:
        if self.connection.is_open:
            self.connection.close()


def create_vhost() -> Broker:
    vhost = f"autoscaler-test-{uuid.uuid4().hex[:8]}"
    httpx.put(f"{API}/vhosts/{quote(vhost, safe='')}", auth=AUTH, timeout=10).raise_for_status()
    _grant_all(vhost, "guest")
    return Broker(vhost)


def _grant_all(vhost: str, username: str) -> None:
    """Full rights for `username` on `vhost` (and nowhere else)."""
    httpx.put(
        f"{API}/permissions/{quote(vhost, safe='')}/{username}",
        auth=AUTH,
        json={"configure": ".*", "write": ".*", "read": ".*"},
        timeout=10,
    ).raise_for_status()


def delete_vhost(broker: Broker) -> None:
    httpx.delete(f"{API}/vhosts/{quote(broker.vhost, safe='')}", auth=AUTH, timeout=30)


def broker_is_up() -> bool:
    try:
        return httpx.get(f"{API}/overview", auth=AUTH, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop_broker_app() -> None:
    """Stop RabbitMQ's application (connections drop, the node stays) as a broker outage."""
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)


def start_broker_app(timeout: float = 120) -> None:
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=timeout)
    wait_until(broker_is_up, timeout=timeout, what="RabbitMQ management API after start_app")


def create_user(broker: Broker, username: str, password: str) -> None:
    """A broker user with full rights on the test vhost only (to check no password leaks anywhere)."""
    httpx.put(
        f"{API}/users/{username}", auth=AUTH, json={"password": password, "tags": "monitoring"}, timeout=10
    ).raise_for_status()
    _grant_all(broker.vhost, username)


def delete_user(username: str) -> None:
    httpx.delete(f"{API}/users/{username}", auth=AUTH, timeout=10)
