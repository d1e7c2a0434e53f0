"""What a handler is told about the row it processes."""

from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    """Handlers use `message_id` (stable across redeliveries) to stay idempotent."""

    message_id: str
    upload_id: str
    attempt: int
    job_type: str
    worker_id: str
    logger: logging.LoggerAdapter
    redelivered: bool = False
