"""Several RabbitMQ nodes: the node list is checked at start, connections move to another node when theirs dies.

The AMQP tests run against two throwaway nodes of their own (tests/support/nodes.py, ports 5692 and 5693),
killed with SIGKILL or frozen with SIGSTOP; the shared broker on 5672 is only read through its management API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import JobType
from common.env import SettingsError
from common.outcomes import RowOutcome
from common.settings import rabbitmq_urls
from harness.broker import Broker
from harness.waiting import wait_until
from producer.row_publisher import BATCH_BYTES, UNSENT_BYTES, PublishControl, publish_rows
from scaler.queue_stats import QueueStatsSource
from scaler.worker_channel import WorkerChannel
from tests.support.nodes import OwnNode, start_nodes
from tests.support.outcomes import publish_reports
from tests.support.worker_harness import Harness
from uploads.model import UploadRecord
from uploads.settings import UploadSettings
from uploads.sql import SqlStore
from uploads.tracker import Tracker, TrackerState

REPO = Path(__file__).resolve().parent.parent
#: The bound the README states for moving to another node once a node is killed (loss seen, backoff, connect).
FAILOVER_SECONDS = 5.0


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[OwnNode]]:
    started = start_nodes(tmp_path_factory.mktemp("rabbitmq-nodes"))
    yield started
    for node in started:
        node.stop()


def revive(node: OwnNode) -> None:
    """Start a node a test killed, so the next test has two again."""
    if node.process is None or node.process.poll() is not None:
        node.start().wait_ready()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("amqp://guest:secret@a:5672/%2F,http://b:5672", "RABBITMQ_URLS entry 2 of 2 ('http://b:5672') is not of the"),
        ("amqp://a:5672/%2F,,amqp://c", "RABBITMQ_URLS entry 2 of 3 is empty"),
        ("amqp://guest:secret@a:56x2/%2F", "RABBITMQ_URLS entry 1 of 1 is not a URL"),
        ("amqp:///%2F", "RABBITMQ_URLS entry 1 of 1 ('amqp:///%2F') is not of the form amqp://host"),
    ],
)
def test_a_wrong_entry_in_the_node_list_is_named(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("RABBITMQ_URLS", value)
    with pytest.raises(SettingsError) as raised:
        rabbitmq_urls()
    assert expected in str(raised.value)
    assert "secret" not in str(raised.value)


def test_rabbitmq_url_still_works_as_a_one_node_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RABBITMQ_URLS", raising=False)
    monkeypatch.setenv("RABBITMQ_URL", "amqp://u:p@one:5673/v")
    assert rabbitmq_urls() == ("amqp://u:p@one:5673/v",)


@pytest.mark.parametrize("command", [["-m", "producer"], ["-m", "workers", "sleep"]])
def test_a_bad_url_in_rabbitmq_urls_stops_the_process_at_start(command: list[str]) -> None:
    env = {
        **os.environ,
        "RABBITMQ_URLS": "amqp://guest:guest@127.0.0.1:5692/%2F,amqp//127.0.0.1:5693",
        "PRODUCER_TOKEN": "a-token-for-the-start-check-only-0123456789",
    }
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert "cannot start: RABBITMQ_URLS entry 2 of 2 ('amqp//127.0.0.1:5693') is not of the form" in done.stderr


def test_the_worker_channel_moves_to_the_other_node_when_its_node_is_killed(nodes: list[OwnNode]) -> None:
    channel = WorkerChannel(tuple(node.url for node in nodes), name="nodes-test").start()
    try:
        first = wait_until(lambda: channel.health().connected and channel.health().node, what="a first connection")
        victim, other = (nodes[0], nodes[1]) if first == nodes[0].label else (nodes[1], nodes[0])
        victim.kill()
        killed = time.monotonic()
        reasons = set()

        def moved() -> bool:
            health = channel.health()
            reasons.add(health.reason)
            return health.connected and health.node == other.label

        wait_until(moved, timeout=FAILOVER_SECONDS, interval=0.02, what=f"a connection to {other.label}")
        took = time.monotonic() - killed
        print(
            f"\nworker channel on {other.label} {took:.2f} s after {victim.label} was killed (bound {FAILOVER_SECONDS} s)"
        )
        lost = [reason for reason in reasons if reason and reason.startswith(f"lost {victim.label}")]
        assert lost and "reconnecting in" in lost[0], reasons
        assert channel.health().reason == f"connected to {other.label}"
    finally:
        channel.close()
        revive(victim)


def log_events(log: str, event: str) -> list[dict]:
    """The worker's JSON log lines of one event."""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def test_a_worker_process_moves_to_the_other_node_and_consumes_there(nodes: list[OwnNode], tmp_path: Path) -> None:
    """A real worker (and producer) with both nodes in RABBITMQ_URLS; the worker's node is killed -9."""
    harness = Harness(nodes[0].broker, tmp_path, {}, env={"RABBITMQ_URLS": ",".join(node.url for node in nodes)})
    victim = nodes[0]
    try:
        worker = harness.start_worker("w1")
        first = wait_until(lambda: log_events(worker.log(), "consuming"), timeout=30, what="the worker to consume")
        victim, other = (nodes[0], nodes[1]) if first[0]["node"] == nodes[0].label else (nodes[1], nodes[0])
        victim.kill()
        killed = time.monotonic()
        wait_until(
            lambda: len(log_events(worker.log(), "consuming")) == 2,
            timeout=FAILOVER_SECONDS,
            interval=0.02,
            what=f"the worker consuming on {other.label}",
        )
        print(f"\nworker consuming on {other.label} {time.monotonic() - killed:.2f} s after {victim.label} was killed")
        assert log_events(worker.log(), "consuming")[1]["node"] == other.label
        assert log_events(worker.log(), "connection lost, reconnecting")[0]["node"] == victim.label
        upload_id = harness.enqueue([{"n": n} for n in range(1, 21)])  # the producer finds the live node too
        wait_until(
            lambda: {f"{upload_id}:{n}" for n in range(1, 21)} <= {record["id"] for record in harness.records()},
            timeout=30,
            what="every row processed on the other node",
        )
    finally:
        harness.close()
        revive(victim)


def test_the_tracker_counts_on_from_the_other_node_when_its_node_is_killed(
    nodes: list[OwnNode], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RABBITMQ_URLS", ",".join(node.url for node in nodes))
    store = SqlStore(f"sqlite:///{tmp_path / 'uploads.db'}", 100, 86_400.0)
    store.begin_upload(UploadRecord("u1", "sleep", "data.csv", 1, ["a"], created_at=time.time()))
    store.mark_published("u1", 1, None)
    tracker = Tracker(store, UploadSettings())
    tracker.start()
    try:
        first = wait_until(
            lambda: tracker.status()["state"] is TrackerState.CONSUMING and tracker.status()["node"], what="consuming"
        )
        victim, other = (nodes[0], nodes[1]) if first == nodes[0].label else (nodes[1], nodes[0])
        publish_reports(other.broker, "sleep", [[RowOutcome("u1", 1, "succeeded")]])  # waits there for the tracker
        victim.kill()
        killed = time.monotonic()
        seen = set()

        def counted() -> bool:
            status = tracker.status()
            seen.add((status["state"], status["reason"]))
            return store.get("u1").succeeded == 1

        wait_until(counted, timeout=FAILOVER_SECONDS, interval=0.02, what=f"the report on {other.label} counted")
        print(f"\ntracker counting on {other.label} {time.monotonic() - killed:.2f} s after {victim.label} was killed")
        down = [reason for state, reason in seen if state is TrackerState.BROKER_UNREACHABLE]
        assert any(reason.startswith(f"lost {victim.label}") for reason in down), seen
        assert tracker.status()["node"] == other.label
    finally:
        tracker.stop()
        store.close()
        revive(victim)


def test_the_unsent_bytes_bound_holds_for_large_rows_when_the_broker_stops_reading(
    nodes: list[OwnNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen node (SIGSTOP) takes nothing: the producer must stop handing rows to the socket at the bound,
    not buffer the whole upload. Rows of 64 KiB, 24 MiB in all, far beyond the bound and the kernel's buffers."""
    node = nodes[0]
    monkeypatch.setenv("RABBITMQ_URLS", node.url)
    row_bytes, rows = 64 * 1024, 384
    body = b'{"x":"' + b"y" * (row_bytes - 8) + b'"}'
    job_type = JobType(name="bound", queue="q_nodes_bound")
    control = PublishControl()
    frozen = threading.Event()

    def gated_rows() -> Iterator[tuple[int, int, bytes]]:
        """Row 1 while the node runs (connection open), the rest once it is frozen."""
        yield 1, 2, body
        frozen.wait(30)
        yield from ((row, row + 1, body) for row in range(2, rows + 1))

    result = []
    publisher = threading.Thread(
        target=lambda: result.append(publish_rows(job_type, "bound", gated_rows(), 10_000, 1, 0, control))
    )
    publisher.start()
    run = wait_until(lambda: control._run, what="the publishing run")
    wait_until(lambda: run.confirms.sequence > 0, what="the first row sent")
    node.signal(signal.SIGSTOP)
    frozen.set()
    try:
        # The rows go out in batches until the bound is reached; only a confirm (none can come now) resumes.
        time.sleep(1)  # an observation window: nothing more may be handed over while the node is frozen
        handed_over = run.confirms.sequence * len(body)
    finally:
        node.signal(signal.SIGCONT)
    publisher.join(60)
    print(
        f"\n{handed_over // 1024} KiB of {rows * len(body) // 1024} KiB handed to "
        f"the socket while the node was frozen (bound {UNSENT_BYTES // 1024} KiB + a batch + a row)"
    )
    assert UNSENT_BYTES <= handed_over <= UNSENT_BYTES + BATCH_BYTES + len(body)
    assert result and result[0].error is None and result[0].confirmed == rows


GUARD = """
import sys
{breakage}
try:
    import producer.row_publisher
except Exception as error:
    print(f"{{type(error).__name__}}: {{error}}", file=sys.stderr)
    sys.exit(3)
"""


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        ("import pika.connection\ndel pika.connection.Connection._output_marshaled_frames", "_output_marshaled_frames"),
        ("import pika\npika.__version__ = '2.0.0'", "pika 2.0.0 (supported: 1.4.x)"),
    ],
)
def test_the_pika_guard_fails_loudly_naming_the_version_and_the_attribute(breakage: str, named: str) -> None:
    script = GUARD.format(breakage=breakage)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 3
    assert done.stderr.startswith("PikaInternalsError: pika ")
    assert named in done.stderr


def test_management_api_reads_skip_a_failed_node_and_say_which_answered(broker: Broker) -> None:
    dead = "http://guest:guest@127.0.0.1:1/api"  # nothing listens on port 1
    source = QueueStatsSource((dead, broker.api_url), broker.amqp_url, skip_seconds=60)
    try:
        assert source.fetch() is not None
        assert source.node == "127.0.0.1:15672"
        assert list(source.failed) == ["127.0.0.1:1"]
        assert source.fetch() is not None
        assert source.failed == {}, "the failed node is left out for skip_seconds"
    finally:
        source.close()
