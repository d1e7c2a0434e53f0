"""JSON log lines for workers: one object per line, ready for `kubectl logs` and log shippers.

Every line carries the worker id and job type, so lines from many workers can
be merged and still be told apart; per-message lines also carry the message id.
"""

from __future__ import annotations

import json
import logging
import sys
import time

#: Attributes every LogRecord has; anything else passed with `extra=` is a field of ours.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; the fields every line shares are encoded once."""

    def __init__(self, static: dict[str, str]) -> None:
        super().__init__()
        self.static = json.dumps(static)[1:-1]

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname.lower(), "event": record.getMessage()}
        for key in record.__dict__.keys() - _STANDARD:
            if not key.startswith("_"):
                line[key] = record.__dict__[key]
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return "{" + self.static + ", " + json.dumps(line, default=str)[1:]


def configure(worker_id: str, job_type: str, level: int = logging.INFO) -> logging.Logger:
    """Send the root logger to stdout as JSON lines; returns the worker's logger."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter({"worker_id": worker_id, "job_type": job_type}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    logging.Formatter.converter = time.gmtime
    return logging.getLogger("worker")
