"""Batch handlers and concurrent rows, with real worker processes and a real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.broker import Broker
from harness.waiting import wait_until
from tests.support.worker_harness import Harness, harness  # noqa: F401 - the fixture

BATCHES = {
    "handler": "tests.handlers.batch_recorder",
    "batch_size": 8,
    "batch_wait_ms": 200,
    "max_attempts": 2,
    "retry_delay_seconds": 0.05,
}


@pytest.mark.job_settings(BATCHES)
def test_batch_handler_gets_up_to_batch_size_rows_and_a_failing_batch_retries_only_the_bad_row(
    harness: Harness, broker: Broker
) -> None:
    rows = [{"n": i, "bad": "1" if i == 13 else ""} for i in range(40)]
    upload_id = harness.enqueue(rows)
    harness.start_worker("w1")
    wait_until(lambda: harness.depth(".dead") == 1, timeout=60, what="the bad row in .dead")
    batches = wait_until(
        lambda: (b := harness.records()) and sum(batch["size"] for batch in b) == 39 and b,
        timeout=30,
        what="39 good rows stored",
    )
    stored = [message_id for batch in batches for message_id in batch["ids"]]
    assert sorted(stored) == sorted(f"{upload_id}:{n}" for n in range(1, 41) if n != 14), "each good row once"
    assert max(batch["size"] for batch in batches) == 8 and all(batch["size"] <= 8 for batch in batches)
    [(properties, body)] = broker.drain(harness.queue + ".dead")
    assert properties.message_id == f"{upload_id}:14" and json.loads(body)["n"] == "13"
    assert "1 bad row(s) in a batch of 1" in properties.headers["x-error"], "the bad row was isolated"
    wait_until(lambda: harness.depth() == 0 and harness.unacked() == 0, timeout=10, what="every row acked")


@pytest.mark.job_settings({"concurrency": 4})
def test_concurrency_handles_rows_at_once(harness: Harness, tmp_path: Path) -> None:
    upload_id = harness.enqueue([{"n": i, "sleep_ms": 400} for i in range(12)])
    harness.start_worker("w1")
    harness.wait_records(12, timeout=60)
    assert {record["id"] for record in harness.records()} == {f"{upload_id}:{n}" for n in range(1, 13)}
    spans = [tuple(map(float, line.split())) for line in (tmp_path / "record.jsonl.spans").read_text().splitlines()]
    overlap = max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)
    assert overlap >= 3, f"at most {overlap} rows were in progress at once"


@pytest.mark.job_settings({"batch_size": 10})
def test_batch_size_without_a_batch_handler_is_refused(harness: Harness) -> None:
    worker = harness.start_worker("w1")
    assert worker.process.wait(30) == 2
    assert "batch_size is 10 but tests.handlers.recorder has no handle_batch" in worker.log()
