"""Sales rows -> the sales ledger, a batch per transaction, with unit prices.

Each row (Date, Item Description, Quantity, Amount) is validated and its unit
price computed (Amount / Quantity); a batch of rows is stored in one
transaction of the ledger (`workers.sales.ledger`: SQLite under `.run/` by
default, Postgres by `SALES_DATABASE_URL`), keyed by message id, so a
redelivered row is stored once however often it is processed.

A row whose Quantity or Amount is not a number, or whose Date is not a date,
raises ValueError: its batch stores nothing, the runtime splits the batch
until the bad row stands alone, and only that row is retried and, after
`max_attempts`, parked in `<queue>.dead` with the reason.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from workers.sales.ledger import Sale, ledger


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


def sale(row: dict[str, Any], message_id: str | None) -> Sale:
    sold_on, item, quantity, amount = parse(row)
    unit_price = (amount / quantity).quantize(Decimal("0.0001"))
    return Sale(message_id, sold_on.isoformat(), item, str(quantity), str(amount), str(unit_price))


def handle_batch(rows: list[dict[str, Any]], context: Any) -> None:
    sales = [sale(row, row_context.message_id) for row, row_context in zip(rows, context.rows, strict=True)]
    ledger().store(sales)
    context.logger.debug("sales stored", extra={"rows": len(sales)})
