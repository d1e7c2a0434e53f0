"""Faults against the whole local stack: killed workers and scaler, RabbitMQ restarts, broken config.

Each test ends with every row processed at least once and adds a row to the
fault table printed at the end of the run (fault, rows sent, processed,
duplicates, lost, time to recover). RabbitMQ restarts are real: the broker
application is stopped and started with rabbitmqctl.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.broker import Broker, broker_is_up, start_broker_app, stop_broker_app
from harness.stack import Stack
from harness.waiting import wait_until
from tests.support import fault_report
from tests.support.uploads import interrupted_upload, wait_record
from workers.sample import main as sample_main

pytestmark = pytest.mark.fault
SLEEP = {
    "handler": "sleep",
    "threshold": 20,
    "burst_size": 5,
    "max_workers": 6,
    "idle_seconds": 3,
    "env": {"SLEEP_MS": "5"},
}


def csv_rows(count: int) -> bytes:
    return b"n\n" + b"".join(b"%d\n" % i for i in range(count))


@pytest.fixture()
def stack(broker: Broker, tmp_path: Path) -> Iterator[Stack]:
    created = Stack(
        broker,
        tmp_path,
        {"sleep": SLEEP},
        tick_seconds=0.5,
        env={"WORKER_HEARTBEAT_SECONDS": "0.5", "RABBITMQ_HEARTBEAT_SECONDS": "5"},
    )
    yield created
    created.stop()
    if not broker_is_up():
        start_broker_app()


#: The bound the README states: after each fault every row is processed within this many seconds.
RECOVERY_BOUND_SECONDS = 240


def expected_ids(upload_ids: list[str], rows: int) -> set[str]:
    return {f"{upload_id}:{n}" for upload_id in upload_ids for n in range(1, rows + 1)}


def settle(stack: Stack, fault: str, ids: set[str], started: float) -> None:
    """Wait until every expected row was processed, then record the table row; lost must be 0.

    Time to recover: from the fault (or the broker's return) until every row was processed.
    """
    wait_until(
        lambda: ids <= set(stack.processed()),
        timeout=RECOVERY_BOUND_SECONDS,
        interval=0.5,
        what=f"every row processed after: {fault}",
    )
    processed = stack.processed()
    seen = {message_id: count for message_id, count in processed.items() if message_id in ids}
    duplicates = sum(seen.values()) - len(seen)
    lost = len(ids - set(seen))
    recover = time.monotonic() - started
    fault_report.record(fault_report.FaultRow(fault, len(ids), len(seen), duplicates, lost, recover))
    assert lost == 0


def test_workers_killed_repeatedly_mid_rows(stack: Stack) -> None:
    stack.start()
    rows = 4000
    upload = stack.upload(csv_rows(rows), "sleep")
    assert upload.status_code == 200
    stack.wait_workers("sleep", lambda s: s["running"] >= 3, timeout=20, what="running workers")
    kills = 0
    rng = random.Random(7)
    last_kill = time.monotonic()
    while kills < 8 and stack.broker.queue_depth(stack.queue_of("sleep")) > 200:
        alive = stack.live_worker_pids()
        if alive:
            os.kill(rng.choice(list(alive.values())), signal.SIGKILL)
            kills += 1
            last_kill = time.monotonic()
        time.sleep(0.4)
    assert kills >= 4, "the run ended before enough workers were killed"
    wait_until(lambda: stack.broker.queue_depth(stack.queue_of("sleep")) == 0, timeout=120, what="the queue to drain")
    settle(stack, f"{kills} workers kill -9 mid-row", expected_ids([upload.json()["upload_id"]], rows), last_kill)
    failed = [w for w in stack.status()["workers"] if w["state"] == "failed"]
    assert failed, "killed workers show as failed"


def test_rabbitmq_restarted_during_an_upload(stack: Stack) -> None:
    stack.start_producer()
    rows = 100_000  # long enough that the broker is stopped mid-upload however fast publishing is
    queue = stack.queue_of("sleep")
    answer: dict = {}

    def upload() -> None:
        response = stack.upload(csv_rows(rows), "sleep", timeout=300)
        answer.update(status=response.status_code, **response.json())

    thread = threading.Thread(target=upload)
    thread.start()
    wait_until(lambda: stack.broker.queue_depth(queue) > 3000, timeout=60, interval=0.05, what="publishing under way")
    stop_broker_app()
    thread.join(120)
    restarted = time.monotonic()
    start_broker_app()
    assert answer["status"] == 503, answer
    confirmed = answer["confirmed"]
    in_queue = stack.broker.queue_depth(queue)
    assert 0 < confirmed <= in_queue <= confirmed + 2000, (confirmed, in_queue)
    retry = stack.upload(csv_rows(rows), "sleep", timeout=300)
    assert retry.status_code == 200
    fast = json.loads(stack.config_path.read_text())
    fast["sleep"]["env"]["SLEEP_MS"] = "0"
    stack.config_path.write_text(json.dumps(fast))
    stack.start_scaler()
    first_ids = {f"{answer['upload_id']}:{n}" for n in range(1, confirmed + 1)}
    settle(
        stack,
        f"RabbitMQ restart mid-upload: 503 with {confirmed} confirmed ({in_queue} in queue); re-upload",
        expected_ids([retry.json()["upload_id"]], rows) | first_ids,
        restarted,
    )


def test_rabbitmq_restarted_while_workers_consume(stack: Stack) -> None:
    stack.start()
    rows = 3000
    upload = stack.upload(csv_rows(rows), "sleep")
    stack.wait_workers("sleep", lambda s: s["running"] >= 3, timeout=20, what="running workers")
    wait_until(lambda: sum(stack.processed().values()) > 300, timeout=30, what="work under way")
    stop_broker_app()
    wait_until(lambda: not stack.status()["broker"]["reachable"], timeout=20, what="the scaler to see the broker gone")
    assert stack.type_status("sleep")["state"] == "broker-unreachable"
    start_broker_app()
    back = time.monotonic()
    wait_until(lambda: stack.status()["broker"]["reachable"], timeout=30, what="the scaler to see the broker back")
    settle(stack, "RabbitMQ restart while workers consume", expected_ids([upload.json()["upload_id"]], rows), back)


def test_scaler_killed_and_restarted_during_a_burst(stack: Stack) -> None:
    stack.start()
    rows = 3000
    upload = stack.upload(csv_rows(rows), "sleep")
    stack.wait_workers("sleep", lambda s: s["workers"] >= 5, timeout=20, what="a burst")
    before = set(stack.live_worker_pids())
    stack.scaler.signal(signal.SIGKILL)
    stack.scaler.process.wait(10)
    restarted = time.monotonic()
    stack.start_scaler()
    status = stack.wait_workers("sleep", lambda s: s["workers"] >= 1, timeout=10, what="adopted workers")
    adopted = {w["id"] for w in stack.status()["workers"] if w["state"] in ("starting", "running")}
    assert before & set(stack.live_worker_pids()) <= adopted
    assert status["workers"] <= SLEEP["max_workers"] and len(stack.live_worker_pids()) <= SLEEP["max_workers"]
    settle(stack, "scaler kill -9 and restart mid-burst", expected_ids([upload.json()["upload_id"]], rows), restarted)
    stack.wait_workers("sleep", lambda s: s["workers"] == 0, timeout=30, what="scale-down after the restart")


def test_config_broken_while_running_keeps_the_last_good(stack: Stack) -> None:
    stack.start()
    good = stack.config_path.read_text()
    rows = 1500
    upload = stack.upload(csv_rows(rows), "sleep")
    stack.config_path.write_text("{ this is not JSON")
    broken = time.monotonic()
    status = wait_until(lambda: (s := stack.status())["config"]["error"] and s, timeout=10, what="the JSON error")
    assert "invalid JSON" in status["config"]["error"] and "sleep" in status["job_types"]
    bad_value = json.loads(good)
    bad_value["sleep"]["max_workers"] = "many"
    stack.config_path.write_text(json.dumps(bad_value))
    wait_until(
        lambda: "'max_workers'" in (stack.status()["config"]["error"] or ""), timeout=10, what="the bad value error"
    )
    assert stack.type_status("sleep")["max_workers"] == SLEEP["max_workers"], "the last good config stays in force"
    stack.config_path.write_text(good)
    wait_until(lambda: stack.status()["config"]["error"] is None, timeout=10, what="recovery")
    settle(
        stack,
        "jobs.config.json invalid JSON, then a bad value",
        expected_ids([upload.json()["upload_id"]], rows),
        broken,
    )


def sales_csv(rows: int) -> bytes:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        sample_main([str(rows)])
    return out.getvalue().encode()


def test_rabbitmq_restarted_during_an_upload_retried_with_the_same_key(broker: Broker, tmp_path: Path) -> None:
    """The issue's case for idempotent re-upload: a real broker restart mid-upload, then the same file with the
    same Idempotency-Key. The record finishes exactly (every row succeeded once, whatever the publish window
    duplicated) and the sales ledger, idempotent by message id, holds every row exactly once."""
    ledger = tmp_path / "sales.db"
    sales = {"handler": "sales", "batch_size": 100, "threshold": 100, "max_workers": 3, "idle_seconds": 3}
    stack = Stack(broker, tmp_path, {"sales": {**sales, "env": {"SALES_DATABASE_URL": f"sqlite:///{ledger}"}}})
    try:
        stack.start_producer()
        rows, queue, restarted = 100_000, stack.queue_of("sales"), []

        def restart() -> None:
            restarted.append(time.monotonic())
            start_broker_app()

        answer, upload_id = interrupted_upload(
            stack,
            sales_csv(rows),
            "sales",
            f"fault-{tmp_path.name}",
            publishing=lambda: broker.queue_depth(queue) > 3000,
            fail=stop_broker_app,
            recover=restart,
        )
        assert answer["confirmed"] < rows, answer
        stack.start_scaler()
        done = wait_record(
            stack, upload_id, lambda r: r["state"] == "done", "the upload to finish", timeout=RECOVERY_BOUND_SECONDS
        )
        assert (done["succeeded"], done["dead"], done["cancelled"], done["pending"]) == (rows, 0, 0, 0), done
        with sqlite3.connect(ledger) as db:
            stored = db.execute("SELECT COUNT(*), COUNT(DISTINCT message_id) FROM sales_rows").fetchone()
        assert stored == (rows, rows), "every row stored once in the ledger"
        fault_report.record(
            fault_report.FaultRow(
                f"RabbitMQ restart mid-upload, same Idempotency-Key: 503 with {answer['confirmed']} confirmed; "
                "retry finished the same record exactly (ledger: each row once)",
                rows,
                done["succeeded"],
                stored[0] - stored[1],
                rows - stored[1],
                time.monotonic() - restarted[0],
            )
        )
    finally:
        stack.stop()
        if not broker_is_up():
            start_broker_app()
