"""A test handler that does what the row asks and records every success.

Row fields: `sleep_ms` (time to spend), `fail_until` (raise while the attempt
number is below it), `exit` (end the whole process at once with that code,
like a crash in native code). Each success appends {id, attempt, worker,
redelivered} to the JSON-lines file RECORD_FILE, so tests count exactly what
was processed; each start appends the message id to RECORD_FILE.started, and
each success "start end" (epoch seconds) to RECORD_FILE.spans.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def handle(row: dict[str, Any], context: Any) -> None:
    started = time.time()
    with open(os.environ["RECORD_FILE"] + ".started", "a") as log:
        log.write(f"{context.message_id}\n")
    if row.get("exit"):
        os._exit(int(row["exit"]))
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
    with open(os.environ["RECORD_FILE"] + ".spans", "a") as spans:
        spans.write(f"{started} {time.time()}\n")
