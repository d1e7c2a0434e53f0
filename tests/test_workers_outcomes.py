"""Outcome reports and cancel notices, with real worker processes and a real broker.

Workers report every upload row's outcome in one report per batch of
finished rows, confirmed before those rows are acked; they skip the rows of a
cancelled upload and report them `cancelled`, leaving other uploads alone.
"""

from __future__ import annotations

import json
import logging
import signal
from collections import Counter, defaultdict
from urllib.parse import quote

import httpx
import pika
import pytest

from common.outcomes import (
    OUTCOMES_QUEUE,
    REPLAY_HEADER,
    UPLOADS_EXCHANGE,
    CancelNotice,
    OutcomeReport,
    RowOutcome,
    declare_outcome_routes,
    outcome_queue_arguments,
    outcomes_queue_type,
)
from harness.broker import API, AUTH, Broker
from harness.waiting import wait_until
from tests.support.worker_harness import Harness, harness, reported_rows  # noqa: F401 - the fixture
from workers.delivery import Delivery, Status
from workers.hooks.cancel import Cancellations


class Reports:
    """Accumulates the outcome reports (draining the shared queue as it goes)."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.reports: list = []

    def take(self, upload_id: str) -> list[RowOutcome]:
        self.reports += self.harness.outcomes()
        return [row for row in reported_rows(self.reports) if row.upload_id == upload_id]


def final_rows(rows: list[RowOutcome]) -> Counter[int]:
    return Counter(row.row for row in rows if row.outcome in ("succeeded", "dead", "cancelled"))


@pytest.mark.job_settings({"prefetch": 20, "max_attempts": 2, "retry_delay_seconds": 0.05})
def test_one_report_per_batch_with_retrying_and_dead_rows(harness: Harness) -> None:
    rows = [{"n": 0, "fail_until": 99}] + [{"n": i} for i in range(1, 200)]
    upload_id = harness.enqueue(rows)
    reports = Reports(harness)
    harness.start_worker("w1")
    wait_until(lambda: len(final_rows(reports.take(upload_id))) == 200, timeout=60, what="200 rows reported final")
    mine = reports.take(upload_id)
    assert final_rows(mine) == Counter(range(1, 201)), "every row reported final exactly once"
    by_row = defaultdict(list)
    for row in mine:
        by_row[row.row].append(row)
    retrying, dead = by_row[1]
    assert (retrying.outcome, retrying.attempts, retrying.body) == ("retrying", 1, None)
    assert "planned failure on attempt 1" in retrying.error
    assert (dead.outcome, dead.attempts) == ("dead", 2)
    assert "planned failure on attempt 2" in dead.error and json.loads(dead.body)["fail_until"] == "99"
    assert all(by_row[n][0].outcome == "succeeded" and by_row[n][0].replay == 0 for n in range(2, 201))
    mine_reports = [report for report in reports.reports if any(row.upload_id == upload_id for row in report.rows)]
    assert len(mine_reports) < 100, "rows are reported in batches, not one report per row"
    assert all(report.worker_id == "w1" and report.job_type == "work" for report in mine_reports)


@pytest.mark.job_settings({"prefetch": 20})
def test_rows_awaiting_their_report_have_room_beyond_the_prefetch(harness: Harness, broker: Broker) -> None:
    """With reports on, the channel's prefetch is the type's plus twice its read-ahead (20 + 2 x 19): a confirm
    round trip does not empty the handler's window. Without reports it is the type's own."""

    def consumer_prefetch() -> int | None:
        response = httpx.get(f"{API}/consumers/{quote(broker.vhost, safe='')}", auth=AUTH, timeout=10)
        response.raise_for_status()
        found = [c["prefetch_count"] for c in response.json() if c["queue"]["name"] == harness.queue]
        return found[0] if len(found) == 1 else None

    for name, env, expected in [("tracked", {}, 58), ("untracked", {"WORKER_REPORT_OUTCOMES": "0"}, 20)]:
        worker = harness.start_worker(name, env)
        wait_until(
            lambda expected=expected: consumer_prefetch() == expected,
            timeout=30,
            what=f"{name}: a consumer with prefetch {expected}",
        )
        assert f'"channel_prefetch": {expected}' in worker.log()
        worker.stop(timeout=10)
        wait_until(lambda: harness.consumers() == 0, timeout=30, what=f"{name} gone")


@pytest.mark.job_settings({"prefetch": 100})
def test_a_large_group_is_split_into_reports_under_the_size_limit(harness: Harness, broker: Broker) -> None:
    upload_id = harness.enqueue([{"n": i} for i in range(300)])
    harness.start_worker("w1", {"WORKER_REPORT_MAX_BYTES": "600"})
    bodies: list[bytes] = []

    def all_reported() -> bool:
        bodies.extend(body for _, body in broker.drain(OUTCOMES_QUEUE))
        return len(reported_rows([OutcomeReport.from_json(body) for body in bodies])) >= 300

    wait_until(all_reported, timeout=60, what="300 rows reported")
    reports = [OutcomeReport.from_json(body) for body in bodies]
    rows = [row for row in reported_rows(reports) if row.upload_id == upload_id]
    assert final_rows(rows) == Counter(range(1, 301)), "every row reported exactly once across the split reports"
    assert max(len(body) for body in bodies) <= 600
    assert max(len(report.rows) for report in reports) > 1, "split, not one report per row"
    queue = broker.queue(OUTCOMES_QUEUE)
    assert queue["arguments"] == outcome_queue_arguments(outcomes_queue_type())[OUTCOMES_QUEUE] and queue["durable"]


@pytest.mark.job_settings({"max_attempts": 2, "retry_delay_seconds": 0.05})
def test_replay_number_is_reported_and_kept_on_retry_copies(harness: Harness, broker: Broker) -> None:
    worker = harness.start_worker("w1")
    wait_until(lambda: '"event": "consuming"' in worker.log(), timeout=30, what="the worker to consume")
    properties = pika.BasicProperties(
        message_id="replayed-upload:7", delivery_mode=2, headers={"upload_id": "replayed-upload", REPLAY_HEADER: 2}
    )
    with broker.channel() as channel:
        channel.basic_publish("", harness.queue, b'{"n": "7", "fail_until": "99"}', properties)
    reports = Reports(harness)
    wait_until(lambda: final_rows(reports.take("replayed-upload")), timeout=30, what="the replayed row dead")
    assert [(r.outcome, r.attempts, r.replay) for r in reports.take("replayed-upload")] == [
        ("retrying", 1, 2),
        ("dead", 2, 2),
    ]
    [(dead_properties, _)] = broker.drain(harness.queue + ".dead")
    assert dead_properties.headers[REPLAY_HEADER] == 2


@pytest.mark.job_settings({"prefetch": 20, "max_attempts": 5, "retry_delay_seconds": 0.05})
def test_kill_9_mid_batch_loses_no_row_and_no_report(harness: Harness) -> None:
    """Coalesced acks and reports under kill -9: every acked row was reported; every row is processed."""
    upload_id = harness.enqueue([{"n": i, "sleep_ms": 5} for i in range(400)])
    reports = Reports(harness)
    victim = harness.start_worker("victim")
    wait_until(lambda: len(harness.records()) >= 100, timeout=60, what="a hundred rows processed")
    victim.signal(signal.SIGKILL)
    victim.process.wait(10)
    wait_until(lambda: harness.consumers() == 0, timeout=30, what="the victim's rows back in the queue")
    waiting = harness.depth() + harness.depth(".retry")
    acked = 400 - waiting
    reported = set(final_rows(reports.take(upload_id)))
    assert len(reported) >= acked, f"{acked} rows acked but only {len(reported)} reported"
    harness.start_worker("rescuer")
    wait_until(lambda: len(final_rows(reports.take(upload_id))) == 400, timeout=90, what="every row reported")
    processed = {record["id"] for record in harness.records()}
    assert processed == {f"{upload_id}:{n}" for n in range(1, 401)}, "every row processed, none lost"
    finals = reports.take(upload_id)
    assert {row.outcome for row in finals if row.row in final_rows(finals)} >= {"succeeded"}
    assert all(row.outcome in ("succeeded", "retrying") for row in finals)
    redelivered = {row.row for row in finals if row.outcome == "retrying"}
    assert all("died or lost its connection" in row.error for row in finals if row.outcome == "retrying")
    assert redelivered, "the rows the victim held were redelivered and counted as an attempt"


@pytest.mark.job_settings({"prefetch": 5})
def test_cancelled_upload_is_skipped_and_reported_while_another_is_handled(harness: Harness, broker: Broker) -> None:
    worker = harness.start_worker("w1")
    wait_until(lambda: '"event": "consuming"' in worker.log(), timeout=30, what="the worker to consume")
    cancelled = harness.enqueue([{"n": i, "sleep_ms": 40} for i in range(50)])
    kept = harness.enqueue([{"n": i} for i in range(30)])
    wait_until(lambda: len(harness.records()) >= 3, timeout=30, what="the first upload under way")
    with broker.channel() as channel:
        declare_outcome_routes(channel)
        channel.basic_publish(UPLOADS_EXCHANGE, "", b'{"cancelled": "not a list"}')
        channel.basic_publish(UPLOADS_EXCHANGE, "", CancelNotice([cancelled]).to_json())
    reports = Reports(harness)
    wait_until(lambda: len(final_rows(reports.take(kept))) == 30, timeout=60, what="the other upload finished")
    wait_until(lambda: len(final_rows(reports.take(cancelled))) == 50, timeout=30, what="the cancelled upload final")
    outcomes = Counter(row.outcome for row in reports.take(cancelled))
    assert outcomes["cancelled"] > 0 and outcomes["succeeded"] + outcomes["cancelled"] == 50
    assert {row.outcome for row in reports.take(kept)} == {"succeeded"}
    handled = Counter(record["id"].rpartition(":")[0] for record in harness.records())
    assert handled[cancelled] == outcomes["succeeded"], "no cancelled row reached the handler"
    assert handled[kept] == 30
    assert "malformed cancel notice dropped" in worker.log() and worker.process.poll() is None
    wait_until(lambda: harness.depth() == 0 and harness.unacked() == 0, timeout=10, what="every row acked")


def test_a_report_round_trips_in_order_with_rows_grouped() -> None:
    rows = [
        RowOutcome("u1", 1, "succeeded"),
        RowOutcome("u2", 9, "dead", attempts=3, replay=1, error="boom", body='{"a": "1"}'),
        RowOutcome("u1", 2, "succeeded"),
        RowOutcome("u1", 3, "succeeded"),
    ]
    body = OutcomeReport("w1", "work", rows).to_json()
    assert OutcomeReport.from_json(body) == OutcomeReport("w1", "work", rows)
    assert [group["rows"] for group in json.loads(body)["groups"]] == [[1], [9], [2, 3]]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (None, "needs a list of objects 'groups'"),
        ([{"upload_id": "u", "outcome": "succeeded"}], "needs a list 'rows'"),
        ([{"upload_id": "u", "outcome": "lost", "rows": [1]}], "unknown outcome 'lost'"),
        ([{"upload_id": "u", "outcome": "dead", "rows": ["1"]}], "field 'row' must be int"),
    ],
)
def test_a_malformed_report_is_refused_with_the_reason(groups: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OutcomeReport.from_json(json.dumps({"worker_id": "w1", "job_type": "work", "groups": groups}).encode())


@pytest.mark.parametrize("header", [["upload-a"], {"id": "upload-a"}, 7, None, b"upload-a"])
def test_an_upload_id_header_that_is_not_a_string_is_simply_not_cancelled(header) -> None:
    """Another process wrote the header: while some upload is cancelled, a list (unhashable) must not raise."""
    hook = Cancellations(memory_seconds=60, logger=logging.getLogger("test"))
    hook.cancelled = {"upload-a": 0.0}
    delivery = Delivery(1, pika.BasicProperties(headers={"upload_id": header}), b"{}", False, 0)
    assert hook.before_handle(delivery) is None
    named = Delivery(2, pika.BasicProperties(headers={"upload_id": "upload-a"}), b"{}", False, 0)
    assert hook.before_handle(named).status is Status.CANCELLED
