"""Nothing a report or a row's headers carry gets past the tracker's checks into a store that cannot take it.

Property tests on SQLite and on a real PostgreSQL server: reports built the
way workers build them (`row_outcome` over a delivery whose message id and
headers are anything a publisher can set), and raw report JSON with any
values, go through `check_batch` and the store. The store never raises, every
row it is given is within the upload's bounds, and every row within them is
given to it (no good row is set aside). Then the failures the tracker tells
apart: a value the database refuses is one report's doing; a database that
refuses connections, or is read-only, is the store's state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pika
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.outcomes import OUTCOMES, REPLAY_HEADER, OutcomeReport, RowOutcome
from uploads.errors import StoreUnavailable
from uploads.model import UploadRecord
from uploads.report_checks import MAX_STORED_INT, Reason, check_batch, storable
from uploads.sql import SqlStore
from uploads.store import UploadStore
from uploads.tracker import report_at_fault
from workers.delivery import Delivery, Outcome, Status
from workers.disposition import ATTEMPT_HEADER
from workers.hooks.outcomes import row_outcome

ROWS = 10
MAX_BYTES = 64 * 1024
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UploadStore]:
    """A store holding upload `u1` of ROWS rows, published, with one replay issued (rows 9 and 10 replayed)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'uploads.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    created = SqlStore(url, 100, 86_400.0)
    created.begin_upload(UploadRecord("u1", "sales", "data.csv", ROWS, ["a"], created_at=1.0))
    created.mark_published("u1", ROWS, None)
    created.apply([RowOutcome("u1", row, "dead", body='{"a": "1"}') for row in (9, 10)])
    assert created.claim_replay("u1").number == 1
    yield created
    created.close()


def in_bounds(row: RowOutcome) -> bool:
    """The rule, restated: what `u1` (ROWS rows, 1 replay issued) can be given; unknown uploads are ignored."""
    storable_row = 1 <= row.attempts <= MAX_STORED_INT and (row.body is None or storable(row.body))
    if row.upload_id != "u1":
        return storable_row and len(row.upload_id) <= 64 and storable(row.upload_id)
    return storable_row and 1 <= row.row <= ROWS and 0 <= row.replay <= 1


def apply_checked(store: UploadStore, bodies: list[bytes]) -> list:
    """What the tracker does with a batch: check it, give the store the accepted rows (which must not raise)."""
    checked = check_batch(bodies, store.get_many, MAX_BYTES)
    store.apply([row for report in checked for row in report.accepted])
    record = store.get("u1")
    assert 0 <= record.pending <= ROWS and min(record.succeeded, record.dead, record.cancelled, record.retrying) >= 0
    return checked


# Anything a header or a message id can hold (pika encodes these types).
header_values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.from_regex(r"\A-?[0-9]{1,25}\Z"),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.booleans(),
)
upload_ids = st.one_of(st.just("u1"), st.text(max_size=80), st.just("u1\x00"), st.just("u" * 65))
row_numbers = st.one_of(st.integers(min_value=-5, max_value=ROWS + 5), st.integers(min_value=-(2**70), max_value=2**70))
free_text = st.one_of(st.none(), st.text(max_size=50), st.just("a\x00b"), st.just("\ud800"))


@st.composite
def worker_rows(draw: st.DrawFn) -> RowOutcome | None:
    """What a worker reports for a delivery with any message id and headers (the real worker code builds it)."""
    headers = {"upload_id": draw(upload_ids), REPLAY_HEADER: draw(header_values), ATTEMPT_HEADER: draw(header_values)}
    properties = pika.BasicProperties(message_id=f"{headers['upload_id']}:{draw(row_numbers)}", headers=headers)
    delivery = Delivery(1, properties, draw(st.binary(max_size=40)), False, 0)
    status = draw(st.sampled_from([Status.SUCCEEDED, Status.CANCELLED, Status.FAILED]))
    return row_outcome(Outcome(delivery, status, error=draw(free_text)))


@PROPERTY
@given(rows=st.lists(worker_rows(), min_size=1, max_size=8))
def test_any_row_headers_a_worker_copies_are_checked_before_the_store(store: UploadStore, rows: list) -> None:
    rows = [row for row in rows if row is not None]
    checked = apply_checked(store, [OutcomeReport("w", "sales", rows).to_json()])[0]
    assert checked.accepted == [row for row in checked.accepted if in_bounds(row)], "only rows within bounds"
    assert len(checked.accepted) == sum(in_bounds(row) for row in rows), "every row within bounds is applied"
    assert sum(checked.rejected.values()) == len(rows) - len(checked.accepted)
    assert (checked.first is None) == (len(checked.accepted) == len(rows)), "a report with a bad row is set aside"


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner))
report_groups = st.fixed_dictionaries(
    {
        "upload_id": st.one_of(upload_ids, json_values),
        "rows": st.one_of(st.lists(row_numbers, max_size=5), json_values),
    },
    optional={
        "outcome": st.one_of(st.sampled_from(OUTCOMES), json_values),
        "attempts": st.one_of(row_numbers, json_values),
        "replay": st.one_of(row_numbers, json_values),
        "error": free_text,
        "body": free_text,
    },
)


@PROPERTY
@given(
    groups=st.lists(report_groups, max_size=4),
    envelope=st.dictionaries(st.sampled_from(["worker_id", "job_type", "extra"]), json_values),
    junk=st.binary(max_size=30),
)
def test_any_report_json_is_applied_or_set_aside_with_a_reason(
    store: UploadStore, groups: list, envelope: dict, junk: bytes
) -> None:
    report = json.dumps({"worker_id": "w", "job_type": "sales", **envelope, "groups": groups}).encode()
    well_formed, not_json, too_large = apply_checked(store, [report, junk, b" " * (MAX_BYTES + 1)])
    assert not_json.first is not None and not_json.first.reason is Reason.MALFORMED
    assert too_large.first is not None and too_large.first.reason is Reason.TOO_LARGE
    if well_formed.report is None:
        assert well_formed.first is not None and well_formed.first.reason is Reason.MALFORMED
        return
    assert all(in_bounds(row) for row in well_formed.accepted)
    assert len(well_formed.accepted) == sum(in_bounds(row) for row in well_formed.report.rows)


def test_a_replay_number_the_upload_never_issued_is_named(store: UploadStore) -> None:
    """The issue's message: `x-replay: "99999999999999999999"` on a real upload's row."""
    properties = pika.BasicProperties(
        message_id="u1:3", headers={"upload_id": "u1", REPLAY_HEADER: "99999999999999999999"}
    )
    row = row_outcome(Outcome(Delivery(1, properties, b"{}", False, 0), Status.SUCCEEDED))
    (checked,) = apply_checked(store, [OutcomeReport("w", "sales", [row, RowOutcome("u1", 4, "succeeded")]).to_json()])
    assert checked.first is not None and checked.first.reason is Reason.REPLAY
    assert "row 3 of upload 'u1': replay 99999999999999999999 was never issued (replays so far: 1)" in str(
        checked.first
    )
    assert [row.row for row in checked.accepted] == [4] and store.get("u1").succeeded == 1, "the good row counts"


def test_a_value_the_database_refuses_is_permanent(store: UploadStore) -> None:
    """Unchecked, the issue's replay number fails the store (Postgres: out of range; SQLite: OverflowError in the
    driver): the report's doing, so it is dead-lettered, never retried. A retrying row keeps a row state with its
    replay number (a succeeded one is only a bit, so its replay number is never stored)."""
    with pytest.raises(Exception) as refused:
        store.apply([RowOutcome("u1", 3, "retrying", replay=99999999999999999999)])
    assert report_at_fault(refused.value), refused.value


def test_a_database_read_only_or_refusing_connections_is_the_stores_state(
    fresh_postgres_url: str,
    postgres_server,  # noqa: F811
) -> None:
    store = SqlStore(fresh_postgres_url, 100, 86_400.0)
    store.begin_upload(UploadRecord("u1", "sales", "data.csv", ROWS, ["a"], created_at=1.0))
    database = fresh_postgres_url.rsplit("/", 1)[1]
    admin = f"host={postgres_server.host} port={postgres_server.port} user=postgres dbname=postgres"
    try:
        with psycopg.connect(admin, autocommit=True) as connection:  # as after a failover to a replica
            connection.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        store.engine.dispose()
        with pytest.raises(StoreUnavailable) as read_only:
            store.apply([RowOutcome("u1", 1, "succeeded")])
        assert "read-only" in read_only.value.message and not report_at_fault(read_only.value)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
        with pytest.raises(StoreUnavailable) as down:
            store.get_many({"u1"})
        assert not report_at_fault(down.value), down.value
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            connection.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
        store.close()
