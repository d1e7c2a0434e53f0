"""The sales job type: real computation stored idempotently; poison rows end in .dead."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.processes import REPO, Service
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from workers.sales.handler import parse


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


def test_sales_rows_are_totalled_once_and_poison_rows_parked(broker: Broker, tmp_path: Path) -> None:
    sample = subprocess.run(
        [sys.executable, "-m", "workers.sample", "40", "--bad-every", "10"], cwd=REPO, capture_output=True, check=True
    ).stdout
    stack = Stack(broker, tmp_path, {"sales": {"retry_delay_seconds": 0.05, "max_attempts": 2}})
    database = tmp_path / "sales.db"
    stack.env["SALES_DB"] = str(database)
    stack.start_producer()
    worker = None
    try:
        assert stack.upload(sample, "sales").status_code == 200
        worker = Service("workers", ["sales"], stack.env, tmp_path / "worker.log")
        queue = stack.queue_of("sales")
        wait_until(lambda: broker.queue_depth(queue + ".dead") == 4, timeout=60, what="4 poison rows in .dead")
        wait_until(lambda: broker.queue_depth(queue) == 0, timeout=30, what="the queue to drain")
        with sqlite3.connect(database) as db:
            wait_until(
                lambda: db.execute("SELECT COUNT(*) FROM sales").fetchone()[0] == 36, timeout=30, what="36 stored rows"
            )
            totals = dict(db.execute("SELECT item, amount FROM item_totals").fetchall())
        expected: dict[str, float] = {}
        for fields in list(csv.reader(io.StringIO(sample.decode())))[1:]:
            if fields[2] != "lots":
                expected[fields[1]] = round(expected.get(fields[1], 0) + float(fields[3]), 2)
        assert totals == expected
        assert '"event": "sale recorded"' in worker.log()
    finally:
        if worker:
            worker.stop()
        stack.stop()
