"""The sales job type: real computation, stored in batches idempotently in SQLite and Postgres; poison rows end in .dead."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pika
import pytest
from sqlalchemy import create_engine, text

from harness.broker import Broker
from harness.processes import REPO, Service
from harness.stack import Stack
from harness.waiting import wait_until
from workers.sales.handler import parse
from workers.sales.ledger import Ledger, Sale


def test_parse_validates_and_names_the_bad_field() -> None:
    sold_on, item, quantity, amount = parse(
        {"Date": "2024-02-03", "Item Description": " Tea ", "Quantity": "3", "Amount": "$1,204.50"}
    )
    assert (sold_on.isoformat(), item, str(quantity), str(amount)) == ("2024-02-03", "Tea", "3", "1204.50")
    for row, message in [
        (
            {"Date": "2024-02-03", "Item Description": "x", "Quantity": "lots", "Amount": "1"},
            "Quantity 'lots' is not a number",
        ),
        (
            {"Date": "yesterday", "Item Description": "x", "Quantity": "1", "Amount": "1"},
            "Date 'yesterday' is not a date",
        ),
        ({"Date": "2024-02-03", "Item Description": "", "Quantity": "1", "Amount": "1"}, "Item Description is empty"),
        ({"Date": "2024-02-03", "Item Description": "x", "Quantity": "0", "Amount": "1"}, "must be positive"),
        ({"Date": "2024-02-03", "Quantity": "1", "Amount": "1"}, "missing column"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse(row)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty sales database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sales.db'}"
    server = request.getfixturevalue("postgres_url")
    name = f"sales_{uuid.uuid4().hex[:8]}"
    with create_engine(server, isolation_level="AUTOCOMMIT").connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    return server.rsplit("/", 1)[0] + f"/{name}"


def totals(url: str) -> dict[str, tuple[int, float]]:
    with create_engine(url).connect() as connection:
        rows = connection.execute(text("SELECT item, row_count, amount FROM sales_item_totals")).fetchall()
    return {item: (count, float(Decimal(str(amount)))) for item, count, amount in rows}


def test_ledger_is_idempotent_by_message_id_and_keeps_rows_without_one(database_url: str) -> None:
    ledger = Ledger(database_url)
    batch = [
        Sale("u:1", "2024-01-01", "Tea", "2", "5.00", "2.5000"),
        Sale("u:2", "2024-01-01", "Tea", "1", "2.50", "2.5000"),
        Sale(None, "2024-01-02", "Tea", "1", "2.50", "2.5000"),
    ]
    ledger.store(batch)
    ledger.store(batch)  # redelivered: the two keyed rows are skipped, the unkeyed one has no key to dedupe by
    Ledger(database_url).store([Sale(None, "2024-01-03", "Tea", "1", "2.50", "2.5000")])  # a second worker
    assert totals(database_url) == {"Tea": (5, 15.0)}


def test_sales_rows_are_stored_once_in_batches_and_poison_rows_parked(
    broker: Broker, tmp_path: Path, database_url: str
) -> None:
    sample = subprocess.run(
        [sys.executable, "-m", "workers.sample", "40", "--bad-every", "10"], cwd=REPO, capture_output=True, check=True
    ).stdout
    stack = Stack(
        broker,
        tmp_path,
        {"sales": {"retry_delay_seconds": 0.05, "max_attempts": 2, "batch_size": 8, "batch_wait_ms": 100}},
    )
    stack.env["SALES_DATABASE_URL"] = database_url
    stack.start_producer()
    worker = None
    try:
        response = stack.upload(sample, "sales")
        assert response.status_code == 200
        upload_id = response.json()["upload_id"]
        worker = Service("workers", ["sales"], stack.env, tmp_path / "worker.log")
        queue = stack.queue_of("sales")
        wait_until(lambda: broker.queue_depth(queue + ".dead") == 4, timeout=60, what="4 poison rows in .dead")
        wait_until(lambda: broker.queue_depth(queue) == 0, timeout=30, what="the queue to drain")
        wait_until(lambda: sum(count for count, _ in totals(database_url).values()) == 36, timeout=30, what="36 rows")
        expected: dict[str, float] = {}
        for fields in list(csv.reader(io.StringIO(sample.decode())))[1:]:
            if fields[2] != "lots":
                expected[fields[1]] = round(expected.get(fields[1], 0) + float(fields[3]), 2)
        assert {item: amount for item, (_, amount) in totals(database_url).items()} == expected
        # A redelivered copy of a stored row is stored once; two rows without message id both count.
        body = b'{"Date": "2024-05-05", "Item Description": "Extra", "Quantity": "1", "Amount": "1.00"}'
        with broker.channel() as channel:
            again = pika.BasicProperties(message_id=f"{upload_id}:1", delivery_mode=2, headers={"upload_id": upload_id})
            channel.basic_publish("", queue, _first_row_body(sample), again)
            for _ in range(2):
                channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
        wait_until(lambda: totals(database_url).get("Extra", (0, 0))[0] == 2, timeout=30, what="both unkeyed rows")
        wait_until(lambda: broker.queue_depth(queue) == 0, timeout=30, what="the queue to drain")
        assert sum(count for count, _ in totals(database_url).values()) == 38
    finally:
        if worker:
            worker.stop()
        stack.stop()


def _first_row_body(sample: bytes) -> bytes:
    header, first = list(csv.reader(io.StringIO(sample.decode())))[:2]
    return json.dumps(dict(zip(header, first, strict=True))).encode()
