"""Throwaway RabbitMQ nodes of the tests' own, for killing: never the shared broker on 5672.

Each node is Debian's `rabbitmq-server` started directly (not through the
service wrapper) with its own node name, AMQP and distribution ports, data
and log directories under a temporary directory, and no plugins (the
management API is not needed to test AMQP failover, and it would want port
15672). The nodes are not clustered: a connection test needs two brokers that
answer, not shared queues. `kill()` is `kill -9` of the node's Erlang VM;
`start()` brings it back on the same data directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness.broker import Broker
from harness.waiting import wait_until

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
#: Ports clear of the shared broker (5672/15672) and of the `cluster` tests (5682-5684, 25682-25684).
PORTS = ((5692, 25692), (5693, 25693))
BOOT_SECONDS = 60.0


@dataclass
class NodeBroker(Broker):
    """The test helpers' `Broker` (channel, drain...) on one own node's default vhost."""

    url: str = ""

    @property
    def amqp_url(self) -> str:
        return self.url


@dataclass
class OwnNode:
    name: str
    port: int
    dist_port: int
    directory: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def broker(self) -> NodeBroker:
        return NodeBroker("/", self.url)

    @property
    def label(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> OwnNode:
        if _open(self.port):
            raise RuntimeError(f"port {self.port} is taken: another broker runs there; stop it first")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "conf.d").mkdir(exist_ok=True)
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq.conf").write_text(f"listeners.tcp.default = {self.port}\n")
        env = {
            **os.environ,
            "HOME": str(self.directory),  # its own Erlang cookie
            "RABBITMQ_NODENAME": f"{self.name}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq"),
            "RABBITMQ_CONFIG_FILES": str(self.directory / "conf.d"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.directory / "pid"),
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "env.conf"),
        }
        with open(self.directory / "server.log", "ab") as log:
            self.process = subprocess.Popen([SERVER], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory)
        return self

    def wait_ready(self) -> None:
        wait_until(self._answers, timeout=BOOT_SECONDS, what=f"RabbitMQ node {self.name} on port {self.port}")

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def _vm_pid(self) -> int:
        return int((self.directory / "pid").read_text())

    def signal(self, number: signal.Signals) -> None:
        os.kill(self._vm_pid(), number)

    def kill(self) -> None:
        """kill -9 of the Erlang VM, and wait until the port is closed."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)
        wait_until(lambda: not _open(self.port), timeout=10, what=f"port {self.port} to close")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(timeout=10)


def _open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_nodes(directory: Path) -> list[OwnNode]:
    """Two nodes, `nodes-a` and `nodes-b`, booted in parallel."""
    nodes = [
        OwnNode(f"nodes-{letter}", port, dist, directory / letter).start()
        for letter, (port, dist) in zip("ab", PORTS, strict=True)
    ]
    for node in nodes:
        node.wait_ready()
    return nodes
