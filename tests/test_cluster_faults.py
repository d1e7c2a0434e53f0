"""A node of the three-node cluster dies (kill -9) while a 100,000-row upload goes through the whole stack.

The stack (producer, scaler, workers: real processes) runs on the test session's own cluster
(harness/cluster.py) with every node in its node lists and the job type's queues quorum queues. The node
killed is the one that leads the type's work queue, as the management API says, (a) while the producer
publishes the upload and (b) while workers consume it. Afterwards: no row lost, the upload record counts every
row once (succeeded = rows, dead = 0), the producer answered 200, or 503 and a retry with the same
Idempotency-Key finished the same record; and the scaler kept deciding through the failover (no tick gap
longer than `MAX_TICK_GAP_SECONDS`, no busy worker stopped while rows waited, at most `MAX_WORKER_STARTS`
workers started). Each test adds a row to the fault table (bench/results/faults-cluster.json).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.cluster import Cluster, Node
from harness.stack import Stack
from harness.waiting import wait_until
from tests.support import fault_report
from tests.support.uploads import interrupted_upload, wait_record

pytestmark = pytest.mark.fault
ROWS = 100_000
MAX_WORKERS = 4
TYPE = "rows"
#: Batches of 100 recorded by the test handler (tests/handlers/batch_recorder.py): every row each worker
#: handled, duplicates included, exactly (the workers' own logs are cut at their size bound).
ROWS_TYPE = {
    "handler": "tests.handlers.batch_recorder",
    "batch_size": 100,
    "queue_type": "quorum",
    "threshold": 100,
    "burst_size": MAX_WORKERS,
    "max_workers": MAX_WORKERS,
    "idle_seconds": 3,
}
#: The scaler ticks every 0.5 s; a failover may cost it a management API call to the dead node (refused at
#: once) and a reconnect of its heartbeat channel, never seconds of blindness.
MAX_TICK_GAP_SECONDS = 5.0
#: No storm: the workers it started for the upload, plus one replacement each at most.
MAX_WORKER_STARTS = 2 * MAX_WORKERS


def csv_rows(count: int) -> bytes:
    return b"n\n" + b"".join(b"%d\n" % i for i in range(count))


@dataclass
class ScalerWatch:
    """Samples the scaler's status every 0.2 s in the background: tick times, worker ids, busy workers stopped."""

    stack: Stack
    job_type: str
    ticks: list[float] = field(default_factory=list)
    workers: set[str] = field(default_factory=set)
    stopped_busy: list[str] = field(default_factory=list)
    unanswered: int = 0
    _busy: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self._sample(self.stack.status())
            except httpx.HTTPError:
                self.unanswered += 1

    def _sample(self, status: dict[str, Any]) -> None:
        last_at = status["tick"]["last_at"]
        if not self.ticks or last_at != self.ticks[-1]:
            self.ticks.append(last_at)
        kind = status["job_types"][self.job_type]
        backlog = (kind["ready"] or 0) + (kind["unacked"] or 0)
        mine = [worker for worker in status["workers"] if worker["job_type"] == self.job_type]
        self.workers |= {worker["id"] for worker in mine}
        for worker in mine:
            if worker["state"] == "stopping" and worker["id"] in self._busy and backlog > 0:
                self.stopped_busy.append(f"{worker['id']} with {backlog} rows waiting")
        self._busy = {worker["id"] for worker in mine if worker["busy"]}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def longest_gap(self, since: float) -> float:
        """The longest time between two ticks from `since` (time.time()) to the last tick seen."""
        times = [since, *(tick for tick in self.ticks if tick > since)]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=float("inf"))


@pytest.fixture()
def stack(cluster: Cluster, tmp_path: Path) -> Iterator[Stack]:
    created = Stack(
        cluster,
        tmp_path,
        {TYPE: {**ROWS_TYPE, "env": {"RECORD_FILE": str(tmp_path / "handled.jsonl")}}},
        tick_seconds=0.5,
        # Quorum queues everywhere, as `./manage.sh up --rabbitmq-nodes 3` and the Kubernetes manifests run:
        # a classic autoscaler.outcomes would die with its node and take the upload records' counting along.
        env={"WORKER_HEARTBEAT_SECONDS": "0.5", "RABBITMQ_HEARTBEAT_SECONDS": "5", "QUEUE_TYPE": "quorum"},
    )
    yield created
    created.stop()
    for node in cluster.nodes:
        if cluster.pid(node) is None:
            cluster.restart(node)


def kill_leader(cluster: Cluster, queue: str) -> tuple[Node, float]:
    """SIGKILL the node leading the quorum queue `queue`, and see another member take the lead; (the killed
    node, time.time() of the kill)."""
    assert cluster.queue(queue)["type"] == "quorum"
    leader = wait_until(lambda: cluster.leader(queue), timeout=10, what=f"the leader of {queue}")
    cluster.kill(leader)
    killed_at = time.time()
    cluster.new_leader(queue, leader)
    return leader, killed_at


def handled(stack: Stack) -> list[str]:
    """The message id of every row a worker handled so far, once per time handled (the test handler's file)."""
    path = stack.directory / "handled.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [message_id for line in lines if line.endswith("}") for message_id in json.loads(line)["ids"]]


def settle(stack: Stack, watch: ScalerWatch, upload_id: str, fault: str, killed_at: float) -> None:
    """The record finishes exactly, every row was processed, the scaler kept deciding; then the table row."""
    done = wait_record(stack, upload_id, lambda r: r["state"] in ("done", "failed"), "the upload to finish", 240)
    recover = time.time() - killed_at
    # Long enough after the kill to see whether the scaler kept ticking through it.
    wait_until(lambda: watch.ticks and watch.ticks[-1] >= killed_at + 3, timeout=30, what="scaler ticks after the kill")
    watch.stop()
    processed = Counter(handled(stack))
    ids = {f"{upload_id}:{n}" for n in range(1, ROWS + 1)}
    seen = {message_id: count for message_id, count in processed.items() if message_id in ids}
    lost = len(ids - set(seen))
    duplicates = sum(seen.values()) - len(seen)
    fault_report.record(
        fault_report.FaultRow(fault, ROWS, len(seen), duplicates, lost, recover, results="faults-cluster")
    )
    assert (done["succeeded"], done["dead"], done["cancelled"], done["pending"]) == (ROWS, 0, 0, 0), done
    assert lost == 0
    assert watch.longest_gap(killed_at) <= MAX_TICK_GAP_SECONDS, f"the scaler stopped ticking: {watch.ticks}"
    assert not watch.stopped_busy, f"busy workers stopped while rows waited: {watch.stopped_busy}"
    assert len(watch.workers) <= MAX_WORKER_STARTS, f"{len(watch.workers)} workers started: {sorted(watch.workers)}"


def test_the_queue_leader_killed_while_the_upload_is_published(cluster: Cluster, stack: Stack) -> None:
    stack.start()
    watch = ScalerWatch(stack, TYPE)
    killed: list[float] = []
    answer, upload_id = interrupted_upload(
        stack,
        csv_rows(ROWS),
        TYPE,
        "cluster-fault-publishing",
        publishing=lambda: stack.broker.queue_depth(stack.queue_of(TYPE)) + len(handled(stack)) >= 5_000,
        fail=lambda: killed.append(kill_leader(cluster, stack.queue_of(TYPE))[1]),
        recover=lambda: None,
        survivable=True,
    )
    answered = "200" if answer["status"] == 200 else f"503 with {answer['confirmed']} confirmed, same-key retry 200"
    settle(
        stack, watch, upload_id, f"3-node cluster: queue leader kill -9 mid-upload (producer: {answered})", killed[0]
    )


def test_the_queue_leader_killed_while_workers_consume(cluster: Cluster, stack: Stack) -> None:
    """The type is paused while the rows are queued, so that the node dies with most of them still queued and
    the workers busy (they would otherwise keep up with the upload)."""
    stack.start()
    control = f"{stack.scaler_url}/api/job-types/{TYPE}"
    assert stack.post(f"{control}/pause", timeout=10).status_code == 200
    response = stack.upload(csv_rows(ROWS), TYPE, timeout=300)
    assert response.status_code == 200, response.text
    watch = ScalerWatch(stack, TYPE)
    assert stack.post(f"{control}/resume", timeout=10).status_code == 200
    queue = stack.queue_of(TYPE)
    wait_until(
        lambda: len(handled(stack)) >= 5_000 and stack.broker.queue_depth(queue) >= ROWS / 4,
        timeout=120,
        interval=0.05,
        what="workers under way with a quarter of the rows still queued",
    )
    _, at = kill_leader(cluster, queue)
    settle(stack, watch, response.json()["upload_id"], "3-node cluster: queue leader kill -9 while workers consume", at)
