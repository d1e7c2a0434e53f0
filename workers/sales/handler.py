"""Sales rows -> a SQLite ledger with unit prices and per-item running totals.

Each row (Date, Item Description, Quantity, Amount) is validated, its unit
price computed (Amount / Quantity), and stored in the SQLite file at
`SALES_DB` (default `.run/sales.db`) keyed by the message id, so a redelivered
row is stored once however often it is processed. The per-item running totals
(quantity and amount so far) are logged with every row and can be read with:

    sqlite3 .run/sales.db 'SELECT * FROM item_totals'

A row whose Quantity or Amount is not a number, or whose Date is not a date,
raises: the runtime retries it and, after max_attempts, parks it in
`<queue>.dead` with the reason.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from jobtypes.settings import REPO_ROOT

SCHEMA = """
CREATE TABLE IF NOT EXISTS sales (
    message_id TEXT PRIMARY KEY,
    sold_on TEXT NOT NULL,
    item TEXT NOT NULL,
    quantity TEXT NOT NULL,
    amount TEXT NOT NULL,
    unit_price TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS item_totals AS
    SELECT item, COUNT(*) AS rows, SUM(CAST(quantity AS REAL)) AS quantity, ROUND(SUM(CAST(amount AS REAL)), 2) AS amount
    FROM sales GROUP BY item;
"""

_local = threading.local()


def _database() -> sqlite3.Connection:
    connection = getattr(_local, "connection", None)
    if connection is None:
        path = Path(os.environ.get("SALES_DB", REPO_ROOT / ".run" / "sales.db"))
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(SCHEMA)
        _local.connection = connection
    return connection


def _number(row: dict[str, Any], field: str) -> Decimal:
    raw = str(row.get(field, "")).strip().replace(",", "")
    for symbol in ("$", "€", "£"):
        raw = raw.replace(symbol, "")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{field} {row.get(field)!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{field} {row.get(field)!r} is not a finite number")
    return value


def parse(row: dict[str, Any]) -> tuple[date, str, Decimal, Decimal]:
    """Validate one sales row; raises ValueError naming the bad field."""
    missing = [field for field in ("Date", "Item Description", "Quantity", "Amount") if field not in row]
    if missing:
        raise ValueError(f"missing column(s) {missing}; expected Date, Item Description, Quantity, Amount")
    try:
        sold_on = date.fromisoformat(str(row["Date"]).strip())
    except ValueError:
        raise ValueError(f"Date {row['Date']!r} is not a date (YYYY-MM-DD)") from None
    item = str(row["Item Description"]).strip()
    if not item:
        raise ValueError("Item Description is empty")
    quantity = _number(row, "Quantity")
    if quantity <= 0:
        raise ValueError(f"Quantity {row['Quantity']!r} must be positive")
    return sold_on, item, quantity, _number(row, "Amount")


def handle(row: dict[str, Any], context: Any) -> None:
    sold_on, item, quantity, amount = parse(row)
    unit_price = (amount / quantity).quantize(Decimal("0.0001"))
    database = _database()
    database.execute(
        "INSERT OR IGNORE INTO sales VALUES (?, ?, ?, ?, ?, ?)",
        (context.message_id, sold_on.isoformat(), item, str(quantity), str(amount), str(unit_price)),
    )
    total_rows, total_quantity, total_amount = database.execute(
        "SELECT rows, quantity, amount FROM item_totals WHERE item = ?", (item,)
    ).fetchone()
    context.logger.info(
        "sale recorded",
        extra={
            "item": item,
            "unit_price": str(unit_price),
            "item_rows": total_rows,
            "item_quantity": total_quantity,
            "item_amount": total_amount,
        },
    )
