"""Upload-record benchmark: store size per row, report-apply rate through the real tracker, GET latency, replay and
cancel memory, on SQLite and on PostgreSQL.

    ./manage.sh bench uploads                 (or .venv/bin/python bench/uploads.py)
    ./manage.sh bench uploads --rows 200000 --backends sqlite

For each backend (a SQLite file in a temporary directory; a PostgreSQL server
started for the run from Debian's binaries, as the tests do):

1. storage: a record of `--rows` rows, all published, every row reported
   `succeeded` straight to the store in batches shaped like the tracker's
   (200 reports of 100 rows); the store's size before and after (SQLite: the
   file after a WAL checkpoint; PostgreSQL: the tables, indexes and TOAST of
   the store, not vacuumed), per row; and what the store holds for them: the
   bitmap's bytes and the number of row states.
2. GET: with that record in the store, the time to read and render one record
   (`GET /uploads/<id>`'s work) and the 50 latest (`GET /uploads`'s), median of 20.
3. tracker: `--tracker-rows` rows reported in worker-shaped reports (4 workers,
   rows dealt in blocks of 25, 100 rows a report, 1% of rows dead with a body
   and line), published to `autoscaler.outcomes` on a private vhost of the real
   RabbitMQ first; then the real `Tracker` thread starts and the clock runs
   until it has applied every report; rows per second; the record is checked
   (done, exact counts).
4. replay and cancel: `--dead-rows` rows dead with bodies replayed (claimed
   page by page as the producer does, without publishing), and a cancel of an
   upload of `--cancel-rows` rows of which none were published: the peak of
   Python memory allocated (tracemalloc), at a tenth of the size and at full
   size, and, measured apart (tracemalloc slows Python down), the longest
   single transaction.
5. end to end: a producer process on that store, an upload of `--e2e-rows`
   rows, then 4 worker processes with a no-op handler; the time from the
   queue reading empty (no message ready, read over AMQP every 10 ms; the
   workers may still hold their last unacked rows) to `GET /uploads/<id>`
   answering `done`, polled every 10 ms; then `GET /uploads/storage` (the
   million-row upload of step 1) and `GET /uploads`, over HTTP, median of 20.

Figures are printed and written to bench/results/uploads.json with the date,
commit, cores and memory of the machine; `./manage.sh readme` makes the
README's table from it (with `readme_rows`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pika
import psycopg
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.outcomes import OUTCOMES_QUEUE, OutcomeReport, RowOutcome, declare_outcome_routes  # noqa: E402
from harness.broker import Broker, create_vhost, delete_vhost  # noqa: E402
from harness.measure import median_seconds, peak_memory  # noqa: E402
from harness.postgres import running_postgres  # noqa: E402
from harness.processes import Service  # noqa: E402
from harness.stack import Stack  # noqa: E402
from harness.waiting import wait_until  # noqa: E402
from uploads.model import UploadRecord, public  # noqa: E402
from uploads.settings import UploadSettings  # noqa: E402
from uploads.sql import ROWS, SETTLED, SqlStore  # noqa: E402
from uploads.tracker import Tracker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "uploads.json"
REPORT_ROWS = 100
BATCH_REPORTS = 200
WORKERS = 4
BLOCK = 25


def draft(upload_id: str, rows: int) -> UploadRecord:
    return UploadRecord(
        id=upload_id, job_type="bench", file_name="bench.csv", rows=rows, header=["n"], created_at=time.time()
    )


def published(store: SqlStore, upload_id: str, rows: int) -> None:
    store.begin_upload(draft(upload_id, rows))
    store.mark_published(upload_id, rows, None)


def storage(store: SqlStore, rows: int) -> dict[str, Any]:
    before = store.disk_bytes()
    published(store, "storage", rows)
    batch = REPORT_ROWS * BATCH_REPORTS
    started = time.perf_counter()
    for first in range(1, rows + 1, batch):
        store.apply([RowOutcome("storage", row, "succeeded") for row in range(first, min(first + batch, rows + 1))])
    seconds = time.perf_counter() - started
    record = store.get("storage")
    assert record.state == "done" and record.succeeded == rows, record
    added = store.disk_bytes() - before
    with store.engine.connect() as connection:
        bitmap = connection.execute(select(func.sum(func.length(SETTLED.c.bits)))).scalar_one()
        row_states = connection.execute(select(func.count()).select_from(ROWS)).scalar_one()
    return {
        "rows": rows,
        "bitmap_bytes": bitmap,
        "row_states": row_states,
        "bytes_added": added,
        "bytes_per_row": round(added / rows, 3),
        "store_apply_rows_per_second": round(rows / seconds),
    }


# GET ----------------------------------------------------------------------------------------------------
def get_latency(store: SqlStore) -> dict[str, Any]:
    def one() -> str:
        return json.dumps(public(store.get("storage"), "/uploads/storage", time.time(), store.max_failed_rows))

    def latest() -> str:
        records = store.recent(None, None, 50)
        return json.dumps([public(r, f"/uploads/{r.id}", time.time(), store.max_failed_rows) for r in records])

    return {
        "get_upload_ms": round(median_seconds(one, 20) * 1000, 2),
        "list_uploads_ms": round(median_seconds(latest, 20) * 1000, 2),
    }


# the tracker ----------------------------------------------------------------------------------------------
def worker_reports(upload_id: str, rows: int) -> Iterator[bytes]:
    """Reports as 4 workers send them: each takes blocks of 25 rows in turn and reports 100 rows at a time."""
    pending: list[list[RowOutcome]] = [[] for _ in range(WORKERS)]
    for block, first in enumerate(range(1, rows + 1, BLOCK)):
        mine = pending[block % WORKERS]
        for row in range(first, min(first + BLOCK, rows + 1)):
            if row % 100 == 37:
                mine.append(
                    RowOutcome(upload_id, row, "dead", 3, 0, "ValueError: bad amount", f'{{"n":"{row}"}}', row + 1)
                )
            else:
                mine.append(RowOutcome(upload_id, row, "succeeded"))
        if len(mine) >= REPORT_ROWS:
            yield OutcomeReport(f"worker-{block % WORKERS}", "bench", mine).to_json()
            mine.clear()
    for mine in pending:
        if mine:
            yield OutcomeReport("worker-last", "bench", mine).to_json()


def tracker_rate(store: SqlStore, rows: int, amqp_url: str) -> dict[str, Any]:
    published(store, "tracked", rows)
    reports = list(worker_reports("tracked", rows))
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as connection:
        channel = connection.channel()
        declare_outcome_routes(channel)
        channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        for body in reports:
            channel.basic_publish("", OUTCOMES_QUEUE, body, properties)
    tracker = Tracker(store, UploadSettings(database_url=str(store.url)))
    started = time.perf_counter()
    tracker.start()
    try:
        wait_until(lambda: tracker.status()["reports"] >= len(reports), timeout=600, interval=0.002, what="reports")
        seconds = time.perf_counter() - started
    finally:
        tracker.stop()
    record = store.get("tracked")
    dead = sum(1 for row in range(1, rows + 1) if row % 100 == 37)
    assert (record.state, record.succeeded, record.dead) == ("done", rows - dead, dead), record
    return {
        "rows": rows,
        "reports": len(reports),
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds),
    }


# replay and cancel ------------------------------------------------------------------------------------------
def dead_upload(store: SqlStore, upload_id: str, rows: int) -> None:
    """An upload whose rows all ended dead, with their bodies and lines kept."""
    published(store, upload_id, rows)
    batch = REPORT_ROWS * BATCH_REPORTS
    for first in range(1, rows + 1, batch):
        last = min(first + batch, rows + 1)
        store.apply(
            [
                RowOutcome(upload_id, row, "dead", 3, 0, "ValueError: bad", f'{{"n":"{row}"}}', row + 1)
                for row in range(first, last)
            ]
        )


def replay(store: SqlStore, upload_id: str) -> int:
    return sum(1 for _ in store.claim_replay(upload_id).rows)


def cancel(store: SqlStore, upload_id: str, rows: int) -> int:
    store.begin_upload(draft(upload_id, rows))
    store.request_cancel(upload_id)
    return store.cancel_unpublished(upload_id)


def peak_mb(action: Callable[[], int], expected: int) -> float:
    """Peak Python memory of the action under tracemalloc (which slows Python down: the time is measured apart)."""
    with peak_memory() as peak:
        assert action() == expected
    return round(peak() / 1e6, 2)


def timed(store: SqlStore, action: Callable[[], int], expected: int) -> float:
    """The longest transaction of the action, in seconds (no tracemalloc)."""
    store.longest_transaction_seconds = 0.0
    assert action() == expected
    return round(store.longest_transaction_seconds, 3)


def replay_and_cancel(store: SqlStore, dead_rows: int, cancel_rows: int) -> dict[str, Any]:
    """Replay and cancel at a tenth of the size and at full size (memory), and again at full size (time)."""
    small_dead, small_cancel = dead_rows // 10, cancel_rows // 10
    for upload_id, rows in (("dead-small", small_dead), ("dead-mem", dead_rows), ("dead-time", dead_rows)):
        dead_upload(store, upload_id, rows)
    replayed = {
        "dead_rows": dead_rows,
        "peak_mb_tenth": peak_mb(lambda: replay(store, "dead-small"), small_dead),
        "peak_mb": peak_mb(lambda: replay(store, "dead-mem"), dead_rows),
        "longest_transaction_s": timed(store, lambda: replay(store, "dead-time"), dead_rows),
    }
    cancelled = {
        "rows": cancel_rows,
        "peak_mb_tenth": peak_mb(lambda: cancel(store, "cancel-small", small_cancel), small_cancel),
        "peak_mb": peak_mb(lambda: cancel(store, "cancel-mem", cancel_rows), cancel_rows),
        "longest_transaction_s": timed(store, lambda: cancel(store, "cancel-time", cancel_rows), cancel_rows),
    }
    return {"replay": replayed, "cancel": cancelled}


# end to end -------------------------------------------------------------------------------------------------
def end_to_end(url: str, rows: int, broker: Broker, directory: Path) -> dict[str, Any]:
    noop = {"handler": "tests.handlers.noop", "max_workers": 0, "prefetch": 20}
    stack = Stack(broker, directory, {"noop": noop}, env={"UPLOADS_DATABASE_URL": url, "WORKER_LOG_LEVEL": "info"})
    stack.start_producer()
    workers: list[Service] = []
    try:
        csv = ("n\n" + "".join(f"{row}\n" for row in range(1, rows + 1))).encode()
        answer = stack.upload(csv, "noop", timeout=600)
        answer.raise_for_status()
        status_url = f"{stack.producer_url}{answer.json()['status_url']}"
        queue = stack.queue_of("noop")
        started = time.perf_counter()
        workers = [Service("workers", ["noop"], stack.env, directory / f"worker-{n}.log") for n in range(4)]
        wait_until(lambda: broker.queue_depth(queue) == 0, timeout=600, interval=0.01, what="the queue drained")
        empty = time.perf_counter()
        record = wait_until(
            lambda: (r := httpx.get(status_url, headers=stack.auth_headers()).json())["state"] == "done" and r,
            timeout=60,
            interval=0.01,
            what="the record done",
        )
        done = time.perf_counter()
        assert record["succeeded"] == rows, record
        headers = stack.auth_headers()
        with httpx.Client(base_url=stack.producer_url, headers=headers) as client:
            http = {  # over HTTP, with the million-row upload of step 1 in the store
                f"http_{name}_ms": round(median_seconds(lambda p=path: client.get(p).raise_for_status(), 20) * 1000, 2)
                for name, path in (("get_upload", "/uploads/storage"), ("list_uploads", "/uploads"))
            }
        return {
            "rows": rows,
            "workers": 4,
            "drain_seconds": round(empty - started, 2),
            "done_after_queue_empty_s": round(done - empty, 3),
            **http,
        }
    finally:
        for worker in workers:
            worker.stop()
        stack.stop()


# the run -------------------------------------------------------------------------------------------------
def run_backend(url: str, args: argparse.Namespace, broker: Broker) -> dict[str, Any]:
    store = SqlStore(url, max_failed_rows=max(args.dead_rows, 10_000), retention_seconds=86_400.0)
    try:
        figures = {"storage": storage(store, args.rows)}
        figures["get"] = get_latency(store)
        figures["tracker"] = tracker_rate(store, args.tracker_rows, broker.amqp_url)
        figures.update(replay_and_cancel(store, args.dead_rows, args.cancel_rows))
    finally:
        store.close()
    if args.e2e_rows:
        with tempfile.TemporaryDirectory(prefix="bench-uploads-e2e-") as directory:
            figures["end_to_end"] = end_to_end(url, args.e2e_rows, broker, Path(directory))
    return figures


@contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-uploads-") as directory:
            yield f"sqlite:///{directory}/uploads.db"
        return
    with running_postgres() as server:
        admin = f"host={server.host} port={server.port} user=postgres dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute("CREATE DATABASE bench")
        yield f"postgresql+psycopg://postgres@{server.host}:{server.port}/bench"


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    memory_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "commit": commit.stdout.strip(),
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1e6, 1),
        "python": platform.python_version(),
    }


def readme_rows(results: dict[str, Any]) -> str:
    """The README's table rows for a results file (bench/readme.py), so the figures there are the file's."""
    lines = []
    for backend, f in results["backends"].items():
        storage, tracker, replay, cancel = f["storage"], f["tracker"], f["replay"], f["cancel"]
        e2e = f.get("end_to_end", {})
        lines += [
            f"| {backend}: store added by {storage['rows']:,} rows all succeeded | {storage['bytes_added']:,} bytes "
            f"({storage['bitmap_bytes']} bytes of bitmap, {storage['row_states']} row states) |",
            f"| {backend}: reports applied through the tracker ({tracker['rows']:,} rows, {tracker['reports']:,} "
            f"reports, 1% dead) | {tracker['rows_per_second']:,} rows/s |",
            f"| {backend}: `GET /uploads/<id>` / `GET /uploads` with the {storage['rows']:,}-row upload in the store, over HTTP "
            f"(store only) | {e2e.get('http_get_upload_ms')} / {e2e.get('http_list_uploads_ms')} ms "
            f"({f['get']['get_upload_ms']} / {f['get']['list_uploads_ms']} ms) |",
            f"| {backend}: replay of {replay['dead_rows']:,} dead rows: peak Python memory (at a tenth of the rows), "
            f"longest transaction | {replay['peak_mb']} MB ({replay['peak_mb_tenth']} MB), "
            f"{replay['longest_transaction_s']} s |",
            f"| {backend}: cancel of {cancel['rows']:,} unpublished rows: peak Python memory (at a tenth), longest "
            f"transaction | {cancel['peak_mb']} MB ({cancel['peak_mb_tenth']} MB), {cancel['longest_transaction_s']} s |",
        ]
        if e2e:
            lines.append(
                f"| {backend}: {e2e['rows']:,} rows, {e2e['workers']} no-op workers: queue empty -> record `done` "
                f"| {e2e['done_after_queue_empty_s']} s (drained in {e2e['drain_seconds']} s) |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the all-succeeded upload")
    parser.add_argument("--tracker-rows", type=int, default=300_000, help="rows reported through the tracker")
    parser.add_argument("--dead-rows", type=int, default=1_000_000, help="dead rows replayed")
    parser.add_argument("--cancel-rows", type=int, default=2_000_000, help="rows of the cancelled upload")
    parser.add_argument("--e2e-rows", type=int, default=300_000, help="rows of the end-to-end upload (0: skip)")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON file")
    args = parser.parse_args()
    broker = create_vhost()
    os.environ["RABBITMQ_URL"] = broker.amqp_url  # the tracker's connection
    results: dict[str, Any] = {**machine(), "arguments": {k: str(v) for k, v in vars(args).items()}, "backends": {}}
    try:
        for backend in args.backends.split(","):
            with database(backend) as url:
                results["backends"][backend] = run_backend(url, args, broker)
            print(backend, json.dumps(results["backends"][backend], indent=2), flush=True)
    finally:
        delete_vhost(broker)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
