"""One message in a worker's hands, and what became of it.

A `Delivery` is created on the connection's thread when RabbitMQ hands over a
message; an `Outcome` comes back from an executor (or from a hook that
decided before the handler ran). `generation` is the connection the delivery
arrived on: a delivery tag means nothing on another connection, so outcomes
of an older generation are dropped (RabbitMQ has already requeued them).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import pika

from workers.disposition import Republish, attempt_of


class Status(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the handler raised, timed out, or the worker holding it died
    CANCELLED = "cancelled"  # its upload was cancelled before it started: acked unhandled
    RETURNED = "returned"  # not started because the worker is stopping: given back to the queue


@dataclass(slots=True, eq=False)
class Delivery:
    tag: int
    properties: pika.BasicProperties
    body: bytes
    redelivered: bool
    generation: int

    @property
    def message_id(self) -> str | None:
        return self.properties.message_id

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.headers or {}

    @property
    def attempt(self) -> int:
        return attempt_of(self.properties)


@dataclass(slots=True, eq=False)
class Outcome:
    delivery: Delivery
    status: Status
    error: str | None = None
    seconds: float = 0.0
    #: True when no later attempt can succeed (an unreadable body): straight to `.dead`.
    hopeless: bool = False
    #: Where a copy goes before the original is acked (retry, dead, or back to the work queue).
    copy: Republish | None = field(default=None)
