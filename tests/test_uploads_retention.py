"""Retention removes finished uploads only (real producer, scaler, workers and RabbitMQ).

An upload still running when `UPLOADS_RETENTION_DAYS` have passed since it was
created keeps its record, its later reports and its Idempotency-Key: a retry
of the same file finishes the same record instead of publishing every row again.
"""

from __future__ import annotations

import time

from harness.broker import Broker
from harness.stack import Stack
from harness.waiting import wait_until
from tests.support.uploads import record, rows_published, wait_record

RETENTION_SECONDS = 2.0
SLEEP = {"handler": "sleep", "threshold": 1, "max_workers": 2, "idle_seconds": 2, "env": {"SLEEP_MS": "0"}}


def rows(count: int) -> bytes:
    return b"n\n" + b"".join(b"%d\n" % n for n in range(1, count + 1))


def test_retention_removes_finished_uploads_and_keeps_an_unfinished_one(broker: Broker, tmp_path) -> None:
    stack = Stack(
        broker,
        tmp_path,
        {"quick": SLEEP, "held": SLEEP},
        env={"UPLOADS_RETENTION_DAYS": str(RETENTION_SECONDS / 86_400)},
    ).start()
    try:
        assert stack.post(f"{stack.scaler_url}/api/job-types/held/pause").status_code == 200
        finished = stack.upload(rows(20), "quick").json()["upload_id"]
        first = stack.upload(rows(30), "held", headers={"Idempotency-Key": "held-file"})
        assert first.status_code == 200, first.text
        held = first.json()["upload_id"]
        done = wait_record(stack, finished, lambda r: r["state"] == "done", "the quick upload to finish")
        assert rows_published(stack, "quick") == 20, "the metric this test reads counts published rows"

        # Both are now older than the retention: one finished that long ago, the other created that long ago.
        wait_until(
            lambda: time.time() > done["finished_at"] + RETENTION_SECONDS + 0.5,
            timeout=10,
            what="the retention period to pass",
        )
        stack.producer.stop()
        stack.start_producer()  # the tracker purges when it starts (and hourly)
        wait_until(
            lambda: stack.get(f"{stack.producer_url}/uploads/{finished}").status_code == 404,
            timeout=30,
            what="the finished upload to be removed",
        )
        kept = record(stack, held)
        assert (kept["state"], kept["rows"], kept["succeeded"]) == ("queued", 30, 0), kept

        assert stack.post(f"{stack.scaler_url}/api/job-types/held/resume").status_code == 200
        final = wait_record(stack, held, lambda r: r["state"] == "done", "the held upload to finish", timeout=60)
        assert (final["succeeded"], final["dead"], final["pending"]) == (30, 0, 0), "its later reports all counted"

        retry = stack.upload(rows(30), "held", headers={"Idempotency-Key": "held-file"})
        assert retry.status_code == 200 and retry.json()["upload_id"] == held, "the key still names the same upload"
        assert rows_published(stack, "held") == 0, "nothing was published again (this producer process published none)"
        assert record(stack, held)["succeeded"] == 30
    finally:
        stack.stop()
