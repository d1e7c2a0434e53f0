"""A test batch handler: records each successful batch, fails a whole batch that holds a `bad` row.

Like a handler storing a batch in one transaction, a failing call records
nothing. Each successful call appends {"size", "ids"} to RECORD_FILE.
"""

from __future__ import annotations

import json
import os
from typing import Any


def handle_batch(rows: list[dict[str, Any]], context: Any) -> None:
    bad = [row for row in rows if row.get("bad")]
    if bad:
        raise ValueError(f"{len(bad)} bad row(s) in a batch of {len(rows)}")
    line = {"size": len(rows), "ids": [row_context.message_id for row_context in context.rows]}
    with open(os.environ["RECORD_FILE"], "a") as record:
        record.write(json.dumps(line) + "\n")
