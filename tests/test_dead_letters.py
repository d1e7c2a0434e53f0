"""Rows RabbitMQ dead-letters itself are counted dead in their upload record, once, and replay like any dead row.

A consumer that rejects a row without requeue, and a quorum queue's delivery
limit, take a row out of its work queue without any worker's report. The real
broker routes it through `autoscaler.dead-letters` to `<queue>.dead` and to the
tracker; these tests check the record the tracker keeps (in process, then
through the whole stack with real workers replaying the rows).
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from common.config import ConfigError, JobType, parse_config
from common.outcomes import (
    ATTEMPT_HEADER,
    DEAD_OUTCOMES_QUEUE,
    LINE_HEADER,
    OUTCOMES_QUEUE,
    REJECT_DETAIL_HEADER,
    REJECT_REASON_HEADER,
    RowOutcome,
)
from common.queue_check import check_declarations
from common.queues import DEAD_LETTERS_EXCHANGE, declare_queues
from harness.broker import Broker, create_vhost, delete_vhost
from harness.stack import Stack
from harness.waiting import wait_until
from scaler.queue_stats import QueueStatsSource
from tests.support.outcomes import publish_reports
from tests.support.uploads import wait_record
from tests.test_uploads_tracker import own_broker  # noqa: F401 - fixture
from uploads.model import UploadRecord
from uploads.settings import UploadSettings
from uploads.sql import SqlStore
from uploads.tracker import Tracker, TrackerState


def row_message(upload_id: str, row: int, line: int, attempt: int = 1) -> tuple[bytes, pika.BasicProperties]:
    """A row as the producer publishes it (message id `<upload>:<row>`, its upload and line in headers), or as a
    worker republishes it for its next `attempt`."""
    headers = {"upload_id": upload_id, LINE_HEADER: line, ATTEMPT_HEADER: attempt}
    return b'{"n": "%d"}' % row, pika.BasicProperties(message_id=f"{upload_id}:{row}", headers=headers, delivery_mode=2)


def reject_all(channel, queue: str) -> None:
    """Take every row of `queue` and reject it without requeue, as a consumer giving up on it does."""
    while (method := channel.basic_get(queue)[0]) is not None:
        channel.basic_reject(method.delivery_tag, requeue=False)


def test_a_rejected_row_counts_dead_once_with_reason_and_line_and_bad_ones_are_set_aside(
    own_broker: Broker,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'uploads.db'}", 100, 86_400.0)
    store.begin_upload(UploadRecord("u1", "jt", "data.csv", 3, ["n"], created_at=time.time()))
    store.mark_published("u1", 3, None)
    tracker = Tracker(store, UploadSettings(tracker_stall_seconds=30, max_report_bytes=1000))
    tracker.start()
    job_type = JobType(name="jt", queue=f"q_{uuid.uuid4().hex[:8]}")
    try:
        wait_until(lambda: tracker.status()["state"] == TrackerState.CONSUMING, timeout=10, what="the tracker up")
        publish_reports(own_broker, "jt", [[RowOutcome("u1", 1, "succeeded")]])
        wait_until(lambda: store.get("u1").succeeded == 1, timeout=10, what="the worker's report applied")
        with own_broker.channel() as channel:
            declare_queues(channel, job_type)
            channel.confirm_delivery()
            # Row 1 was reported succeeded (its ack lost, say): the broker's copy changes nothing. Row 2 counts dead.
            # Row 9 is not a row of the upload, and a message of no upload concerns no record.
            for body, properties in (row_message("u1", 1, 2), row_message("u1", 2, 5, 2), row_message("u1", 9, 9)):
                channel.basic_publish("", job_type.queue, body, properties)
            _, properties = row_message("u1", 3, 6)
            channel.basic_publish("", job_type.queue, b'{"n": "%s"}' % (b"3" * 1000), properties)  # too large
            channel.basic_publish("", job_type.queue, b"{}", pika.BasicProperties(message_id="not-a-row"))
            # Anyone who may publish to the report queue could fake a dead-lettered row: it is checked too.
            fake = pika.BasicProperties(message_id="u1:3", headers={"upload_id": "u1", "x-death": "nonsense"})
            channel.basic_publish("", OUTCOMES_QUEUE, b"{}", fake)
            reject_all(channel, job_type.queue)
        wait_until(lambda: tracker.status()["reports"] == 7, timeout=10, what="every dead-lettered row handled")
        record = store.get("u1")
        assert (record.succeeded, record.dead, record.pending, record.state) == (1, 1, 1, "running"), record
        with store.transaction(write=False) as tx:
            dead = tx.get_rows("u1", [2])[2]
        assert (dead.state, dead.line, dead.body, dead.attempts) == ("dead", 5, '{"n": "2"}', 2), dead
        assert dead.error.startswith(f"rejected (a consumer of '{job_type.queue}' rejected it without requeue")

        set_aside = {
            p.headers[REJECT_REASON_HEADER]: p.headers[REJECT_DETAIL_HEADER]
            for p, _ in own_broker.drain(DEAD_OUTCOMES_QUEUE)
        }
        assert set_aside.keys() == {"row-out-of-range", "malformed", "too-large"}, set_aside
        assert "row 9 of upload 'u1'" in set_aside["row-out-of-range"]
        assert "a 1009-byte row, over UPLOADS_MAX_REPORT_BYTES=1000" in set_aside["too-large"]
        assert "x-death is not a list of tables: 'nonsense'" in set_aside["malformed"]
        kept = own_broker.drain(job_type.dead_queue)
        assert len(kept) == 5 and all(p.headers["x-death"][0]["reason"] == "rejected" for p, _ in kept), "for people"
        assert tracker.status()["problem"] is None
    finally:
        tracker.stop()
        store.close()


@pytest.fixture()
def producer_only(tmp_path: Path) -> Iterator[Stack]:
    """The producer (with its tracker) of a classic and a quorum type; the scaler, and so workers, start later."""
    own = create_vhost()
    recorder = {"handler": "tests.handlers.recorder", "threshold": 1, "max_workers": 1, "idle_seconds": 2}
    settings = {**recorder, "max_attempts": 2, "retry_delay_seconds": 0.1}
    settings["env"] = {"RECORD_FILE": str(tmp_path / "record.jsonl")}
    types = {"rej": settings, "lim": {**settings, "queue_type": "quorum", "delivery_limit": 1}}
    stack = Stack(own, tmp_path, types)
    stack.start_producer()
    yield stack
    stack.stop()
    delete_vhost(own)


def failed_rows(stack: Stack, upload_id: str) -> list[list[str]]:
    text = stack.get(f"{stack.producer_url}/uploads/{upload_id}/failed-rows.csv").text
    return list(csv.reader(io.StringIO(text)))[1:]


def test_rows_the_broker_dead_letters_end_their_upload_and_replay_through_real_workers(producer_only: Stack) -> None:
    stack, broker = producer_only, producer_only.broker
    rejected = stack.upload(b"n\n1\n2\n", "rej").json()["upload_id"]
    limited = stack.upload(b"n\n1\n", "lim").json()["upload_id"]
    with broker.channel() as channel:
        first, second = (channel.basic_get(stack.queue_of("rej"))[0] for _ in range(2))
        channel.basic_nack(first.delivery_tag, requeue=True)  # row 1 waits for a worker
        channel.basic_reject(second.delivery_tag, requeue=False)  # row 2 (line 3) is dead
        deliveries = 0
        while (method := channel.basic_get(stack.queue_of("lim"))[0]) is not None or deliveries == 0:
            if method is not None:  # a consumer that dies on it every time, until RabbitMQ's limit
                deliveries += 1
                channel.basic_nack(method.delivery_tag, requeue=True)
    assert deliveries == 2, "delivery_limit 1: delivered twice, then dead-lettered"
    ended = wait_record(stack, limited, lambda r: r["finished_at"], "the quorum upload to end")
    assert (ended["state"], ended["succeeded"], ended["dead"], ended["pending"]) == ("done", 0, 1, 0), ended
    ((row, line, attempts, error),) = failed_rows(stack, limited)
    assert (row, line, attempts) == ("1", "2", "1") and error.startswith("delivery limit reached"), error
    wait_record(stack, rejected, lambda r: r["dead"] == 1 and r["pending"] == 1, "the rejected row counted dead")
    ((row, line, attempts, error),) = failed_rows(stack, rejected)
    assert (row, line) == ("2", "3") and error.startswith("rejected"), error

    stack.start_scaler()  # workers now: row 1 of 'rej' succeeds, and so do the replayed rows
    done = wait_record(stack, rejected, lambda r: r["finished_at"], "the classic upload to end", timeout=60)
    assert (done["state"], done["succeeded"], done["dead"]) == ("done", 1, 1), done
    for upload_id, rows in ((rejected, 2), (limited, 1)):
        assert stack.post(f"{stack.producer_url}/uploads/{upload_id}/replay", timeout=60).json()["replayed"] == 1
        again = wait_record(stack, upload_id, lambda r: r["replays"] == 1 and r["pending"] == 0, "the replay", 60)
        assert (again["state"], again["succeeded"], again["dead"]) == ("done", rows, 0), again
    for job_type in ("rej", "lim"):
        (copy,) = broker.drain(f"{stack.queue_of(job_type)}.dead")
        assert copy[0].headers["x-death"][0]["queue"] == stack.queue_of(job_type), "the broker's copy, for people"


def test_a_work_queue_an_older_version_declared_is_refused_with_why_and_how_to_migrate(broker: Broker) -> None:
    """Before rows RabbitMQ dead-letters were counted, work queues dead-lettered to '' straight to `.dead`."""
    job_type = JobType(name="jt", queue=f"q_{uuid.uuid4().hex[:8]}")
    older = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": job_type.dead_queue}
    with broker.channel() as channel:
        channel.queue_declare(job_type.queue, durable=True, arguments=older)
    declared = QueueStatsSource((broker.api_url,), broker.amqp_url).declared()
    with pytest.raises(ConfigError) as refused:
        check_declarations(parse_config({"jt": job_type.model_dump(mode="json", exclude={"name"})}), declared)
    assert f"x-dead-letter-exchange: '' on the broker, '{DEAD_LETTERS_EXCHANGE}' in the config" in str(refused.value)
    assert "a work queue an older version declared" in str(refused.value) and "to migrate" in str(refused.value)
    with broker.channel() as channel, pytest.raises(pika.exceptions.ChannelClosedByBroker) as declaring:
        declare_queues(channel, job_type)
    assert "a work queue an older version declared" in str(declaring.value)
