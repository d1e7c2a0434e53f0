"""Publishing leases: in the store, on every backend (one publisher per upload, expiry reads `interrupted`), and
a real publisher that loses its lease stops."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from jobtypes.config import JobType
from producer.leases import Leases, LeaseSettings
from producer.publisher import publish_rows
from tests.support.broker import Broker
from tests.support.k8s_fakes import FakeClock
from tests.support.postgres import fresh_postgres_url, postgres_server  # noqa: F401
from tests.support.waiting import wait_until
from tests.test_uploads_store import DAY, backend, clock, draft, store  # noqa: F401 - fixtures
from uploads.errors import LeaseLost, UploadBusy
from uploads.memory import MemoryStore
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


def test_a_publisher_whose_lease_passed_to_another_producer_stops_publishing(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real publishing to RabbitMQ under a lease: once the lease expired and another holder took it, the next
    renewal finds it gone and publishing stops, leaving the upload to the new holder."""
    for name, value in broker.env().items():
        monkeypatch.setenv(name, value)
    clock = FakeClock()
    store = MemoryStore(100, DAY, clock=clock)
    rows = 300_000
    store.begin_upload(draft(rows=rows, created_at=clock.now))
    leases = Leases(store, LeaseSettings(lease_seconds=LEASE, progress_seconds=0.05, check_seconds=1))
    _, lease = leases.acquire("u1")
    assert lease is not None
    job_type = JobType(name="sleep", queue=f"q_lease_{uuid.uuid4().hex[:8]}")
    bodies = ((row, b'{"n":"1"}') for row in range(1, rows + 1))
    outcome: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: outcome.update(
            ran=lease.publish(lambda control: publish_rows(job_type, "u1", bodies, 2000, control=control))
        )
    )
    thread.start()
    try:
        wait_until(lambda: store.get("u1").confirmed > 0, timeout=30, interval=0.01, what="progress stored")
        clock.now += LEASE + 1
        store.acquire_lease("u1", "another-producer", LEASE)
        thread.join(30)
        result, record = outcome["ran"]
        assert "lost its publishing lease" in (result.error or ""), result
        assert 0 < result.confirmed_through < rows and broker.queue_depth(job_type.queue) < rows
        assert record.state == "publishing" and store.publishing_now("u1"), "still published, by the new holder"
    finally:
        thread.join(30)
        with broker.channel() as channel:
            channel.queue_delete(job_type.queue)
