"""A three-node RabbitMQ cluster of the test session's own, started by the code `./manage.sh up --rabbitmq-nodes 3`
runs (its shell functions, sourced), on ports beside the shared broker's: AMQP 5682-5684, management
15682-15684, distribution 25682-25684, node names rabbit-1@localhost... (`Topology` says which; the queue cost
benchmark also starts a one-node one beside it).

The fault tests kill its nodes with SIGKILL; the shared broker on 5672 is never touched. `running_cluster`
starts it (about half a minute on two busy cores) with a fresh vhost on it and stops every node at the end; the
tests' session fixture `cluster` (tests/conftest.py) does that once per test session, the queue cost benchmark
(bench/queues.py) once per run. A
`Cluster` is a `Broker` whose URLs are those of the first node still running, so stacks and benchmark helpers
written for the shared broker run on it unchanged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from harness.broker import Broker
from harness.waiting import wait_until

MANAGE = Path(__file__).resolve().parents[1] / "manage.sh"
AUTH = ("guest", "guest")
START_SECONDS = 240  # three nodes from cold plus two joins, on two cores other sessions share


@dataclass(frozen=True)
class Topology:
    """How many nodes (`up --rabbitmq-nodes`), their name prefix and base ports (manage.sh's RABBITMQ_NODE_PREFIX,
    RABBITMQ_BASE_PORT and RABBITMQ_MANAGEMENT_BASE_PORT; distribution ports: AMQP + 20000)."""

    size: int = 3
    prefix: str = "rabbit"
    base_port: int = 5682
    management_base_port: int = 15682

    def env(self) -> dict[str, str]:
        return {
            "RABBITMQ_NODE_PREFIX": self.prefix,
            "RABBITMQ_BASE_PORT": str(self.base_port),
            "RABBITMQ_MANAGEMENT_BASE_PORT": str(self.management_base_port),
        }


THREE_NODES = Topology()


@dataclass(frozen=True)
class Node:
    number: int
    topology: Topology = THREE_NODES

    @property
    def name(self) -> str:
        return f"{self.topology.prefix}-{self.number}@localhost"

    @property
    def amqp_port(self) -> int:
        return self.topology.base_port + self.number - 1

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.topology.management_base_port + self.number - 1}/api"


@dataclass
class Cluster(Broker):
    """The running cluster (its directory holds the pid files) and a vhost on it."""

    directory: Path
    topology: Topology = THREE_NODES

    @property
    def nodes(self) -> list[Node]:
        return [Node(number, self.topology) for number in range(1, self.topology.size + 1)]

    def manage(self, script: str, timeout: float = START_SECONDS) -> None:
        """Run manage.sh's own functions (sourced) against this cluster, e.g. `start_node 2; wait_node 2`."""
        env = {**os.environ, **self.topology.env(), "RABBITMQ_CLUSTER_DIR": str(self.directory)}
        command = f"source {MANAGE}; RABBITMQ_NODES={self.topology.size}; {script}"
        done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"manage.sh `{script}` failed:\n{done.stderr}"

    def pid(self, node: Node) -> int | None:
        try:
            pid = int((self.directory / f"{self.topology.prefix}-{node.number}.pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def first_running(self) -> Node:
        running = [node for node in self.nodes if self.pid(node) is not None]
        assert running, "no node of the cluster is running"
        return running[0]

    @property
    def amqp_url(self) -> str:
        return self.amqp_urls()[self.first_running().number - 1]

    @property
    def api_url(self) -> str:
        return self.api_urls()[self.first_running().number - 1]

    @property
    def api(self) -> str:
        return self.first_running().api

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
            "RABBITMQ_URL": self.amqp_url,
            "RABBITMQ_API_URL": self.api_url,
        }

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
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
        return {node["name"] for node in self.request("GET", "/nodes").json() if node.get("running")}

    def leader(self, queue: str) -> Node | None:
        """The node that leads a quorum queue (or hosts a classic one), as the management API says; None while
        the queue has no leader (an election after its leader died)."""
        info = self.queue(queue)
        name = info.get("leader") or info.get("node")
        return next((node for node in self.nodes if node.name == name and self.pid(node) is not None), None)

    def new_leader(self, queue: str, old: Node, timeout: float = 30) -> Node:
        """Wait (with a deadline) until a node other than `old` leads the queue; that node."""
        return wait_until(
            lambda: (leader := self.leader(queue)) not in (None, old) and leader,
            timeout=timeout,
            what=f"a new leader of {queue} after {old.name}",
        )

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


@contextmanager
def running_cluster(directory: Path, topology: Topology = THREE_NODES) -> Iterator[Cluster]:
    """The nodes started as `./manage.sh up --rabbitmq-nodes N` starts them, with a fresh vhost; every node is
    stopped at the end."""
    started = Cluster(f"autoscaler-cluster-{uuid.uuid4().hex[:8]}", directory, topology)
    try:
        started.manage("ensure_rabbitmq_cluster")
        assert started.running_nodes() == {node.name for node in started.nodes}
        path = quote(started.vhost, safe="")
        started.request("PUT", f"/vhosts/{path}")
        started.request("PUT", f"/permissions/{path}/guest", json={"configure": ".*", "write": ".*", "read": ".*"})
        yield started
    finally:
        started.manage("stop_rabbitmq_cluster")
