"""What a handler is told about the rows it processes."""

from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Context:
    """Handlers use `message_id` (stable across redeliveries) to stay idempotent.

    `message_id` is None for a message published without one: such a row has
    no key to deduplicate by (a delivery tag is not one: tags restart on every
    channel). `redelivered` stays False in practice: the runtime turns a
    redelivery into a spent attempt and hands the row over again as the next
    `attempt`.
    """

    message_id: str | None
    upload_id: str
    attempt: int
    job_type: str
    worker_id: str
    logger: logging.LoggerAdapter
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class BatchContext:
    """For `handle_batch(rows, context)`: `rows[i]` describes the i-th row of the batch."""

    rows: list[Context]
    job_type: str
    worker_id: str
    logger: logging.Logger
