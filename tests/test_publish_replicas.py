"""Several producer replicas on one upload store, real processes, real RabbitMQ, SQLite file and real Postgres.

One upload is published by one producer at a time (its lease in the store);
a producer killed mid-publish leaves the upload `interrupted`, and a same-key
retry on another replica publishes only the rest and finishes the same
record; a cancel on one replica stops the publishing on the other.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from harness.broker import Broker, create_vhost, delete_vhost
from harness.processes import Service
from harness.stack import Stack
from harness.waiting import wait_until
from tests.support.uploads import record, rows_published, wait_record

#: Short leases, so a killed publisher's upload reads `interrupted` within seconds (a live one, renewing every
#: 0.5 s, may send for 2 s after a renewal: room for a slow store on a busy machine).
LEASES = {"PRODUCER_PUBLISH_LEASE_SECONDS": "4", "PRODUCER_LEASE_CHECK_SECONDS": "0.5"}
SLEEP = {"sleep": {"prefetch": 200}}


@pytest.fixture()
def own_broker() -> Iterator[Broker]:
    """A vhost per test: the producers of a vhost share one store (their trackers consume one outcomes queue)."""
    created = create_vhost()
    yield created
    delete_vhost(created)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'uploads.db'}"
    return request.getfixturevalue("fresh_postgres_url")


def two_replicas(broker: Broker, tmp_path: Path, store_url: str) -> tuple[Stack, Stack]:
    first = Stack(broker, tmp_path, SLEEP, env={"UPLOADS_DATABASE_URL": store_url, **LEASES})
    second = first.replica()
    first.start_producer()
    second.start_producer()
    return first, second


def stop_all(*stacks: Stack) -> None:
    for stack in stacks:
        if stack.producer is not None:
            stack.producer.stop()


def rows_csv(count: int) -> bytes:
    return ("n\n" + "".join(f"{i}\n" for i in range(1, count + 1))).encode()


def upload_in_background(stack: Stack, body: bytes, key: str) -> tuple[threading.Thread, dict[str, Any]]:
    """POST the file with the key on a thread; the dict gets `status`, `body` and `at` (monotonic) when answered."""
    answer: dict[str, Any] = {}

    def send() -> None:
        try:
            response = stack.upload(body, "sleep", timeout=300, headers={"Idempotency-Key": key})
            answer.update(status=response.status_code, body=response.json(), at=time.monotonic())
        except httpx.HTTPError as error:  # the producer was killed while it published
            answer.update(status=None, body=str(error), at=time.monotonic())

    thread = threading.Thread(target=send)
    thread.start()
    return thread, answer


def publishing_id(stack: Stack) -> str:
    """The id of the upload being published, once the store holds a confirmed count above 0 for it."""

    def check() -> str | None:
        uploads = stack.get(f"{stack.producer_url}/uploads", timeout=10).json()["uploads"]
        return next((u["id"] for u in uploads if u["state"] == "publishing" and u["confirmed"] > 0), None)

    return wait_until(check, timeout=60, interval=0.02, what="a confirmed count above 0 stored while publishing")


def message_ids(broker: Broker, queue: str, expected: int) -> list[str]:
    """Take every message of the queue (auto-ack, a fast consumer); their message ids."""
    ids: list[str] = []
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=2000)
        for _method, properties, _body in channel.consume(queue, auto_ack=True, inactivity_timeout=2):
            if properties is None:
                break
            ids.append(properties.message_id)
        channel.cancel()
    finally:
        connection.close()
    assert len(ids) >= expected, f"only {len(ids)} of {expected} messages could be read"
    return ids


def test_the_same_file_and_key_sent_to_two_replicas_at_once_queues_every_row_once(
    own_broker: Broker, tmp_path: Path, store_url: str
) -> None:
    a, b = two_replicas(own_broker, tmp_path, store_url)
    try:
        rows = 50_000
        body = rows_csv(rows)
        threads = [upload_in_background(stack, body, "both-at-once") for stack in (a, b)]
        for thread, _ in threads:
            thread.join(120)
        answers = [answer for _, answer in threads]
        assert {answer["status"] for answer in answers} <= {200, 409} and 200 in [a["status"] for a in answers], answers
        for answer in answers:
            if answer["status"] == 409:
                assert "being published by another request" in answer["body"]["error"], answer
        print(f"answers: {sorted(answer['status'] for answer in answers)}")
        upload_id = next(answer["body"]["upload_id"] for answer in answers if answer["status"] == 200)
        assert (record(a, upload_id)["state"], record(a, upload_id)["confirmed"]) == ("queued", rows)
        queue = a.queue_of("sleep")
        assert own_broker.queue_depth(queue) == rows
        ids = message_ids(own_broker, queue, rows)
        assert sorted(ids) == sorted(f"{upload_id}:{row}" for row in range(1, rows + 1)), "every row exactly once"
    finally:
        stop_all(a, b)


def test_a_producer_killed_mid_publish_leaves_it_interrupted_and_a_retry_on_another_replica_finishes_it(
    own_broker: Broker, tmp_path: Path, fresh_postgres_url: str
) -> None:
    a, b = two_replicas(own_broker, tmp_path, fresh_postgres_url)
    workers: list[Service] = []
    try:
        rows = 300_000
        body = rows_csv(rows)
        thread, _ = upload_in_background(a, body, "killed-mid-publish")
        upload_id = publishing_id(b)
        os.killpg(a.producer.pid, signal.SIGKILL)
        killed = time.monotonic()
        thread.join(30)
        interrupted = wait_record(b, upload_id, lambda r: r["state"] == "interrupted", "interrupted", timeout=15)
        after = time.monotonic() - killed
        print(f"interrupted {after:.1f} s after the kill, {interrupted['confirmed']} confirmed")
        bound = float(LEASES["PRODUCER_PUBLISH_LEASE_SECONDS"]) + float(LEASES["PRODUCER_LEASE_CHECK_SECONDS"])
        assert after < bound + 1.5, "lease + check interval after the last renewal (plus polling and a busy store)"
        assert 0 < interrupted["confirmed"] < rows and "lease" in interrupted["publish_error"]
        retry = b.upload(body, "sleep", timeout=300, headers={"Idempotency-Key": "killed-mid-publish"})
        assert retry.status_code == 200 and retry.json()["upload_id"] == upload_id, retry.text
        assert rows_published(b, "sleep") == rows - interrupted["confirmed"], "only the rows after the confirmed count"
        print(f"the retry published the rest in {time.monotonic() - killed:.1f} s after the kill")
        # Workers start now, not while publishing: on two cores they would slow the publishing more than they gain.
        worker_env = {**a.env, "SLEEP_MS": "0", "WORKER_LOG_LEVEL": "info"}
        workers += [Service("workers", ["sleep"], worker_env, tmp_path / f"worker-{n}.log") for n in range(2)]
        done = wait_record(b, upload_id, lambda r: r["state"] == "done", "every row counted", timeout=180)
        print(f"done {time.monotonic() - killed:.1f} s after the kill")
        assert (done["succeeded"], done["dead"], done["cancelled"], done["pending"]) == (rows, 0, 0, 0)
    finally:
        for worker in workers:
            worker.stop()
        stop_all(a, b)


def test_a_cancel_on_one_replica_stops_the_publishing_on_the_other_within_a_second(
    own_broker: Broker, tmp_path: Path
) -> None:
    a, b = two_replicas(own_broker, tmp_path, f"sqlite:///{tmp_path / 'uploads.db'}")
    try:
        rows = 300_000
        body = rows_csv(rows)
        thread, answer = upload_in_background(b, body, "cancelled-elsewhere")
        upload_id = publishing_id(a)
        stored = record(a, upload_id)["confirmed"]
        wait_until(
            lambda: record(a, upload_id)["confirmed"] > stored, timeout=1.0, interval=0.05, what="progress stored again"
        )
        busy = a.upload(body, "sleep", headers={"Idempotency-Key": "cancelled-elsewhere"})
        assert busy.status_code == 409 and "being published by another request" in busy.json()["error"]
        queue = a.queue_of("sleep")
        asked = time.monotonic()
        cancel = httpx.post(f"{a.producer_url}/uploads/{upload_id}/cancel", headers=a.auth_headers(), timeout=10)
        assert cancel.status_code == 200, cancel.text
        stopped_at, depth = own_broker.settled_depth(queue, quiet=1.0)
        stopped = stopped_at - asked
        print(f"the queue stopped growing {stopped:.2f} s after the cancel was sent, at {depth} of {rows} rows")
        assert stopped < 1.0
        thread.join(60)
        assert answer["status"] == 409 and "cancelled while it was published" in answer["body"]["error"], answer
        final = record(a, upload_id)
        assert final["state"] == "cancelled" and final["confirmed"] <= depth < rows
        assert final["cancelled"] == rows - final["confirmed"], "the rows never confirmed are counted cancelled"
    finally:
        stop_all(a, b)
