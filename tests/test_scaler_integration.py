"""The scaler with real RabbitMQ, a real producer and real `sleep` worker processes."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from harness.broker import Broker
from harness.stack import Stack
from harness.waiting import wait_until
from tests.support.proxy import CuttableProxy

SLEEP = {
    "handler": "sleep",
    "threshold": 20,
    "burst_size": 5,
    "max_workers": 8,
    "idle_seconds": 5,
    "env": {"SLEEP_MS": "100"},
}


def rows(count: int) -> bytes:
    return b"n\n" + b"".join(b"%d\n" % i for i in range(count))


@pytest.fixture()
def stack(broker: Broker, tmp_path: Path) -> Iterator[Stack]:
    created = Stack(broker, tmp_path, {"sleep": SLEEP}, tick_seconds=1.0, env={"WORKER_HEARTBEAT_SECONDS": "1"})
    yield created
    created.stop()


def test_burst_drain_exactly_once_and_scale_to_zero(stack: Stack, broker: Broker) -> None:
    stack.start()
    response = stack.upload(rows(400), "sleep")
    assert response.status_code == 200
    stack.wait_workers("sleep", lambda s: s["workers"] >= 5, timeout=10, what="a burst of 5 workers")
    history = stack.get(f"{stack.scaler_url}/api/history").json()
    series = history["job_types"]["sleep"]["series"]
    seen = next(t for t, ready in zip(series["t"], series["ready"], strict=True) if ready > 40)
    burst = next(t for t, workers in zip(series["t"], series["workers"], strict=True) if workers >= 5)
    assert burst - seen <= 2, "the burst must come within two ticks (1-second buckets) of the backlog being seen"
    events = [e["reason"] for e in stack.status()["events"]]
    assert any(reason.startswith("burst +5: ready") for reason in events), events
    peak = stack.wait_workers("sleep", lambda s: s["workers"] == 8, timeout=30, what="scale-up to max_workers 8")
    assert peak["workers"] <= 8

    queue = stack.queue_of("sleep")
    wait_until(lambda: broker.queue(queue)["messages"] == 0, timeout=120, what="the queue to drain")
    processed = wait_until(
        lambda: sum((p := stack.processed()).values()) >= 400 and p, timeout=30, what="400 rows processed"
    )
    upload_id = response.json()["upload_id"]
    assert set(processed) == {f"{upload_id}:{n}" for n in range(1, 401)}
    assert max(processed.values()) == 1, "a row was processed twice"
    assert broker.queue(queue).get("message_stats", {}).get("redeliver", 0) == 0

    stack.wait_workers("sleep", lambda s: s["workers"] == 0, timeout=30, what="every worker gone after idle_seconds")
    downs = [e["reason"] for e in stack.status()["events"] if e["direction"] == "down"]
    matches = [re.fullmatch(r"scale down -(\d+): idle for (\d+) s", reason) for reason in downs]
    assert downs and all(m and int(m[2]) >= 5 for m in matches), downs
    assert sum(int(m[1]) for m in matches) == 8, downs
    wait_until(lambda: not stack.live_worker_pids(), timeout=15, what="worker processes to exit")
    exits = {w["exit_code"] for w in stack.status()["workers"]}
    assert exits <= {0}, f"workers should exit 0 after a graceful stop: {exits}"


def test_restarted_scaler_adopts_its_workers(stack: Stack, broker: Broker) -> None:
    stack.start()
    stack.upload(rows(300), "sleep").raise_for_status()
    stack.wait_workers("sleep", lambda s: s["running"] >= 5, timeout=20, what="running workers")
    before = stack.live_worker_pids()
    stack.scaler.signal(signal.SIGKILL)
    stack.scaler.process.wait(10)
    stack.start_scaler()
    adopted = stack.wait_workers("sleep", lambda s: s["workers"] >= len(before), timeout=10, what="adopted workers")
    assert adopted["workers"] <= 8
    ids = {w["id"] for w in stack.status()["workers"] if w["state"] in ("starting", "running")}
    still_alive = set(before) & set(stack.live_worker_pids())
    assert still_alive and still_alive <= ids, "every live worker is adopted, none forgotten"
    assert len(stack.live_worker_pids()) <= 8, "a restarted scaler must not exceed max_workers"
    queue = stack.queue_of("sleep")
    wait_until(lambda: broker.queue(queue)["messages"] == 0, timeout=120, what="the queue to drain")
    stack.wait_workers("sleep", lambda s: s["workers"] == 0, timeout=40, what="scale-down after the restart")


def test_killed_worker_is_replaced_while_backlog_remains(stack: Stack) -> None:
    stack.start()
    stack.upload(rows(300), "sleep").raise_for_status()
    stack.wait_workers("sleep", lambda s: s["workers"] == 8 and s["running"] == 8, timeout=30, what="8 running workers")
    victim, pid = next(iter(stack.live_worker_pids().items()))
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: victim not in stack.live_worker_pids(), timeout=10, what="the victim to die")
    replaced = wait_until(
        lambda: len(stack.live_worker_pids()) == 8 and victim not in stack.live_worker_pids(),
        timeout=15,
        what="a replacement worker",
    )
    assert replaced
    failed = [w for w in stack.status()["workers"] if w["id"] == victim]
    assert failed and failed[0]["state"] == "failed"


def test_broker_unreachable_keeps_loop_and_workers_then_resumes(broker: Broker, tmp_path: Path) -> None:
    amqp, api = CuttableProxy(), CuttableProxy(target_port=15672)
    stack = Stack(
        broker,
        tmp_path,
        {"sleep": {**SLEEP, "idle_seconds": 2, "min_workers": 1}},
        tick_seconds=0.5,
        env={
            "RABBITMQ_URL": amqp.url(quote(broker.vhost, safe="")),
            "RABBITMQ_API_URL": f"http://guest:guest@127.0.0.1:{api.port}/api",
        },
    )
    try:
        stack.start()
        stack.wait_workers("sleep", lambda s: s["running"] == 1, timeout=30, what="the warm worker")
        amqp.cut()
        api.cut()
        down = stack.wait_workers(
            "sleep", lambda s: s["state"] == "broker-unreachable", timeout=15, what="broker unreachable"
        )
        assert down["reason"] == "broker unreachable: no scaling decision"
        assert stack.status()["broker"]["reachable"] is False
        ticks = stack.status()["tick"]["number"]
        wait_until(lambda: stack.status()["tick"]["number"] >= ticks + 4, timeout=10, what="the loop to keep ticking")
        assert len(stack.live_worker_pids()) == 1, "no scale-down on missing data"
        amqp.restore()
        api.restore()
        stack.wait_workers("sleep", lambda s: s["state"] != "broker-unreachable", timeout=15, what="recovery")
        stack.upload(rows(100), "sleep").raise_for_status()
        stack.wait_workers("sleep", lambda s: s["workers"] > 1, timeout=15, what="scaling to resume")
    finally:
        stack.stop()
        amqp.close()
        api.close()


def test_config_edits_apply_within_two_ticks_and_bad_edits_keep_the_last_good(stack: Stack) -> None:
    stack.start()
    config = stack.config()
    config["sleep"]["max_workers"] = 3
    config["extra"] = {**SLEEP, "queue": config["sleep"]["queue"] + "_extra", "min_workers": 1}
    stack.config_path.write_text(json.dumps(config))
    started = time.monotonic()
    status = wait_until(lambda: "extra" in (s := stack.status())["job_types"] and s, timeout=5, what="the new type")
    assert time.monotonic() - started < 2.5
    assert status["job_types"]["sleep"]["max_workers"] == 3
    stack.wait_workers("extra", lambda s: s["workers"] == 1, timeout=10, what="the new type's warm worker")

    stack.config_path.write_text('{"sleep": {"queue": "x", "max_workers": -1}}')
    bad = wait_until(lambda: (s := stack.status())["config"]["error"] and s, timeout=5, what="the config error")
    assert "'max_workers'" in bad["config"]["error"]
    assert set(bad["job_types"]) == {"sleep", "extra"}, "the last good config stays in force"

    del config["extra"]
    stack.config_path.write_text(json.dumps(config))
    stack.wait_workers("extra", lambda s: s["removed"], timeout=5, what="the removed type to drain")
    wait_until(lambda: "extra" not in stack.status()["job_types"], timeout=20, what="the removed type's worker to stop")
    assert stack.status()["config"]["error"] is None
    assert stack.get(f"{stack.scaler_url}/healthz").status_code == 200
