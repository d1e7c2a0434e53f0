"""Poison rows that crash or hang their worker end in `.dead` too, with real processes and a real broker."""

from __future__ import annotations

import pytest

from harness.broker import Broker
from harness.processes import Service
from harness.waiting import wait_until
from tests.support.worker_harness import Harness, harness  # noqa: F401 - the fixture


@pytest.mark.job_settings({"max_attempts": 3, "retry_delay_seconds": 0.05})
def test_row_that_kills_its_worker_ends_in_dead_after_max_attempts(harness: Harness, broker: Broker) -> None:
    upload_id = harness.enqueue([{"n": 0, "exit": 1}] + [{"n": i} for i in range(1, 10)])
    workers: list[Service] = []

    def replace_dead_workers() -> bool:
        if not workers or workers[-1].process.poll() is not None:
            workers.append(harness.start_worker(f"w{len(workers) + 1}"))
        return harness.depth(".dead") == 1

    wait_until(replace_dead_workers, timeout=120, interval=0.2, what="the poison row in .dead")
    assert harness.started().count(f"{upload_id}:1") == 3, "the handler met the row max_attempts times"
    assert [worker.process.returncode for worker in workers[:3]] == [1, 1, 1]
    [(properties, _)] = broker.drain(harness.queue + ".dead")
    assert properties.message_id == f"{upload_id}:1" and properties.headers["x-attempts"] == 3
    assert "died or lost its connection" in properties.headers["x-error"]
    harness.wait_records(9, timeout=30)
    assert {record["id"] for record in harness.records()} == {f"{upload_id}:{n}" for n in range(2, 11)}


@pytest.mark.job_settings({"timeout_seconds": 1, "max_attempts": 1})
def test_hung_handler_is_cut_at_timeout_seconds_and_the_worker_exits_non_zero(harness: Harness, broker: Broker) -> None:
    upload_id = harness.enqueue([{"n": 1, "sleep_ms": 3_600_000}, {"n": 2}])
    worker = harness.start_worker("w1")
    assert worker.process.wait(30) == 3
    [(properties, _)] = broker.drain(harness.queue + ".dead")
    assert properties.message_id == f"{upload_id}:1"
    assert properties.headers["x-error"] == "timed out after 1 s"
    assert "handler timed out" in worker.log()
    wait_until(lambda: harness.depth() == 1 and harness.unacked() == 0, timeout=10, what="the other row back, unharmed")
    harness.start_worker("w2")
    [record] = harness.wait_records(1, timeout=30)
    assert record == {"id": f"{upload_id}:2", "attempt": 1, "worker": "w2", "redelivered": False}


@pytest.mark.job_settings({"timeout_seconds": 1.5, "max_attempts": 2, "concurrency": 2, "retry_delay_seconds": 60})
def test_timeout_beside_other_rows_fails_only_the_hung_row_and_gives_the_rest_back(harness: Harness) -> None:
    upload_id = harness.enqueue([{"n": 1, "sleep_ms": 3_600_000}] + [{"n": i, "sleep_ms": 100} for i in range(2, 30)])
    worker = harness.start_worker("w1")
    assert worker.process.wait(60) == 3
    assert harness.depth(".retry") == 1, "the hung row waits for its second attempt"
    done = {record["id"] for record in harness.records()}
    assert f"{upload_id}:1" not in done and len(done) + harness.depth() == 28, "every other row done or given back"
    wait_until(lambda: harness.unacked() == 0, timeout=10, what="nothing left unacked")
