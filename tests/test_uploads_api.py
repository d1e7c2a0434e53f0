"""Upload records over the producer's HTTP API, with the workers' side played by the test (real broker, real process).

The test publishes OutcomeReports itself, exactly as workers do, so the
record's rules are shown end to end through the tracker: counts, the
failed-row report, replay, cancel notices, idempotent re-upload, a killed
tracker.
"""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from common.outcomes import (
    DEAD_OUTCOMES_QUEUE,
    LINE_HEADER,
    OUTCOMES_QUEUE,
    REJECT_DETAIL_HEADER,
    REJECT_REASON_HEADER,
    REPLAY_HEADER,
    RowOutcome,
    split_message_id,
)
from harness.broker import Broker, create_vhost, delete_vhost
from harness.stack import Stack
from harness.waiting import wait_until
from tests.support.outcomes import CancelListener, publish_reports
from tests.support.proxy import CuttableProxy, producer_behind
from tests.support.uploads import record, wait_record

TOKEN = "uploads-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HEADER = "Date,Item Description,Quantity,Amount\n"


@pytest.fixture(scope="module")
def stack(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    created = Stack(
        broker,
        tmp_path_factory.mktemp("uploads-api"),
        {"sales": {"default": True}, "sleep": {}},
        env={"PRODUCER_TOKEN": TOKEN, "UPLOADS_CANCEL_NOTICE_SECONDS": "0.5"},
    )
    created.start_producer()
    yield created
    created.stop()


@pytest.fixture()
def own_broker() -> Iterator[Broker]:
    """A vhost of this test's own: every producer sharing a vhost must share one store, the module's does not."""
    created = create_vhost()
    yield created
    delete_vhost(created)


def rows_csv(count: int) -> bytes:
    return (HEADER + "".join(f"2024-01-01,Item {i},1,2.50\n" for i in range(1, count + 1))).encode()


def upload(stack: Stack, body: bytes, job_type: str = "sales", key: str | None = None, **kwargs) -> httpx.Response:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    return httpx.post(
        f"{stack.producer_url}/upload",
        files={"file": ("data.csv", body, "text/csv")},
        data={"job_type": job_type},
        headers=headers,
        timeout=kwargs.get("timeout", 60),
    )


def queued_messages(broker: Broker, queue: str) -> list[tuple[int, dict, bytes]]:
    """(row, headers, body) of every message in the queue, drained."""
    return [
        (split_message_id(properties.message_id)[1], properties.headers or {}, body)
        for properties, body in broker.drain(queue)
    ]


def test_upload_creates_a_record_that_reports_move(stack: Stack, broker: Broker) -> None:
    response = upload(stack, rows_csv(5))
    assert response.status_code == 200, response.text
    answer = response.json()
    upload_id = answer["upload_id"]
    assert answer["status_url"] == f"/uploads/{upload_id}"
    first = record(stack, upload_id)
    assert first["state"] == "queued" and first["rows"] == 5 and first["pending"] == 5
    assert first["file_name"] == "data.csv" and first["job_type"] == "sales"
    assert first["failed_rows_url"] == f"/uploads/{upload_id}/failed-rows.csv"
    queued_messages(broker, stack.queue_of("sales"))

    publish_reports(broker, "sales", [[RowOutcome(upload_id, 1, "succeeded"), RowOutcome(upload_id, 2, "retrying")]])
    running = wait_record(stack, upload_id, lambda r: r["succeeded"] == 1, "the first report to count")
    assert running["state"] == "running" and running["retrying"] == 1 and running["pending"] == 4

    done_rows = [RowOutcome(upload_id, row, "succeeded") for row in (2, 3, 4)] + [
        RowOutcome(upload_id, 5, "dead", attempts=3, error="bad amount", body='{"Date":"x"}')
    ]
    publish_reports(broker, "sales", [done_rows, done_rows])  # the same report twice: counted once
    done = wait_record(stack, upload_id, lambda r: r["state"] == "done", "the upload to be done")
    assert (done["succeeded"], done["retrying"], done["dead"], done["cancelled"], done["pending"]) == (4, 0, 1, 0, 0)
    assert done["finished_at"] >= done["created_at"] and done["eta_seconds"] == 0

    listing = stack.get(f"{stack.producer_url}/uploads", params={"job_type": "sales", "state": "done"}).json()
    assert upload_id in [item["id"] for item in listing["uploads"]]
    metrics = stack.get(f"{stack.producer_url}/metrics").text
    assert 'uploads_rows_finished_total{job_type="sales",outcome="dead"}' in metrics
    assert "uploads_duration_seconds_bucket" in metrics and "uploads_in_progress" in metrics


def test_failed_row_csv_has_original_columns_and_true_line_numbers(stack: Stack, broker: Broker) -> None:
    text = (
        HEADER
        + "2024-01-01,plain,1,1\n"  # row 1, line 2
        + '2024-01-02,"two\nlines",2,2\n'  # row 2, lines 3-4
        + "\n"  # a blank line (skipped)
        + "2024-01-03,after,x,3\n"  # row 3, line 6
        + '2024-01-04,"a, comma",y,4\n'  # row 4, line 7
    )
    queue = stack.queue_of("sales")
    queued_messages(broker, queue)
    answer = upload(stack, text.encode()).json()
    upload_id = answer["upload_id"]
    queued = queued_messages(broker, queue)
    messages = {row: body.decode() for row, _, body in queued}
    lines = {row: headers[LINE_HEADER] for row, headers, _ in queued}
    assert lines == {1: 2, 2: 3, 3: 6, 4: 7}, "each row's message carries the line it starts on"
    publish_reports(
        broker,
        "sales",
        [
            [RowOutcome(upload_id, 1, "succeeded"), RowOutcome(upload_id, 2, "succeeded")],
            [  # as workers report dead rows: with the body and the line header of their message
                RowOutcome(
                    upload_id,
                    row,
                    "dead",
                    attempts=3,
                    error=f"Quantity {q!r} is not a number",
                    body=messages[row],
                    line=lines[row],
                )
                for row, q in ((3, "x"), (4, "y"))
            ],
        ],
    )
    wait_record(stack, upload_id, lambda r: r["state"] == "done", "the upload to be done")
    response = stack.get(f"{stack.producer_url}/uploads/{upload_id}/failed-rows.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.text)))
    assert table == [
        ["Date", "Item Description", "Quantity", "Amount", "line", "attempts", "error"],
        ["2024-01-03", "after", "x", "3", "6", "3", "Quantity 'x' is not a number"],
        ["2024-01-04", "a, comma", "y", "4", "7", "3", "Quantity 'y' is not a number"],
    ]


def test_replay_requeues_dead_rows_once_and_a_row_failing_again_counts_once(stack: Stack, broker: Broker) -> None:
    queue = stack.queue_of("sales")
    queued_messages(broker, queue)
    upload_id = upload(stack, rows_csv(4)).json()["upload_id"]
    bodies = {row: body.decode() for row, _, body in queued_messages(broker, queue)}
    dead = [RowOutcome(upload_id, row, "dead", attempts=3, error="boom", body=bodies[row]) for row in (2, 3, 4)]
    publish_reports(broker, "sales", [[RowOutcome(upload_id, 1, "succeeded"), *dead]])
    wait_record(stack, upload_id, lambda r: r["dead"] == 3, "three dead rows")

    with ThreadPoolExecutor(4) as pool:  # pressed four times at once
        answers = list(
            pool.map(
                lambda _: stack.post(f"{stack.producer_url}/uploads/{upload_id}/replay", headers=AUTH, timeout=30),
                range(4),
            )
        )
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    assert sum(answer.json()["replayed"] for answer in answers) == 3
    replayed = queued_messages(broker, queue)
    assert sorted(row for row, _, _ in replayed) == [2, 3, 4]
    assert all(headers[REPLAY_HEADER] == 1 and headers["upload_id"] == upload_id for _, headers, _ in replayed)
    assert {row: body.decode() for row, _, body in replayed} == {row: bodies[row] for row in (2, 3, 4)}
    after = record(stack, upload_id)
    assert (after["dead"], after["pending"], after["state"], after["replays"]) == (0, 3, "running", 1)

    # A late report of the first run is ignored; of the replay, row 4 fails again (reported twice) and counts once.
    stale = [RowOutcome(upload_id, 2, "dead", replay=0, body=bodies[2])]
    second = [
        RowOutcome(upload_id, 2, "succeeded", replay=1),
        RowOutcome(upload_id, 3, "succeeded", replay=1),
        RowOutcome(upload_id, 4, "dead", replay=1, attempts=3, error="still", body=bodies[4]),
    ]
    publish_reports(broker, "sales", [stale, second, second[2:]])
    done = wait_record(stack, upload_id, lambda r: r["state"] == "done", "the replay to finish")
    assert (done["succeeded"], done["dead"], done["pending"]) == (3, 1, 0)


def test_cancel_announces_the_upload_until_its_rows_are_reported(stack: Stack, broker: Broker) -> None:
    listener = CancelListener(broker)
    try:
        keep = upload(stack, rows_csv(3)).json()["upload_id"]
        stop = upload(stack, rows_csv(4)).json()["upload_id"]
        publish_reports(broker, "sales", [[RowOutcome(stop, 1, "succeeded")]])
        wait_record(stack, stop, lambda r: r["succeeded"] == 1, "the first row to count")
        answer = stack.post(f"{stack.producer_url}/uploads/{stop}/cancel", headers=AUTH)
        assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
        wait_until(
            lambda: len([n for n in listener.notices() if stop in n.cancelled]) >= 1,
            timeout=10,
            what="a cancel notice naming the upload",
        )
        wait_until(lambda: any(stop in n.cancelled for n in listener.notices()), timeout=10, what="a repeated notice")

        publish_reports(
            broker,
            "sales",
            [[RowOutcome(stop, row, "cancelled") for row in (2, 3, 4)] + [RowOutcome(stop, 2, "succeeded")]],
        )
        final = wait_record(stack, stop, lambda r: r["pending"] == 0, "every row of the cancelled upload reported")
        assert final["state"] == "cancelled" and final["finished_at"] is not None
        assert (final["succeeded"], final["cancelled"]) == (1, 3)
        refused = stack.post(f"{stack.producer_url}/uploads/{stop}/replay", headers=AUTH)
        assert refused.status_code == 409 and "was cancelled" in refused.json()["error"]
        assert final["succeeded"] + final["dead"] + final["cancelled"] == final["rows"]
        untouched = record(stack, keep)
        assert (untouched["state"], untouched["pending"], untouched["cancelled"]) == ("queued", 3, 0)
        # A finished cancelled upload is no longer announced: the next notice names only the newly cancelled one.
        stack.post(f"{stack.producer_url}/uploads/{keep}/cancel", headers=AUTH).raise_for_status()
        notice = wait_until(
            lambda: next((n for n in listener.notices() if keep in n.cancelled), None), timeout=10, what="a notice"
        )
        assert stop not in notice.cancelled
    finally:
        listener.close()


def test_idempotency_key_same_file_same_upload_other_file_409(stack: Stack, broker: Broker) -> None:
    queue = stack.queue_of("sleep")
    first = upload(stack, rows_csv(3), "sleep", key="file-abc")
    again = upload(stack, rows_csv(3), "sleep", key="file-abc")
    assert first.status_code == again.status_code == 200
    assert first.json()["upload_id"] == again.json()["upload_id"]
    assert len(queued_messages(broker, queue)) == 3, "the retry of a finished upload publishes nothing"
    other = upload(stack, rows_csv(4), "sleep", key="file-abc")
    assert other.status_code == 409
    assert "Idempotency-Key 'file-abc'" in other.json()["error"] and "another file" in other.json()["error"]
    bad = upload(stack, rows_csv(1), "sleep", key="has space")
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]


def test_replay_and_cancel_need_the_token_from_loopback_too(broker: Broker, tmp_path: Path) -> None:
    stack = Stack(broker, tmp_path, {"sleep": {}}, env={"PRODUCER_TOKEN": TOKEN})
    stack.start_producer()
    try:
        for action in ("replay", "cancel"):
            refused = httpx.post(f"{stack.producer_url}/uploads/some-id/{action}")
            assert refused.status_code == 401, refused.text
            assert ".run/producer.token" in refused.json()["error"], "the refusal says where the token is"
            wrong = httpx.post(f"{stack.producer_url}/uploads/some-id/{action}", headers={"Authorization": "Bearer x"})
            assert wrong.status_code == 401
            allowed = httpx.post(f"{stack.producer_url}/uploads/some-id/{action}", headers=AUTH)
            assert allowed.status_code == 404 and "no upload 'some-id'" in allowed.json()["error"]
    finally:
        stack.stop()


def test_errors_are_named_and_clear(stack: Stack) -> None:
    missing = stack.get(f"{stack.producer_url}/uploads/nope")
    assert missing.status_code == 404 and "no upload 'nope'" in missing.json()["error"]
    assert stack.get(f"{stack.producer_url}/uploads/nope/failed-rows.csv").status_code == 404
    assert stack.post(f"{stack.producer_url}/uploads/nope/cancel", headers=AUTH).status_code == 404
    bad_state = stack.get(f"{stack.producer_url}/uploads", params={"state": "sideways"})
    assert bad_state.status_code == 400 and "running" in bad_state.json()["error"]


def test_reports_that_cannot_be_applied_are_dead_lettered_with_their_reason_and_counting_goes_on(
    stack: Stack, broker: Broker
) -> None:
    upload_id = upload(stack, rows_csv(2)).json()["upload_id"]
    with broker.channel() as channel:
        channel.basic_publish("", OUTCOMES_QUEUE, b"not json")
        channel.basic_publish("", OUTCOMES_QUEUE, json.dumps({"worker_id": "w", "job_type": "x"}).encode())
    hostile = [
        RowOutcome(upload_id, 1, "succeeded", replay=99999999999999999999),  # the x-replay, copied
        RowOutcome(upload_id, 7, "succeeded"),
        RowOutcome(upload_id, 1, "retrying", attempts=2**40),
        RowOutcome(upload_id, 2, "dead", body="a\x00b"),
    ]
    publish_reports(broker, "sales", [[row] for row in hostile] + [[hostile[0], RowOutcome(upload_id, 2, "succeeded")]])
    publish_reports(broker, "sales", [[RowOutcome(upload_id, 1, "succeeded")]])
    done = wait_record(stack, upload_id, lambda r: r["state"] == "done", "the good rows after six bad reports")
    assert (done["succeeded"], done["dead"], done["retrying"]) == (2, 0, 0), "nothing of a rejected row counted"

    dead = [properties.headers for properties, _ in broker.drain(DEAD_OUTCOMES_QUEUE)]
    assert sorted((headers[REJECT_REASON_HEADER], headers["x-applied-rows"]) for headers in dead) == [
        ("attempts-out-of-range", 0),
        ("malformed", 0),
        ("malformed", 0),
        ("replay-not-issued", 0),
        ("replay-not-issued", 1),  # its other row (row 2 succeeded) was applied
        ("row-out-of-range", 0),
        ("text-not-storable", 0),
    ]
    details = {headers[REJECT_REASON_HEADER]: headers[REJECT_DETAIL_HEADER] for headers in dead}
    assert (
        details["replay-not-issued"]
        == f"row 1 of upload {upload_id!r}: replay 99999999999999999999 was never issued (replays so far: 0)"
    )
    assert details["row-out-of-range"] == f"row 7 of upload {upload_id!r}: the upload has rows 1..2"
    assert broker.queue_depth(OUTCOMES_QUEUE) == 0
    health = httpx.get(f"{stack.producer_url}/healthz", headers=stack.auth_headers())
    assert health.status_code == 200 and health.json()["upload_tracker"]["dead_lettered"] >= 7, health.text
    metrics = httpx.get(f"{stack.producer_url}/metrics", headers=stack.auth_headers()).text
    assert 'uploads_report_rows_rejected_total{reason="replay-not-issued"} 2.0' in metrics
    assert f"moved to {DEAD_OUTCOMES_QUEUE}: replay-not-issued: row 1 of upload" in stack.producer.log()


def test_tracker_killed_mid_stream_restarts_with_exact_counts(own_broker: Broker, tmp_path: Path) -> None:
    broker = own_broker
    stack = Stack(broker, tmp_path, {"sleep": {}})
    stack.start_producer()
    try:
        rows = 3000
        upload_id = stack.upload(rows_csv(rows), "sleep").json()["upload_id"]
        # Every row reported twice (a redelivery after a worker died), in batches of 20, some dead.
        outcomes = [
            RowOutcome(upload_id, r, "dead" if r % 100 == 0 else "succeeded", body="{}") for r in range(1, rows + 1)
        ]
        batches = [outcomes[i : i + 20] for i in range(0, rows, 20)]
        publisher = threading.Thread(target=publish_reports, args=(broker, "sleep", batches + batches))
        publisher.start()
        wait_until(lambda: record(stack, upload_id)["succeeded"] > 100, timeout=30, what="the tracker under way")
        stack.producer.signal(signal.SIGKILL)
        stack.producer.process.wait(10)
        publisher.join(60)
        stack.start_producer()
        done = wait_record(stack, upload_id, lambda r: r["state"] == "done", "the restarted tracker to finish")
        assert (done["succeeded"], done["dead"], done["pending"]) == (rows - 30, 30, 0)
    finally:
        stack.stop()


def test_a_blocked_tracker_turns_healthz_503_naming_it_and_is_replaced(
    own_broker: Broker,
    tmp_path: Path,
    fresh_postgres_url: str,
    postgres_server,  # noqa: F811
) -> None:
    """Another session holds a lock on the settled-rows table (Postgres): the tracker's write waits on it, for real,
    while reads (the record, the reports' checks) go on."""
    env = {"UPLOADS_TRACKER_STALL_SECONDS": "2", "UPLOADS_DATABASE_URL": fresh_postgres_url}
    stack = Stack(own_broker, tmp_path, {"sleep": {}}, env=env)
    stack.start_producer()
    database = fresh_postgres_url.rsplit("/", 1)[1]
    holder = psycopg.connect(f"host={postgres_server.host} port={postgres_server.port} user=postgres dbname={database}")

    def healthz() -> httpx.Response:
        return httpx.get(f"{stack.producer_url}/healthz", headers=stack.auth_headers(), timeout=5)

    try:
        upload_id = stack.upload(rows_csv(10), "sleep").json()["upload_id"]
        # The producer's own writes for this upload (queued, its lease released) are done before the lock is taken.
        wait_record(stack, upload_id, lambda r: r["state"] == "queued", "the upload to be queued")
        holder.execute("LOCK TABLE upload_settled IN EXCLUSIVE MODE")  # plain reads still pass
        publish_reports(own_broker, "sleep", [[RowOutcome(upload_id, row, "succeeded")] for row in range(1, 11)])
        stuck = wait_until(
            lambda: (lambda r: r.json() if r.status_code == 503 else None)(healthz()),
            timeout=30,
            interval=0.1,
            what="/healthz to name the blocked tracker",
        )
        assert stuck["status"] == "unhealthy" and len(stuck["problems"]) == 1, stuck
        assert re.fullmatch(r"tracker: no progress for \d+ s with \d+ reports waiting", stuck["problems"][0]), stuck
        wait_until(
            lambda: (lambda r: r.status_code == 503 and r.json()["upload_tracker"]["restarts"] >= 1)(healthz()),
            timeout=30,
            what="the watchdog to start a new tracker thread (the blocked one still holds the reports: still 503)",
        )
        assert record(stack, upload_id)["succeeded"] == 0
        holder.rollback()
        done = wait_record(stack, upload_id, lambda r: r["state"] == "done", "the reports applied once the lock goes")
        assert (done["succeeded"], done["pending"]) == (10, 0)
        wait_until(lambda: healthz().status_code == 200, timeout=10, what="/healthz back to 200")
        assert "starting a new tracker thread" in stack.producer.log()
    finally:
        holder.close()
        stack.stop()


def test_reupload_after_broker_cut_mid_upload_finishes_the_same_record(own_broker: Broker, tmp_path: Path) -> None:
    broker = own_broker
    proxy = CuttableProxy()
    stack = producer_behind(proxy, broker, tmp_path, {"sleep": {}})
    try:
        queue = stack.queue_of("sleep")
        rows = 100_000
        body = rows_csv(rows)
        headers = {"Idempotency-Key": "big-file-1"}
        proxy.cut_after(2_000_000)  # a few thousand rows into the upload
        first_try = stack.upload(body, "sleep", headers=headers)
        answer = first_try.json()
        assert first_try.status_code == 503, answer
        confirmed = answer["confirmed"]
        assert 0 < confirmed < rows and record(stack, answer["upload_id"])["state"] == "interrupted"
        proxy.restore()
        retry = wait_until(
            lambda: (lambda r: r if r.status_code == 200 else None)(stack.upload(body, "sleep", headers=headers)),
            timeout=60,
            interval=1,
            what="the retry to succeed once the broker is back",
        )
        assert retry.json()["upload_id"] == answer["upload_id"]
        upload_id = answer["upload_id"]
        messages = queued_messages(broker, queue)
        numbers = [row for row, _, _ in messages]
        assert set(numbers) == set(range(1, rows + 1)), "every row is in the queue"
        duplicates = len(numbers) - rows
        assert 0 <= duplicates <= 2000, "only rows after the confirmed count, within the publish window, twice"
        assert numbers.count(confirmed) == 1 if confirmed else True
        # Workers handle every message, duplicates included: the record counts each row once.
        reports = [RowOutcome(upload_id, row, "succeeded") for row in numbers]
        publish_reports(broker, "sleep", [reports[i : i + 500] for i in range(0, len(reports), 500)])
        done = wait_until(
            lambda: (lambda r: r if r["state"] == "done" else None)(record(stack, upload_id)),
            timeout=120,
            what="every row counted",
        )
        assert (done["succeeded"], done["pending"], done["rows"]) == (rows, 0, rows)
    finally:
        stack.stop()
        proxy.close()


def test_postgres_store_outage_is_visible_and_loses_no_report(
    own_broker: Broker, tmp_path: Path, fresh_postgres_url: str, postgres_server
) -> None:
    """The producer on Postgres (as in Kubernetes): the database goes away, reports wait in the queue, none is lost."""
    broker = own_broker
    database = fresh_postgres_url.rsplit("/", 1)[1]
    admin = f"host={postgres_server.host} port={postgres_server.port} user=postgres dbname=postgres"
    stack = Stack(broker, tmp_path, {"sleep": {}}, env={"UPLOADS_DATABASE_URL": fresh_postgres_url})
    stack.start_producer()
    try:
        upload_id = stack.upload(rows_csv(100), "sleep").json()["upload_id"]
        publish_reports(broker, "sleep", [[RowOutcome(upload_id, row, "succeeded") for row in range(1, 51)]])
        wait_record(stack, upload_id, lambda r: r["succeeded"] == 50, "the first half counted")

        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
        publish_reports(broker, "sleep", [[RowOutcome(upload_id, row, "succeeded") for row in range(51, 101)]])
        down = stack.get(f"{stack.producer_url}/uploads/{upload_id}")
        assert down.status_code == 503 and "upload store" in down.json()["error"], down.text
        tracker = wait_until(
            lambda: (lambda t: t if t["state"] == "store-unavailable" else None)(
                stack.get(f"{stack.producer_url}/healthz").json()["upload_tracker"]
            ),
            timeout=30,
            what="the tracker to say the store is unavailable",
        )
        assert "upload store" in tracker["reason"]
        assert broker.queue_depth("autoscaler.outcomes") == 1, "the report waits, unacked, for the store"

        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        done = wait_record(stack, upload_id, lambda r: r["state"] == "done", "the report applied after the outage", 60)
        assert (done["succeeded"], done["pending"]) == (100, 0)
    finally:
        stack.stop()


def test_cancelling_an_upload_that_never_finished_publishing_ends_it(own_broker: Broker, tmp_path: Path) -> None:
    proxy = CuttableProxy()
    stack = producer_behind(proxy, own_broker, tmp_path, {"sleep": {}})
    try:
        proxy.cut()
        failed = stack.upload(rows_csv(20), "sleep", headers={"Idempotency-Key": "never-published"})
        assert failed.status_code == 503 and failed.json()["confirmed"] == 0
        upload_id = failed.json()["upload_id"]
        assert record(stack, upload_id)["state"] == "interrupted"
        cancelled = stack.post(f"{stack.producer_url}/uploads/{upload_id}/cancel").json()
        assert (cancelled["state"], cancelled["cancelled"], cancelled["pending"]) == ("cancelled", 20, 0)
        assert cancelled["finished_at"] is not None
        proxy.restore()
        again = stack.upload(rows_csv(20), "sleep", headers={"Idempotency-Key": "never-published"})
        assert again.status_code == 409 and "was cancelled" in again.json()["error"]
    finally:
        stack.stop()
        proxy.close()
