"""Spend `SLEEP_MS` milliseconds (default 2000, as the original prototype did) on every row.

It stands in for real work of a known duration, so scaling behaviour can be
shown and measured without depending on what the work is.
"""

from __future__ import annotations

import os
import time
from typing import Any

SLEEP_SECONDS = float(os.environ.get("SLEEP_MS", "2000")) / 1000


def handle(row: dict[str, Any], context: Any) -> None:
    time.sleep(SLEEP_SECONDS)
