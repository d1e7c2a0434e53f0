"""The upload store at real scale, on every backend: what a settled row costs, how replay and cancel stay
in bounded memory and short transactions, what retention may remove, and where a failed row's line comes from.

The bounds asserted are the README's ("Following an upload"): a million rows
that all succeed add at most 1 MB to the store (SQLite and PostgreSQL); replay
and cancel hold at most a few MB of Python memory whatever the number of rows
and no transaction runs longer than 1 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from harness.measure import median_seconds, peak_memory
from harness.waiting import wait_until
from producer.csv_rows import convert_rows
from producer.limits import RowLimits
from producer.row_publisher import file_rows
from tests.support.k8s_fakes import FakeClock
from tests.test_uploads_store import DAY, counts, draft, open_store, out, queued
from uploads.failed_rows import failed_rows_csv
from uploads.model import public
from uploads.sql import SqlStore, database_url
from uploads.store import PAGE_ROWS, UploadStore

MB = 1_000_000
#: Python memory a replay or a cancel may allocate at its peak, whatever the number of rows (tracemalloc).
MEMORY_BOUND = 4 * MB
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'uploads.db'}"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UploadStore]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'uploads.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    created = open_store(url, FakeClock(), max_failed_rows=10_000)
    yield created
    created.close()


def row_states(store: UploadStore, upload_id: str, rows: int) -> set[int]:
    """The rows that have a row state (the per-row storage)."""
    with store.transaction(write=False) as tx:
        return tx.numbers_between(upload_id, 1, rows)


def test_settled_rows_keep_no_row_state_and_the_first_final_outcome_wins(store: UploadStore) -> None:
    queued(store, rows=6)
    report = [
        out(1, "succeeded"),
        out(2, "retrying", error="e1"),
        out(3, "dead", body='{"a":"3"}', error="bad", line=9),
        out(4, "cancelled"),
    ]
    assert store.apply(report).changed == 4
    assert store.apply(report).changed == 0, "a report applied twice changes nothing"
    assert row_states(store, "u1", 6) == {2, 3}, "succeeded and cancelled rows are bits, not row states"
    # Later reports of settled rows, even one claiming a replay that never happened, change nothing.
    store.apply([out(1, "dead", body="{}"), out(4, "succeeded"), out(1, "succeeded", replay=7), out(3, "succeeded")])
    assert counts(store.get("u1")) == (1, 1, 1, 1, 3)
    # The retrying row succeeds: its row state goes, and so does a report of it after that.
    store.apply([out(2, "succeeded", attempts=2), out(2, "dead", attempts=3, body="{}")])
    assert row_states(store, "u1", 6) == {3}
    assert counts(store.get("u1")) == (2, 0, 1, 1, 2)
    # A replayed dead row that succeeds becomes a bit too; the first run's late reports are ignored.
    replay = store.claim_replay("u1")
    assert [row.row for row in replay.rows] == [3]
    store.apply([out(3, "succeeded", replay=1), out(3, "dead", replay=0, body="{}"), out(5, "succeeded")])
    store.apply([out(3, "dead", replay=1, body="{}"), out(6, "succeeded")])
    record = store.get("u1")
    assert counts(record) == (5, 0, 0, 1, 0) and record.state == "done"
    assert row_states(store, "u1", 6) == set()


def test_a_dead_rows_line_comes_from_its_report(store: UploadStore) -> None:
    """The line a worker copied from the row's message header; a report without one falls back to the record's."""
    store.begin_upload(draft(rows=3, line_breaks=[(1, 1)]))
    store.mark_published("u1", 3, None)
    store.apply([out(1, "dead", body='{"a":"x","b":"y"}', error="bad", line=40), out(3, "dead", body="{}")])
    rows = list(store.dead_rows("u1"))
    assert [(row.row, row.line) for row in rows] == [(1, 40), (3, None)]
    report = "".join(failed_rows_csv(store.get("u1"), rows, store.max_failed_rows)).splitlines()
    assert report == ["a,b,line,attempts,error", "x,y,40,1,bad", ",,4,1,"]


def test_a_million_succeeded_rows_add_at_most_a_megabyte(sql_url: str) -> None:
    store = SqlStore(sql_url, 1000, 30 * DAY)
    try:
        before = store.disk_bytes()
        queued(store, rows=MB)
        batches = [range(first, first + 20_000) for first in range(1, MB + 1, 20_000)]
        for rows in batches:
            store.apply([out(row, "succeeded") for row in rows])
        store.apply([out(row, "succeeded") for row in batches[7]])  # a batch redelivered: nothing changes
        record = store.get("u1")
        assert (record.state, record.succeeded, record.pending) == ("done", MB, 0)
        added = store.disk_bytes() - before
        assert added <= MB, f"{added} bytes for a million succeeded rows"
        assert row_states(store, "u1", MB) == set()
        # What GET /uploads/<id> and GET /uploads do with the store, with that upload in it: well under 50 ms.
        for read in (
            lambda: public(store.get("u1"), "/u", store.clock(), 1),
            lambda: [public(r, "/u", store.clock(), 1) for r in store.recent()],
        ):
            assert median_seconds(read) < 0.05
    finally:
        store.close()


def test_replay_claims_in_pages_with_flat_memory_and_short_transactions(sql_url: str) -> None:
    """Two uploads of 15,000 dead rows: one replayed under tracemalloc (memory), the other not (time)."""
    dead = 15_000
    store = SqlStore(sql_url, dead, 30 * DAY)
    try:
        body = '{"text":"' + "x" * 200 + '"}'
        for upload_id in ("u1", "u2"):
            queued(store, upload_id, rows=dead)
            store.apply(
                [out(row, "dead", upload_id, body=body, error="bad", line=row + 1) for row in range(1, dead + 1)]
            )
        with peak_memory() as peak:
            replay = store.claim_replay("u1")
            claimed = sum(1 for row in replay.rows if row.body == body and row.line == row.row + 1)
        assert claimed == dead and replay.claimed == dead
        assert peak() <= MEMORY_BOUND, f"replay of {dead} dead rows peaked at {peak()} bytes"
        store.longest_transaction_seconds = 0.0
        assert sum(1 for _ in store.claim_replay("u2").rows) == dead
        assert store.longest_transaction_seconds < 1.0
        assert counts(store.get("u1")) == counts(store.get("u2")) == (0, 0, 0, 0, dead)
    finally:
        store.close()


def test_cancel_of_two_million_rows_goes_by_chunks_with_flat_memory(sql_url: str) -> None:
    """Two uploads of 2M rows, 1,000 published: one cancelled under tracemalloc (memory), the other not (time)."""
    store = SqlStore(sql_url, 1000, 30 * DAY)
    rows = 2 * MB
    try:
        for upload_id in ("u1", "u2"):
            store.begin_upload(draft(upload_id, rows=rows))
            store.mark_published(upload_id, 1000, "the RabbitMQ connection was lost")
            reported = [out(row, "succeeded", upload_id) for row in range(1, 1001)]
            store.apply([*reported, out(5000, "retrying", upload_id), out(7000, "succeeded", upload_id)])
            store.request_cancel(upload_id)
        with peak_memory() as peak:
            cancelled = store.cancel_unpublished("u1")
        assert cancelled == rows - 1002, "every row after the confirmed ones, except the two reported"
        assert peak() <= MEMORY_BOUND, f"cancel of {rows} rows peaked at {peak()} bytes"
        store.longest_transaction_seconds = 0.0
        assert store.cancel_unpublished("u2") == rows - 1002
        assert store.longest_transaction_seconds < 1.0, "each chunk of 65,536 rows is its own short transaction"
        assert store.cancel_unpublished("u1") == 0, "cancelling again counts nothing twice"
        for upload_id in ("u1", "u2"):
            record = store.get(upload_id)
            assert (record.succeeded, record.cancelled, record.pending) == (1001, rows - 1002, 1)
    finally:
        store.close()


CANCEL_SCRIPT = """
import sys
from uploads.sql import SqlStore, database_url
SqlStore(sys.argv[1], 1000, 86400.0).cancel_unpublished("u1")
"""


def test_a_cancel_killed_half_way_is_finished_by_the_next_exactly(sql_url: str) -> None:
    """kill -9 the process cancelling 8M rows once some chunks are committed; cancelling again finishes exactly."""
    rows = 8 * MB
    store = SqlStore(sql_url, 1000, 30 * DAY)
    try:
        store.begin_upload(draft(rows=rows))
        store.request_cancel("u1")
        process = subprocess.Popen([sys.executable, "-c", CANCEL_SCRIPT, sql_url], cwd=REPO, env=os.environ.copy())
        try:
            wait_until(lambda: store.get("u1").cancelled > 0, timeout=60, interval=0.005, what="a first chunk")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        partly = store.get("u1").cancelled
        assert 0 < partly < rows, "killed half-way"
        store.cancel_unpublished("u1")
        record = store.get("u1")
        assert (record.cancelled, record.pending, record.state) == (rows, 0, "cancelled")
        assert record.finished_at is not None
    finally:
        store.close()


def test_retention_never_removes_an_unfinished_upload(store: UploadStore) -> None:
    clock = store.clock
    assert isinstance(clock, FakeClock)
    queued(store, "running", rows=2)
    queued(store, "finished", rows=1)
    store.begin_upload(draft("publishing", rows=5, key="k-1"))
    store.apply([out(1, "succeeded", upload_id="running"), out(1, "succeeded", upload_id="finished")])
    clock.now += 31 * DAY
    assert store.purge() == 1, "only the upload finished more than the retention period ago"
    assert {record.id for record in store.recent()} == {"running", "publishing"}
    assert store.begin_upload(draft("again", rows=5, key="k-1"))[0].id == "publishing", "its key still names it"
    store.apply([out(2, "succeeded", upload_id="running")])  # its last report still counts
    assert store.get("running").state == "done"
    assert store.purge() == 0, "finished just now"
    clock.now += 31 * DAY
    assert store.purge() == 1 and [record.id for record in store.recent()] == ["publishing"]


def test_a_replay_interrupted_half_way_is_repeated_safely(store: UploadStore) -> None:
    """A producer dies after claiming some rows of a replay: the next replay, once the first is stale, claims
    those rows too, and reports from either replay count each row once."""
    clock = store.clock
    assert isinstance(clock, FakeClock)
    rows, taken = 5 * PAGE_ROWS, 3 * PAGE_ROWS
    queued(store, rows=rows)
    store.apply([out(row, "dead", body="{}", line=row + 1) for row in range(1, rows + 1)])
    first = store.claim_replay("u1")
    assert len([row for _, row in zip(range(taken), first.rows, strict=False)]) == taken  # ...then it dies
    assert first.number == 1 and counts(store.get("u1")) == (0, 0, rows - taken, 0, taken)
    clock.now += 60
    early = store.claim_replay("u1")
    assert [row.row for row in early.rows] == list(range(taken + 1, rows + 1)), "the first is not stale yet"
    early.finish()
    clock.now += store.replay_stale_seconds
    again = store.claim_replay("u1")
    assert [row.row for row in again.rows] == list(range(1, taken + 1)) and again.number == 3
    again.finish()
    # Row 1 was in the queue after all (replay 1) and its report arrives, then replay 3's: it counts once.
    store.apply([out(1, "succeeded", replay=1), out(1, "succeeded", replay=3), out(2, "dead", replay=1, body="{}")])
    store.apply([out(row, "succeeded", replay=3) for row in range(2, taken + 1)])
    store.apply([out(row, "succeeded", replay=2) for row in range(taken + 1, rows + 1)])
    record = store.get("u1")
    assert counts(record) == (rows, 0, 0, 0, 0) and record.state == "done"
    assert list(store.claim_replay("u1").rows) == [], "nothing left to replay, nothing stale"


def test_any_file_shape_converts_in_flat_memory_and_each_row_keeps_its_line() -> None:
    """A blank line after every row, and a quoted newline in every other row: the producer keeps no line per row
    (the record gets the first row's line; each row's own goes into the bodies file, then its message)."""
    rows = 20_000  # a line breakpoint per row, as the record kept before, would take over 2 MB
    text = "a,b\n" + "".join(f'{n},"x\ny"\n\n' if n % 2 else f"{n},plain\n\n" for n in range(1, rows + 1))
    with tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as bodies:
        source.write(text.encode())
        source.seek(0)
        with peak_memory() as peak:
            converted = convert_rows(source, bodies, RowLimits())
        assert (converted.rows, converted.first_line) == (rows, 2)
        assert peak() <= MB, f"converting {rows} rows peaked at {peak()} bytes"
        bodies.seek(0)
        lines = [line for _, line, _ in file_rows(bodies)]
    # Row n starts after n - 1 rows of 2 lines (plain, blank) or 3 (quoted newline, blank), after the header.
    expected, line = [], 2
    for n in range(1, rows + 1):
        expected.append(line)
        line += 3 if n % 2 else 2
    assert lines == expected


OLD_ROWS_TABLE = """CREATE TABLE upload_rows (
    upload_id VARCHAR(64) NOT NULL, row INTEGER NOT NULL, state VARCHAR(16) NOT NULL, replay INTEGER NOT NULL,
    attempts INTEGER NOT NULL, error TEXT, body TEXT, PRIMARY KEY (upload_id, row))"""


def test_a_store_from_the_earlier_version_is_migrated_and_its_row_states_still_count(sql_url: str) -> None:
    """The earlier store kept a row state per reported row and no line: opening it adds the column, and a
    `succeeded` row state from then still wins over a later report."""
    engine = create_engine(database_url(sql_url))
    with engine.begin() as connection:
        connection.exec_driver_sql(OLD_ROWS_TABLE)
        connection.exec_driver_sql("INSERT INTO upload_rows VALUES ('u1', 1, 'succeeded', 0, 1, NULL, NULL)")
    engine.dispose()
    store = SqlStore(sql_url, 1000, 30 * DAY)
    try:
        queued(store, rows=3)
        assert store.apply([out(1, "dead", body="{}"), out(1, "succeeded")]).changed == 0, "row 1 had finished"
        store.apply([out(2, "dead", body="{}", line=7), out(3, "succeeded")])
        assert [(row.row, row.line) for row in store.dead_rows("u1")] == [(2, 7)]
        assert row_states(store, "u1", 3) == {1, 2}
    finally:
        store.close()
