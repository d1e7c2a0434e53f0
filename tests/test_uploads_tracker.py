"""The tracker's watchdog, in process: a tracker thread that ends is named and replaced, and counting goes on.

Real broker (a vhost of its own), real SQLite store, real threads. The thread
really ends (told to stop behind the watchdog's back, as a bug would end it);
the watchdog sees it, says so in the status /healthz serves, and starts
another, which applies the next report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobtypes.outcomes import RowOutcome
from tests.support.broker import Broker, create_vhost, delete_vhost
from tests.support.outcomes import publish_reports
from tests.support.waiting import wait_until
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
