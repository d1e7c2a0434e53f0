"""The tracker in process, on a real broker (a vhost of its own), real stores and real threads.

A tracker thread that really ends (told to stop behind the watchdog's back,
as a bug would end it) is named in the status /healthz serves and replaced,
and the new one counts. On Postgres, a report the database refuses is set
aside alone, and a database that turns read-only makes reports wait, never
sets them aside.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from common.outcomes import DEAD_OUTCOMES_QUEUE, REJECT_DETAIL_HEADER, REJECT_REASON_HEADER, RowOutcome
from harness.broker import Broker, create_vhost, delete_vhost
from harness.waiting import wait_until
from tests.support.outcomes import publish_reports
from uploads.model import UploadRecord
from uploads.settings import UploadSettings
from uploads.sql import SqlStore
from uploads.tracker import Tracker, TrackerState


@pytest.fixture()
def own_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    created = create_vhost()
    for name, value in created.env().items():
        monkeypatch.setenv(name, value)
    yield created
    delete_vhost(created)


def test_a_tracker_thread_that_ended_is_named_and_replaced(
    own_broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="uploads.tracker")
    store = SqlStore(f"sqlite:///{tmp_path / 'uploads.db'}", 100, 86_400.0)
    store.begin_upload(UploadRecord("u1", "sleep", "data.csv", 2, ["a"], created_at=time.time()))
    store.mark_published("u1", 2, None)
    tracker = Tracker(store, UploadSettings(tracker_stall_seconds=2))
    tracker.start()
    try:
        wait_until(lambda: tracker.status()["state"] == TrackerState.CONSUMING, timeout=10, what="the tracker up")
        publish_reports(own_broker, "sleep", [[RowOutcome("u1", 1, "succeeded")]])
        wait_until(lambda: store.get("u1").succeeded == 1, timeout=10, what="the first report applied")
        first = tracker._loop
        first.stop()  # the thread ends while the tracker is meant to run
        first.join(10)
        wait_until(lambda: tracker.status()["restarts"] == 1, timeout=10, what="a new tracker thread")
        assert "tracker: thread died (no reason recorded); starting a new tracker thread" in caplog.text
        publish_reports(own_broker, "sleep", [[RowOutcome("u1", 2, "succeeded")]])
        wait_until(lambda: store.get("u1").state == "done", timeout=10, what="the new thread counting")
        assert tracker.status()["problem"] is None and tracker._loop is not first
    finally:
        tracker.stop()
        store.close()


def test_only_the_report_the_database_refuses_is_dead_lettered_never_good_ones_for_a_store_problem(
    own_broker: Broker,
    fresh_postgres_url: str,
    postgres_server,  # noqa: F811
) -> None:
    """A constraint the database enforces refuses one report's value: that report is set aside, named, and the
    rest of its batch applied. Then the database turns read-only (as after a failover): reports wait, unacked,
    and are applied when it is writable again; nothing more is set aside."""
    database = fresh_postgres_url.rsplit("/", 1)[1]
    admin = f"host={postgres_server.host} port={postgres_server.port} user=postgres dbname=postgres"
    store = SqlStore(fresh_postgres_url, 100, 86_400.0)
    store.begin_upload(UploadRecord("u1", "sleep", "data.csv", 4, ["a"], created_at=time.time()))
    store.mark_published("u1", 4, None)
    with store.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE uploads ADD CONSTRAINT no_dead_rows CHECK (dead = 0)")
    publish_reports(own_broker, "sleep", [[RowOutcome("u1", 1, "succeeded")], [RowOutcome("u1", 2, "dead")]])
    tracker = Tracker(store, UploadSettings(tracker_stall_seconds=30))
    tracker.start()
    try:
        wait_until(lambda: store.get("u1").succeeded == 1, timeout=20, what="the good report of the batch applied")
        (refused,) = wait_until(lambda: own_broker.drain(DEAD_OUTCOMES_QUEUE), timeout=10, what="the refused one")
        assert refused[0].headers[REJECT_REASON_HEADER] == "store-refused"
        assert "no_dead_rows" in refused[0].headers[REJECT_DETAIL_HEADER]

        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
            connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
        publish_reports(own_broker, "sleep", [[RowOutcome("u1", 3, "succeeded")], [RowOutcome("u1", 4, "succeeded")]])
        unavailable = wait_until(
            lambda: (lambda s: s if s["state"] == TrackerState.STORE_UNAVAILABLE else None)(tracker.status()),
            timeout=20,
            what="the tracker to say the store is unavailable",
        )
        assert "read-only" in unavailable["reason"]
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
            connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
        wait_until(lambda: store.get("u1").succeeded == 3, timeout=40, what="the waiting reports applied")
        assert own_broker.drain(DEAD_OUTCOMES_QUEUE) == [], "no good report set aside for the store's state"
        assert tracker.status()["dead_lettered"] == 1
    finally:
        tracker.stop()
        store.close()
