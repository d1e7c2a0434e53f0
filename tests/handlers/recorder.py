"""A test handler that does what the row asks and records every success.

Row fields: `sleep_ms` (time to spend), `fail_until` (raise while the attempt
number is below it). Each success appends {id, attempt, worker, redelivered}
to the JSON-lines file RECORD_FILE, so tests count exactly what was processed;
each start appends the message id to RECORD_FILE.started.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def handle(row: dict[str, Any], context: Any) -> None:
    with open(os.environ["RECORD_FILE"] + ".started", "a") as started:
        started.write(context.message_id + "\n")
    time.sleep(float(row.get("sleep_ms", 0) or 0) / 1000)
    if context.attempt < int(row.get("fail_until", 0) or 0):
        raise RuntimeError(f"planned failure on attempt {context.attempt}")
    line = {
        "id": context.message_id,
        "attempt": context.attempt,
        "worker": context.worker_id,
        "redelivered": context.redelivered,
    }
    with open(os.environ["RECORD_FILE"], "a") as record:
        record.write(json.dumps(line) + "\n")
