"""Spend a row's `sleep_ms` column, else `SLEEP_MS` milliseconds (default 2000, as the original prototype did).

It stands in for real work of a known duration, so scaling behaviour can be
shown and measured without depending on what the work is. A row that carries
its own `sleep_ms` (as `./manage.sh replay` sends, one handler time per trace
row) takes that long; a bad value fails the row with a message naming it.
"""

from __future__ import annotations

import os
import time
from typing import Any

SLEEP_SECONDS = float(os.environ.get("SLEEP_MS", "2000")) / 1000
#: The column a row may carry its own handler time in (milliseconds).
COLUMN = "sleep_ms"


def handle(row: dict[str, Any], context: Any) -> None:
    time.sleep(row_seconds(row))


def row_seconds(row: dict[str, Any]) -> float:
    """The row's own `sleep_ms` when it has one, else the type's `SLEEP_MS`."""
    text = row.get(COLUMN)
    if text is None or text == "":
        return SLEEP_SECONDS
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"column {COLUMN!r}: {text!r} is not a number of milliseconds") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"column {COLUMN!r}: {text!r} is not a duration (0 or more milliseconds)")
    return value / 1000
