"""The upload store's rules on every backend: memory, SQLite (a file) and a real PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.outcomes import RowOutcome
from tests.support.k8s_fakes import FakeClock
from uploads.errors import IdempotencyConflict, UploadNotFound
from uploads.memory import MemoryStore
from uploads.model import UploadRecord, public
from uploads.sql import SqlStore
from uploads.store import UploadStore

DAY = 86_400.0


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'uploads.db'}"
    # The plain libpq form a managed database gives: the store picks psycopg 3 itself.
    return request.getfixturevalue("fresh_postgres_url").replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


def open_store(url: str, clock: FakeClock, max_failed_rows: int = 1000) -> UploadStore:
    if url.startswith("memory:"):
        return MemoryStore(max_failed_rows, 30 * DAY, clock=clock)
    return SqlStore(url, max_failed_rows, 30 * DAY, clock=clock)


@pytest.fixture()
def store(backend: str, clock: FakeClock) -> Iterator[UploadStore]:
    created = open_store(backend, clock)
    yield created
    created.close()


def draft(upload_id: str = "u1", rows: int = 5, key: str | None = None, file_hash: str = "h1", **extra) -> UploadRecord:
    return UploadRecord(
        id=upload_id,
        job_type=extra.pop("job_type", "sales"),
        file_name="data.csv",
        rows=rows,
        header=["a", "b"],
        created_at=extra.pop("created_at", 10_000.0),
        idempotency_key=key,
        file_hash=file_hash,
        **extra,
    )


def queued(store: UploadStore, upload_id: str = "u1", rows: int = 5) -> UploadRecord:
    store.begin_upload(draft(upload_id, rows))
    return store.mark_published(upload_id, rows, None)


def out(row: int, outcome: str, upload_id: str = "u1", replay: int = 0, **extra) -> RowOutcome:
    return RowOutcome(upload_id=upload_id, row=row, outcome=outcome, replay=replay, **extra)


def counts(record: UploadRecord) -> tuple[int, int, int, int, int]:
    return record.succeeded, record.retrying, record.dead, record.cancelled, record.pending


def test_lifecycle_publishing_queued_running_done(store: UploadStore, clock: FakeClock) -> None:
    record, created = store.begin_upload(draft(rows=3))
    assert created and record.state == "publishing"
    assert store.mark_published("u1", 2, "the RabbitMQ connection was lost").state == "interrupted"
    assert store.get("u1").publish_error == "the RabbitMQ connection was lost"
    assert store.mark_published("u1", 1, None).confirmed == 2, "the confirmed count never goes down"
    assert store.mark_published("u1", 3, None).state == "queued"
    store.apply([out(1, "succeeded")])
    assert store.get("u1").state == "running" and store.in_progress() == 1
    clock.now += 5
    result = store.apply([out(2, "succeeded"), out(3, "dead", error="boom", body='{"a":"1","b":"2"}')])
    assert result.finals == {("sales", "succeeded"): 1, ("sales", "dead"): 1}
    assert [record.id for record in result.finished] == ["u1"] and store.in_progress() == 0
    final = store.get("u1")
    assert final.state == "done" and counts(final) == (2, 0, 1, 0, 0)
    assert final.finished_at == clock.now
    with pytest.raises(UploadNotFound):
        store.get("nope")


def test_reports_applied_again_or_out_of_order_count_once(store: UploadStore) -> None:
    queued(store)
    report = [out(1, "retrying", attempts=1, error="e1"), out(2, "succeeded"), out(3, "dead", body="{}")]
    assert store.apply(report).changed == 3
    assert store.apply(report).changed == 0, "re-applying a report (tracker killed before its ack) changes nothing"
    assert counts(store.get("u1")) == (1, 1, 1, 0, 3)
    # A redelivered row finished again by another worker: the first final outcome stays.
    store.apply([out(2, "dead", body="{}"), out(3, "succeeded")])
    assert counts(store.get("u1")) == (1, 1, 1, 0, 3)
    # A late `retrying` for a row that already finished is ignored; row 1 then finishes.
    store.apply([out(2, "retrying"), out(1, "succeeded", attempts=2)])
    assert counts(store.get("u1")) == (2, 0, 1, 0, 2)
    # Within one report, the first final outcome of a row wins too.
    store.apply([out(4, "cancelled"), out(4, "succeeded"), out(5, "succeeded")])
    assert counts(store.get("u1")) == (3, 0, 1, 1, 0)
    assert store.get("u1").state == "done"


def test_foreign_and_out_of_range_rows_are_ignored(store: UploadStore) -> None:
    queued(store, rows=2)
    assert store.apply([out(0, "succeeded"), out(3, "succeeded"), out(1, "succeeded", upload_id="other")]).changed == 0
    assert counts(store.get("u1")) == (0, 0, 0, 0, 2)


def test_replay_moves_dead_rows_back_and_ignores_older_reports(store: UploadStore) -> None:
    queued(store, rows=3)
    store.apply([out(1, "dead", body='{"a":"1"}', attempts=3, error="bad"), out(2, "succeeded")])
    store.apply([out(3, "dead", body='{"a":"3"}', attempts=3, error="bad")])
    assert store.get("u1").state == "done"

    replay = store.claim_replay("u1")
    claimed = list(replay.rows)
    assert replay.number == 1 and [row.row for row in claimed] == [1, 3] and replay.claimed == 2
    assert [row.body for row in claimed] == ['{"a":"1"}', '{"a":"3"}']
    record = store.get("u1")
    assert counts(record) == (1, 0, 0, 0, 2) and record.state == "running" and record.finished_at is None
    again = store.claim_replay("u1")
    assert list(again.rows) == [] and not again.started, "pressing replay again re-queues nothing"

    # A report from the first run arriving late (a redelivered original) is ignored.
    store.apply([out(1, "dead", replay=0, body="{}"), out(3, "succeeded", replay=0)])
    assert counts(store.get("u1")) == (1, 0, 0, 0, 2)
    # The replayed rows: one fails again and counts once as dead, even when reported twice.
    store.apply([out(1, "dead", replay=1, body='{"a":"1"}', error="still bad"), out(3, "succeeded", replay=1)])
    store.apply([out(1, "dead", replay=1, body='{"a":"1"}', error="still bad")])
    record = store.get("u1")
    assert counts(record) == (2, 0, 1, 0, 0) and record.state == "done" and record.replay == 1
    assert [(row.row, row.error) for row in store.dead_rows("u1")] == [(1, "still bad")]


def test_concurrent_replays_claim_each_row_once(backend: str, clock: FakeClock) -> None:
    stores = [open_store(backend, clock) for _ in range(2)] if not backend.startswith("memory") else []
    first = stores[0] if stores else open_store(backend, clock)
    queued(first, rows=200)
    first.apply([out(row, "dead", body="{}") for row in range(1, 201)])
    claimed: list[int] = []
    lock = threading.Lock()

    def press(store: UploadStore) -> None:
        for _ in range(3):
            rows = store.claim_replay("u1").rows
            with lock:
                claimed.extend(row.row for row in rows)

    threads = [threading.Thread(target=press, args=(stores[i % len(stores)] if stores else first,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(claimed) == list(range(1, 201))
    assert counts(first.get("u1")) == (0, 0, 0, 0, 200)
    for store in stores or [first]:
        store.close()


def test_release_replay_returns_unpublished_rows_to_dead(store: UploadStore) -> None:
    queued(store, rows=3)
    store.apply([out(row, "dead", body="{}") for row in (1, 2, 3)])
    replay = store.claim_replay("u1")
    assert len(list(replay.rows)) == 3
    store.apply([out(1, "succeeded", replay=replay.number)])
    assert store.release_replay("u1", replay.number, 0) == 2
    assert counts(store.get("u1")) == (1, 0, 2, 0, 0)


def test_cancel_is_listed_until_every_row_is_reported(store: UploadStore) -> None:
    queued(store, "u1", rows=3)
    queued(store, "u2", rows=2)
    store.apply([out(1, "succeeded")])
    assert store.request_cancel("u1").state == "cancelled"
    assert store.cancelled_in_progress() == ["u1"]
    store.apply([out(2, "cancelled"), out(3, "cancelled"), out(1, "succeeded", upload_id="u2")])
    record = store.get("u1")
    assert counts(record) == (1, 0, 0, 2, 0) and record.state == "cancelled" and record.finished_at is not None
    assert record.succeeded + record.dead + record.cancelled == record.rows
    assert store.cancelled_in_progress() == []
    assert store.get("u2").state == "running", "the other upload is untouched"
    assert store.request_cancel("u1").state == "cancelled"


def test_idempotency_key_same_file_same_record_other_file_conflict(store: UploadStore) -> None:
    first, created = store.begin_upload(draft("u1", key="k-1", file_hash="aaa"))
    again, created_again = store.begin_upload(draft("u2", key="k-1", file_hash="aaa"))
    assert created and not created_again and again.id == "u1"
    with pytest.raises(IdempotencyConflict, match="k-1.*another file"):
        store.begin_upload(draft("u3", key="k-1", file_hash="bbb"))
    with pytest.raises(IdempotencyConflict, match="another job type"):
        store.begin_upload(draft("u4", key="k-1", file_hash="aaa", job_type="sleep"))
    assert store.begin_upload(draft("u5", key="k-2"))[0].id == "u5"


def test_failed_row_details_are_capped(backend: str, clock: FakeClock) -> None:
    store = open_store(backend, clock, max_failed_rows=2)
    queued(store, rows=4)
    store.apply([out(row, "dead", body=f'{{"a":"{row}"}}', error="x" * 2000) for row in (1, 2, 3)])
    record = store.get("u1")
    assert record.dead == 3 and record.failed_details == 2 and record.details_dropped == 1
    rows = list(store.dead_rows("u1"))
    assert [(row.row, row.body is not None) for row in rows] == [(1, True), (2, True), (3, False)]
    assert len(rows[0].error) == 500
    described = public(record, "/uploads/u1", clock.now, store.max_failed_rows)
    assert described["failed_rows_cap"] == 2 and described["failed_rows_truncated"] is True
    replay = store.claim_replay("u1")
    assert len(list(replay.rows)) == 2 and replay.not_replayable == 1
    store.close()


def test_retention_removes_finished_records_and_their_rows(store: UploadStore, clock: FakeClock) -> None:
    queued(store, "old", rows=2)
    store.apply([out(1, "succeeded", upload_id="old"), out(2, "dead", upload_id="old", body="{}")])
    clock.now += 31 * DAY
    store.begin_upload(draft("new", created_at=clock.now))
    assert store.purge() == 1
    with pytest.raises(UploadNotFound):
        store.get("old")
    assert list(store.dead_rows("old")) == []
    assert [record.id for record in store.recent()] == ["new"]


def test_recent_newest_first_with_filters(store: UploadStore) -> None:
    for number, job_type in enumerate(["sales", "sleep", "sales"]):
        store.begin_upload(draft(f"u{number}", job_type=job_type, created_at=1000.0 + number))
    store.mark_published("u2", 5, None)
    assert [r.id for r in store.recent()] == ["u2", "u1", "u0"]
    assert [r.id for r in store.recent(job_type="sales")] == ["u2", "u0"]
    assert [r.id for r in store.recent(state="queued")] == ["u2"]
    assert [r.id for r in store.recent(limit=1)] == ["u2"]


def test_rate_and_eta_follow_recent_reports(store: UploadStore, clock: FakeClock) -> None:
    queued(store, rows=1000)
    for second in range(10):
        clock.now += 1
        store.apply([out(second * 10 + n, "succeeded") for n in range(1, 11)])
    record = store.get("u1")
    assert 8 <= record.rows_per_second(clock.now) <= 12
    assert 900 / 12 <= record.eta_seconds(clock.now) <= 900 / 8
    clock.now += 600
    assert record.rows_per_second(clock.now) < 0.1, "a stalled upload's rate decays to nothing"
    assert record.eta_seconds(clock.now) is None


def test_line_numbers_follow_breakpoints() -> None:
    record = draft(rows=6, line_breaks=[(1, 1), (3, 2), (5, 5)])
    assert [record.line_of(row) for row in range(1, 7)] == [2, 3, 5, 6, 10, 11]


def test_cancel_counts_rows_never_published_as_cancelled(store: UploadStore) -> None:
    store.begin_upload(draft(rows=10))
    store.mark_published("u1", 4, "the RabbitMQ connection was lost")
    store.apply([out(1, "succeeded"), out(6, "cancelled")])  # row 6 was in the queue, unconfirmed
    store.request_cancel("u1")
    assert store.cancel_unpublished("u1") == 5, "rows 5, 7, 8, 9 and 10 were never confirmed; 6 was reported"
    assert store.cancel_unpublished("u1") == 0
    record = store.get("u1")
    assert (record.succeeded, record.cancelled, record.pending, record.state) == (1, 6, 3, "cancelled")
    store.apply([out(n, "cancelled") for n in (2, 3, 4)] + [out(9, "succeeded")])
    record = store.get("u1")
    assert (record.succeeded, record.cancelled, record.pending) == (1, 9, 0) and record.finished_at is not None
    assert store.cancelled_in_progress() == []
