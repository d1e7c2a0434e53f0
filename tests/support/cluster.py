"""A three-node RabbitMQ cluster of the test session's own, started by the code `./manage.sh up --rabbitmq-nodes 3`
runs (its shell functions, sourced), on ports beside the shared broker's: AMQP 5682-5684, management
15682-15684, distribution 25682-25684, node names rabbit-1@localhost...

The fault tests kill its nodes with SIGKILL; the shared broker on 5672 is never touched. The session fixture
`cluster` starts it once (about half a minute on two busy cores), gives each session a fresh vhost on it, and
stops every node at the end. Import the fixture into the test module that uses it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support.waiting import wait_until

MANAGE = Path(__file__).resolve().parents[2] / "manage.sh"
NODES = 3
BASE_PORT = 5682
MANAGEMENT_BASE_PORT = 15682
AUTH = ("guest", "guest")
START_SECONDS = 240  # three nodes from cold plus two joins, on two cores other sessions share


@dataclass(frozen=True)
class Node:
    number: int

    @property
    def name(self) -> str:
        return f"rabbit-{self.number}@localhost"

    @property
    def amqp_port(self) -> int:
        return BASE_PORT + self.number - 1

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{MANAGEMENT_BASE_PORT + self.number - 1}/api"


@dataclass
class Cluster:
    """The running cluster (its directory holds the pid files) and this session's vhost on it."""

    directory: Path
    vhost: str = ""

    @property
    def nodes(self) -> list[Node]:
        return [Node(number) for number in range(1, NODES + 1)]

    def manage(self, script: str, timeout: float = START_SECONDS) -> None:
        """Run manage.sh's own functions (sourced) against this cluster, e.g. `start_node 2; wait_node 2`."""
        env = {
            **os.environ,
            "RABBITMQ_BASE_PORT": str(BASE_PORT),
            "RABBITMQ_MANAGEMENT_BASE_PORT": str(MANAGEMENT_BASE_PORT),
            "RABBITMQ_CLUSTER_DIR": str(self.directory),
        }
        command = f"source {MANAGE}; RABBITMQ_NODES={NODES}; {script}"
        done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"manage.sh `{script}` failed:\n{done.stderr}"

    def pid(self, node: Node) -> int | None:
        try:
            pid = int((self.directory / f"rabbit-{node.number}.pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def amqp_urls(self) -> list[str]:
        vhost = quote(self.vhost, safe="")
        return [f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/{vhost}" for node in self.nodes]

    def api_urls(self) -> list[str]:
        return [f"http://guest:guest@{node.api.removeprefix('http://')}" for node in self.nodes]

    def env(self) -> dict[str, str]:
        """Environment for a component that should use every node of the cluster (this session's vhost)."""
        return {
            "RABBITMQ_URLS": ",".join(self.amqp_urls()),
            "RABBITMQ_API_URLS": ",".join(self.api_urls()),
            "RABBITMQ_URL": self.amqp_urls()[0],
            "RABBITMQ_API_URL": self.api_urls()[0],
        }

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        """A management API call answered by the first running node."""
        last: Exception | None = None
        for node in self.nodes:
            if self.pid(node) is None:
                continue
            try:
                response = httpx.request(method, node.api + path, auth=AUTH, timeout=10, **kwargs)
            except httpx.HTTPError as error:
                last = error
                continue
            response.raise_for_status()
            return response
        raise AssertionError(f"no node of the cluster answered {method} {path}; last: {last!r}")

    def running_nodes(self) -> set[str]:
        return {node["name"] for node in self.api("GET", "/nodes").json() if node.get("running")}

    def leader(self, queue: str) -> Node:
        """The node that leads a quorum queue (or hosts a classic one), as the management API says."""
        info = self.api("GET", f"/queues/{quote(self.vhost, safe='')}/{quote(queue, safe='')}").json()
        name = info.get("leader") or info["node"]
        return next(node for node in self.nodes if node.name == name)

    def kill(self, node: Node) -> None:
        """SIGKILL the node's Erlang VM: no shutdown, its connections and its queue replicas vanish at once."""
        pid = self.pid(node)
        assert pid is not None, f"{node.name} is not running"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: self.pid(node) is None, timeout=10, what=f"{node.name} (pid {pid}) to exit")

    def restart(self, node: Node) -> None:
        """Start a killed node again (manage.sh's start_node and wait_node); it rejoins the cluster by itself."""
        self.manage(f"start_node {node.number}; wait_node {node.number}")
        wait_until(lambda: node.name in self.running_nodes(), timeout=60, what=f"{node.name} back in the cluster")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three clustered nodes started as `./manage.sh up --rabbitmq-nodes 3` starts them, and a fresh vhost."""
    started = Cluster(tmp_path_factory.mktemp("rabbitmq-cluster"))
    try:
        started.manage("ensure_rabbitmq_cluster")
        assert started.running_nodes() == {node.name for node in started.nodes}
        started.vhost = f"autoscaler-cluster-{uuid.uuid4().hex[:8]}"
        path = quote(started.vhost, safe="")
        started.api("PUT", f"/vhosts/{path}")
        started.api("PUT", f"/permissions/{path}/guest", json={"configure": ".*", "write": ".*", "read": ".*"})
        yield started
    finally:
        started.manage("stop_rabbitmq_cluster")
