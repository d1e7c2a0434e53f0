"""Publishing leases: in the store, on every backend (one publisher per upload, expiry reads `interrupted`), and
a real publisher that loses its lease stops."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.config import JobType
from harness.broker import Broker
from harness.waiting import wait_until
from producer.leases import Leases, LeaseSettings
from producer.row_publisher import PublishResult, publish_rows
from tests.support.k8s_fakes import FakeClock
from tests.test_uploads_store import DAY, backend, clock, draft, store  # noqa: F401 - fixtures
from uploads.errors import LeaseLost, UploadBusy
from uploads.memory import MemoryStore
from uploads.model import UploadRecord
from uploads.sql import SqlStore
from uploads.store import UploadStore

LEASE = 10.0


def test_one_holder_at_a_time_until_its_lease_expires(store: UploadStore, clock: FakeClock) -> None:
    store.begin_upload(draft(rows=5))
    assert store.acquire_lease("u1", "a", LEASE).state == "publishing"
    with pytest.raises(UploadBusy, match="being published by another request"):
        store.acquire_lease("u1", "b", LEASE)
    clock.now += LEASE - 1
    renewed = store.renew_lease("u1", "a", LEASE, confirmed=3)
    assert (renewed.state, renewed.confirmed) == ("publishing", 3), "progress is stored while publishing"
    clock.now += LEASE - 1
    assert store.publishing_now("u1") and store.interrupt_expired(LEASE) == [], "renewed: still a's"
    clock.now += 2
    assert store.interrupt_expired(LEASE) == ["u1"] and not store.publishing_now("u1")
    record = store.get("u1")
    assert (record.state, record.confirmed) == ("interrupted", 3)
    assert "stopped renewing its lease" in (record.publish_error or "")
    with pytest.raises(LeaseLost):
        store.renew_lease("u1", "a", LEASE, confirmed=4)
    retry = store.acquire_lease("u1", "b", LEASE)
    assert (retry.state, retry.confirmed, retry.publish_error) == ("publishing", 3, None)
    done = store.release_lease("u1", "b", confirmed=5, error=None)
    assert (done.state, done.confirmed) == ("queued", 5) and not store.publishing_now("u1")
    assert store.acquire_lease("u1", "c", LEASE).state == "queued" and not store.publishing_now("u1"), (
        "nothing left to publish: no lease taken"
    )


def test_a_late_release_by_a_replaced_holder_leaves_the_new_one_publishing(
    store: UploadStore, clock: FakeClock
) -> None:
    store.begin_upload(draft(rows=5))
    store.acquire_lease("u1", "a", LEASE)
    clock.now += LEASE + 1
    store.acquire_lease("u1", "b", LEASE)
    late = store.release_lease("u1", "a", confirmed=2, error="the RabbitMQ connection was lost")
    assert (late.state, late.confirmed, late.publish_error) == ("publishing", 2, None)
    assert store.publishing_now("u1")
    assert store.release_lease("u1", "b", confirmed=5, error=None).state == "queued"


def test_an_expired_lease_of_a_cancelled_upload_counts_its_unpublished_rows_cancelled(
    store: UploadStore, clock: FakeClock
) -> None:
    store.begin_upload(draft(rows=5))
    store.acquire_lease("u1", "a", LEASE)
    store.renew_lease("u1", "a", LEASE, confirmed=2)
    store.request_cancel("u1")
    clock.now += LEASE + 1
    assert store.interrupt_expired(LEASE) == ["u1"]
    record = store.get("u1")
    assert (record.state, record.confirmed, record.cancelled, record.pending) == ("cancelled", 2, 3, 2)


def test_a_new_upload_whose_producer_died_before_taking_the_lease_is_interrupted(
    store: UploadStore, clock: FakeClock
) -> None:
    store.begin_upload(draft(rows=5, created_at=clock.now))
    assert store.interrupt_expired(LEASE) == [], "just created: its lease comes next"
    clock.now += LEASE + 1
    assert store.interrupt_expired(LEASE) == ["u1"] and store.get("u1").state == "interrupted"


@pytest.fixture()
def job_type(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobType]:
    """A type with a queue of its own on the session's vhost (deleted after), RABBITMQ_URL pointing there."""
    for name, value in broker.env().items():
        monkeypatch.setenv(name, value)
    created = JobType(name="sleep", queue=f"q_lease_{uuid.uuid4().hex[:8]}")
    yield created
    with broker.channel() as channel:
        channel.queue_delete(created.queue)


def publish_under_lease(store: UploadStore, settings: LeaseSettings, job_type: JobType, rows: int) -> Callable:
    """Start publishing `rows` rows of upload u1 under a lease, on a thread; returns a function that waits for
    the run's (PublishResult, record)."""
    store.begin_upload(draft(rows=rows, created_at=store.clock()))
    _, lease = Leases(store, settings).acquire("u1")
    assert lease is not None
    bodies = ((row, row + 1, b'{"n":"1"}') for row in range(1, rows + 1))  # (row, line, body)
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["ran"] = lease.publish(lambda control: publish_rows(job_type, "u1", bodies, 2000, control=control))

    thread = threading.Thread(target=run)
    thread.start()

    def finished() -> tuple[PublishResult, UploadRecord]:
        thread.join(60)
        return outcome["ran"]

    return finished


def test_a_publisher_whose_lease_passed_to_another_producer_stops_publishing(broker: Broker, job_type: JobType) -> None:
    """Once the lease expired and another holder took it, the next renewal finds it gone and publishing stops,
    leaving the upload to the new holder."""
    clock = FakeClock()
    store = MemoryStore(100, DAY, clock=clock)
    rows = 300_000
    finished = publish_under_lease(store, LeaseSettings(LEASE, progress_seconds=0.05), job_type, rows)
    wait_until(lambda: store.get("u1").confirmed > 0, timeout=30, interval=0.01, what="progress stored")
    clock.now += LEASE + 1
    store.acquire_lease("u1", "another-producer", LEASE)
    result, record = finished()
    assert "lost its publishing lease" in (result.error or ""), result
    assert 0 < result.confirmed_through < rows and broker.queue_depth(job_type.queue) < rows
    assert record.state == "publishing" and store.publishing_now("u1"), "still published, by the new holder"


def test_a_publisher_that_cannot_renew_stops_sending_within_half_its_lease(
    broker: Broker, job_type: JobType, tmp_path: Path
) -> None:
    """The SQLite file locked by another writer: the renewal waits (up to the 30 s busy timeout), and the run
    stops sending on its own half a lease after its last renewal, before anyone else could take the upload."""
    path = tmp_path / "uploads.db"
    store = SqlStore(f"sqlite:///{path}", 100, DAY)
    lease = 2.0
    rows = 300_000
    finished = publish_under_lease(store, LeaseSettings(lease, progress_seconds=0.1), job_type, rows)
    wait_until(lambda: store.get("u1").confirmed > 0, timeout=30, interval=0.01, what="progress stored")
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # every write (the renewal, the release) waits for this one
        locked = time.monotonic()
        stopped_at, depth = broker.settled_depth(job_type.queue, quiet=0.5)
        stopped = stopped_at - locked
        # It stops sending half a lease after its last renewal; what it sent before still reaches the queue.
        assert stopped < lease, f"rows still arrived {stopped:.1f} s after its last renewal: past its lease"
        assert depth < rows
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    result, record = finished()
    assert "could not renew its publishing lease in time" in (result.error or ""), result
    assert (record.state, record.confirmed) == ("interrupted", result.confirmed_through)
    store.close()
