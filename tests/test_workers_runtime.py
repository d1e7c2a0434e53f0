"""The worker runtime with real worker processes and a real broker: at-least-once, retries, dead letters, stops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pika
import pytest

from common.control_messages import CONTROL_EXCHANGE, STOP_COMMAND, declare_control_exchanges, stop_routing_key
from harness.broker import Broker
from harness.processes import REPO
from harness.waiting import wait_until
from tests.support.proxy import CuttableProxy
from tests.support.worker_harness import Harness, harness  # noqa: F401 - the fixture


def test_every_row_is_processed_exactly_once(harness: Harness) -> None:
    workers = [harness.start_worker(name) for name in ("w1", "w2", "w3")]
    for worker in workers:
        wait_until(
            lambda worker=worker: '"event": "consuming"' in worker.log(), timeout=30, what="every worker consuming"
        )
    upload_id = harness.enqueue([{"n": i, "sleep_ms": 10} for i in range(60)])
    records = harness.wait_records(60)
    wait_until(lambda: harness.depth() == 0 and harness.unacked() == 0, timeout=30, what="the queue to drain")
    ids = Counter(record["id"] for record in harness.records())
    assert set(ids) == {f"{upload_id}:{row}" for row in range(1, 61)}
    assert max(ids.values()) == 1
    assert not any(record["redelivered"] for record in records)
    assert len({record["worker"] for record in records}) > 1, "work was shared between the workers"


def test_row_failing_twice_succeeds_on_attempt_three(harness: Harness) -> None:
    upload_id = harness.enqueue([{"n": 1, "fail_until": 3}])
    worker = harness.start_worker("w1")
    [record] = harness.wait_records(1)
    assert record == {"id": f"{upload_id}:1", "attempt": 3, "worker": "w1", "redelivered": False}
    wait_until(
        lambda: harness.depth() + harness.depth(".retry") + harness.depth(".dead") == 0, timeout=10, what="empty queues"
    )
    events = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    assert [e["attempt"] for e in events if e["event"] == "failed, retry"] == [1, 2]


def test_poison_row_is_parked_and_does_not_block_the_rest(harness: Harness, broker: Broker) -> None:
    rows = [{"n": 0, "fail_until": 99}] + [{"n": i, "sleep_ms": 20} for i in range(1, 20)]
    upload_id = harness.enqueue(rows)
    harness.start_worker("w1")
    records = harness.wait_records(19)
    assert f"{upload_id}:1" not in {record["id"] for record in records}
    wait_until(lambda: harness.depth(".dead") == 1, timeout=30, what="the poison row in .dead")
    [(properties, body)] = broker.drain(harness.queue + ".dead")
    assert json.loads(body)["n"] == "0"
    assert properties.message_id == f"{upload_id}:1"
    assert properties.headers["x-attempts"] == 3
    assert "planned failure on attempt 3" in properties.headers["x-error"]
    assert properties.headers["upload_id"] == upload_id
    assert properties.headers["x-original-queue"] == harness.queue
    assert properties.delivery_mode == 2


def test_unreadable_message_goes_straight_to_dead(harness: Harness, broker: Broker) -> None:
    worker = harness.start_worker("w1")
    wait_until(lambda: '"event": "consuming"' in worker.log(), timeout=30, what="the worker to declare and consume")
    with broker.channel() as channel:
        channel.basic_publish(
            "", harness.queue, b"not json", pika.BasicProperties(message_id="manual:1", delivery_mode=2)
        )
    wait_until(lambda: harness.depth(".dead") == 1, timeout=30, what="the unreadable message in .dead")
    [(properties, _)] = broker.drain(harness.queue + ".dead")
    assert "unreadable body" in properties.headers["x-error"]


def test_kill_9_mid_row_spends_an_attempt_and_another_worker_finishes_it(harness: Harness) -> None:
    upload_id = harness.enqueue([{"n": 1, "sleep_ms": 4000}])
    victim = harness.start_worker("victim")
    wait_until(lambda: harness.started(), timeout=30, what="the victim to start the row")
    victim.signal(signal.SIGKILL)
    rescuer = harness.start_worker("rescuer")
    [record] = harness.wait_records(1, timeout=60)
    # The redelivery counts as attempt 1 spent: the row comes back through the retry queue as attempt 2.
    assert record == {"id": f"{upload_id}:1", "attempt": 2, "worker": "rescuer", "redelivered": False}
    assert "died or lost its connection" in rescuer.log()


@pytest.mark.job_settings({"prefetch": 4})
def test_sigterm_mid_row_finishes_acks_and_returns_the_rest(harness: Harness) -> None:
    upload_id = harness.enqueue([{"n": i, "sleep_ms": 1500} for i in range(4)])
    worker = harness.start_worker("w1")
    wait_until(lambda: harness.started(), timeout=30, what="the first row to start")
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(30) == 0
    assert harness.records() == [{"id": f"{upload_id}:1", "attempt": 1, "worker": "w1", "redelivered": False}]
    wait_until(lambda: harness.depth() == 3 and harness.unacked() == 0, timeout=10, what="three rows back in the queue")


def test_stop_request_from_the_scaler_stops_gracefully(harness: Harness, broker: Broker) -> None:
    harness.enqueue([{"n": 1, "sleep_ms": 1500}, {"n": 2}])
    worker = harness.start_worker("w1")
    wait_until(lambda: harness.started(), timeout=30, what="a row in progress")
    with broker.channel() as channel:
        declare_control_exchanges(channel)
        channel.basic_publish(CONTROL_EXCHANGE, stop_routing_key("w1"), STOP_COMMAND)
    assert worker.process.wait(30) == 0
    assert len(harness.records()) == 1
    assert "scaler stop request" in worker.log()


def test_idle_worker_stops_at_once(harness: Harness) -> None:
    worker = harness.start_worker("w1")
    wait_until(lambda: '"event": "consuming"' in worker.log(), timeout=30, what="the worker to consume")
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(5) == 0


def test_connection_drop_reconnects_and_drains(harness: Harness, broker: Broker) -> None:
    proxy = CuttableProxy()
    try:
        upload_id = harness.enqueue([{"n": i, "sleep_ms": 30} for i in range(40)])
        worker = harness.start_worker("w1", {"RABBITMQ_URL": proxy.url(quote(broker.vhost, safe=""))})
        wait_until(lambda: len(harness.records()) >= 5, timeout=30, what="some rows processed")
        proxy.cut()
        wait_until(lambda: "connection lost" in worker.log(), timeout=30, what="the worker to notice")
        proxy.restore()
        wait_until(
            lambda: {f"{upload_id}:{n}" for n in range(1, 41)} <= {r["id"] for r in harness.records()},
            timeout=60,
            what="every row processed after the reconnect",
        )
        wait_until(lambda: harness.depth() == 0, timeout=10, what="the queue to drain")
    finally:
        proxy.close()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"work": {"queue": "q_missing_type"}}, "unknown job type 'nope'"),
        ({"nope": {"queue": "q_no_handler"}}, "no handler module workers.nope.handler"),
        ({"nope": {"queue": "q_broken", "handler": "tests.handlers.broken"}}, "broken on purpose"),
    ],
)
def test_unusable_type_or_handler_exits_2_with_a_message(tmp_path: Path, config: dict, expected: str) -> None:
    path = tmp_path / "jobs.config.json"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "workers", "nope"],
        cwd=REPO,
        env={"JOBS_CONFIG": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert expected in result.stderr


def test_rows_are_logged_at_debug_with_a_periodic_summary_at_info(harness: Harness) -> None:
    upload_id = harness.enqueue([{"n": i} for i in range(20)])
    worker = harness.start_worker("w1", {"WORKER_LOG_LEVEL": "info", "WORKER_SUMMARY_SECONDS": "0.5"})
    harness.wait_records(20)
    events = wait_until(
        lambda: (
            (e := [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")])
            and sum(event.get("succeeded", 0) for event in e if event["event"] == "progress") == 20
            and e
        ),
        timeout=30,
        what="progress lines adding up to 20 rows",
    )
    assert not [event for event in events if event.get("message_id", "").startswith(upload_id)], "no per-row line"


def test_bad_worker_settings_stop_the_worker_with_a_message(harness: Harness) -> None:
    worker = harness.start_worker("w1", {"WORKER_REPORT_OUTCOMES": "maybe"})
    assert worker.process.wait(30) == 2
    assert "WORKER_REPORT_OUTCOMES='maybe'" in worker.log()
