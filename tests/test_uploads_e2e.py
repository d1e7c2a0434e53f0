"""Upload records end to end: producer (with its tracker), scaler, real workers, real broker, kill -9.

Every test ends on the record's counts: each row counted exactly once in
succeeded, dead or cancelled, whatever was killed, redelivered or replayed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pika
import pytest

from common.outcomes import DEAD_OUTCOMES_QUEUE, REJECT_DETAIL_HEADER, REJECT_REASON_HEADER, REPLAY_HEADER
from harness.broker import Broker, create_vhost, delete_vhost
from harness.stack import Stack
from harness.waiting import wait_until
from tests.support.proxy import CuttableProxy, producer_behind
from tests.support.uploads import interrupted_upload, wait_record


def recorder(tmp_path: Path, **settings) -> dict:
    return {
        "handler": "tests.handlers.recorder",
        "threshold": 1,
        "max_workers": 2,
        "idle_seconds": 2,
        "max_attempts": 2,
        "retry_delay_seconds": 0.1,
        "env": {"RECORD_FILE": str(tmp_path / "record.jsonl")},
        **settings,
    }


@pytest.fixture()
def own_broker() -> Iterator[Broker]:
    """A vhost per test: all producers on a vhost must share one store, and each test's producer has its own."""
    created = create_vhost()
    yield created
    delete_vhost(created)


@pytest.fixture()
def stack(own_broker: Broker, tmp_path: Path) -> Iterator[Stack]:
    created = Stack(own_broker, tmp_path, {"rec": recorder(tmp_path)}, env={"WORKER_HEARTBEAT_SECONDS": "0.5"})
    created.start()
    yield created
    created.stop()


def rows_csv(count: int, sleep_ms: int = 0, failing: frozenset[int] = frozenset()) -> bytes:
    lines = ["n,sleep_ms,fail_until"] + [f"{i},{sleep_ms},{99 if i in failing else 0}" for i in range(1, count + 1)]
    return ("\n".join(lines) + "\n").encode()


def post(stack: Stack, path: str) -> httpx.Response:
    return stack.post(f"{stack.producer_url}{path}", timeout=60)


def final(stack: Stack, upload_id: str, timeout: float = 120) -> dict:
    return wait_record(stack, upload_id, lambda r: r["pending"] == 0 and r["finished_at"], "the upload to end", timeout)


def handled_ids(tmp_path: Path) -> set[str]:
    path = tmp_path / "record.jsonl"
    return {json.loads(line)["id"] for line in path.read_text().splitlines()} if path.exists() else set()


def test_worker_and_tracker_killed_mid_upload_count_every_row_once(stack: Stack, tmp_path: Path) -> None:
    rows = 300
    upload_id = stack.upload(rows_csv(rows, sleep_ms=15), "rec").json()["upload_id"]
    wait_record(stack, upload_id, lambda r: r["succeeded"] >= 30, "the first rows to be counted")
    victim = next(iter(stack.live_worker_pids().values()))
    os.kill(victim, signal.SIGKILL)  # a worker dies between handler and ack, holding unacked rows
    wait_record(stack, upload_id, lambda r: r["succeeded"] >= 100, "work to go on after the worker died")
    stack.producer.signal(signal.SIGKILL)  # the tracker dies with unacked reports
    stack.producer.process.wait(10)
    stack.start_producer()
    done = final(stack, upload_id)
    assert (done["state"], done["succeeded"], done["dead"], done["cancelled"], done["rows"]) == (
        "done",
        rows,
        0,
        0,
        rows,
    )
    assert handled_ids(tmp_path) == {f"{upload_id}:{n}" for n in range(1, rows + 1)}


def test_a_hostile_replay_header_is_dead_lettered_and_counting_goes_on(stack: Stack, own_broker: Broker) -> None:
    """The issue's message: a real upload's row on its job queue with `x-replay: "99999999999999999999"`. A real
    worker handles it and copies the header into its report; the tracker sets the report aside, named, and goes on."""
    first = stack.upload(rows_csv(3), "rec").json()["upload_id"]
    assert final(stack, first)["succeeded"] == 3
    hostile = pika.BasicProperties(
        message_id=f"{first}:1",
        headers={"upload_id": first, REPLAY_HEADER: "99999999999999999999"},
        delivery_mode=2,
    )
    with own_broker.channel() as channel:
        channel.basic_publish("", stack.queue_of("rec"), b'{"n": "1", "sleep_ms": "0", "fail_until": "0"}', hostile)
    dead = wait_until(lambda: own_broker.drain(DEAD_OUTCOMES_QUEUE), timeout=60, what="the worker's report set aside")
    headers = dead[0][0].headers
    assert headers[REJECT_REASON_HEADER] == "replay-not-issued", headers
    assert headers[REJECT_DETAIL_HEADER] == (
        f"row 1 of upload {first!r}: replay 99999999999999999999 was never issued (replays so far: 0)"
    )
    second = stack.upload(rows_csv(20), "rec").json()["upload_id"]
    done = final(stack, second)
    assert (done["state"], done["succeeded"]) == ("done", 20)
    assert final(stack, first)["succeeded"] == 3, "the hostile row changed nothing"
    health = httpx.get(f"{stack.producer_url}/healthz", headers=stack.auth_headers(), timeout=10)
    assert health.status_code == 200 and health.json()["upload_tracker"]["dead_lettered"] == 1, health.text


def test_two_uploads_on_one_type_one_cancelled_the_other_untouched(stack: Stack) -> None:
    keep = stack.upload(rows_csv(150, sleep_ms=10), "rec").json()["upload_id"]
    stop = stack.upload(rows_csv(150, sleep_ms=10), "rec").json()["upload_id"]
    wait_record(stack, stop, lambda r: r["succeeded"] + r["dead"] > 0 or r["state"] == "done", "work to start")
    answer = post(stack, f"/uploads/{stop}/cancel")
    assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
    cancelled = final(stack, stop)
    kept = final(stack, keep)
    assert cancelled["state"] == "cancelled" and cancelled["cancelled"] > 0
    assert cancelled["succeeded"] + cancelled["dead"] + cancelled["cancelled"] == cancelled["rows"] == 150
    assert (kept["state"], kept["succeeded"], kept["cancelled"]) == ("done", 150, 0)


def test_failed_rows_report_and_replay_with_real_workers(stack: Stack) -> None:
    text = (
        "n,sleep_ms,fail_until\n"
        "1,0,0\n"
        '"2\nstill row two",0,0\n'  # a quoted newline: the rows after it start one line later
        "3,0,99\n"
        "4,0,0\n"
        "5,0,99\n"
    )
    upload_id = stack.upload(text.encode(), "rec").json()["upload_id"]
    done = final(stack, upload_id)
    assert (done["state"], done["succeeded"], done["dead"]) == ("done", 3, 2)
    report = list(csv.reader(io.StringIO(stack.get(f"{stack.producer_url}/uploads/{upload_id}/failed-rows.csv").text)))
    assert report[0] == ["n", "sleep_ms", "fail_until", "line", "attempts", "error"]
    assert [row[:5] for row in report[1:]] == [["3", "0", "99", "5", "2"], ["5", "0", "99", "7", "2"]]
    assert all("planned failure on attempt 2" in row[5] for row in report[1:])

    # Pressed twice at once: each dead row is replayed once. (Pressed one after the other, the replayed rows may
    # already have died again in between, and a second replay would rightly take them again.)
    with ThreadPoolExecutor(2) as presses:
        answers = list(presses.map(lambda _: post(stack, f"/uploads/{upload_id}/replay"), range(2)))
    assert [answer.status_code for answer in answers] == [200, 200]
    assert sorted(answer.json()["replayed"] for answer in answers) == [0, 2], "each dead row replayed once"
    again = wait_record(stack, upload_id, lambda r: r["state"] == "done" and r["replays"] == 1, "the replay to end")
    assert (again["succeeded"], again["dead"], again["pending"]) == (3, 2, 0), "rows failing again count once"


def test_reupload_with_the_same_key_after_a_broker_cut_handles_every_row_once(
    own_broker: Broker, tmp_path: Path
) -> None:
    proxy = CuttableProxy()
    stack = producer_behind(proxy, own_broker, tmp_path, {"rec": recorder(tmp_path, max_workers=2)})
    try:
        rows = 20_000
        body = rows_csv(rows)
        answer, upload_id = interrupted_upload(
            stack,
            body,
            "rec",
            "e2e-file-1",
            publishing=lambda: True,
            fail=lambda: proxy.cut_after(1_000_000),  # a few thousand rows in, however fast this machine publishes
            recover=proxy.restore,
            timeout=60,
        )
        assert answer["confirmed"] < rows, answer
        stack.env["RABBITMQ_URL"] = own_broker.amqp_url  # the scaler and its workers connect directly
        stack.start_scaler()
        done = final(stack, upload_id, timeout=240)
        assert (done["succeeded"], done["dead"], done["pending"], done["rows"]) == (rows, 0, 0, rows)
        assert handled_ids(tmp_path) == {f"{upload_id}:{n}" for n in range(1, rows + 1)}
    finally:
        stack.stop()
        proxy.close()


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uploads.cli", "--url", stack.producer_url, *args],
        env={**os.environ, "PRODUCER_TOKEN": stack.env["PRODUCER_TOKEN"]},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_submit_wait_follows_the_upload_and_exits_by_outcome(stack: Stack, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_bytes(rows_csv(40, sleep_ms=5))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(rows_csv(10, failing=frozenset({4})))

    ok = cli(stack, "submit", str(good), "rec", "--wait", "--interval", "0.2")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "queued 40 rows of good.csv for rec" in ok.stdout and "done: all 40 rows succeeded" in ok.stdout
    assert "[########################################] 40/40 done" in ok.stdout

    failed = cli(stack, "submit", str(bad), "rec", "--wait", "--interval", "0.2")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "1 rows failed for good" in failed.stdout and "/failed-rows.csv" in failed.stdout

    refused = cli(stack, "submit", str(good), "nope")
    assert refused.returncode == 2 and "refused (404)" in refused.stderr

    listing = cli(stack, "list", "--job-type", "rec")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert "bad.csv" in lines[1] and "good.csv" in lines[2], "newest first"


def test_dashboard_proxy_says_when_the_producer_is_unreachable(own_broker: Broker, tmp_path: Path) -> None:
    stack = Stack(own_broker, tmp_path, {"rec": recorder(tmp_path)})  # the producer is never started
    stack.start_scaler()
    try:
        for method, path in (("GET", "/api/uploads"), ("GET", "/api/uploads/x"), ("POST", "/api/uploads/x/cancel")):
            answer = httpx.request(method, f"{stack.scaler_url}{path}", headers=stack.auth_headers(), timeout=10)
            assert answer.status_code == 502, (path, answer.text)
            assert f"the producer at {stack.producer_url} is unreachable" in answer.json()["error"]
    finally:
        stack.stop()
