"""What happens to a row whose handler failed: try again later, or park it in `<queue>.dead`.

A failed row is republished to `<queue>.retry` with a per-message expiration;
RabbitMQ dead-letters it back to `<queue>` when that expires (see
common.queues). The delay doubles with every attempt, so a row that fails
because a dependency is briefly down gets a few chances, while the rows behind
it are processed meanwhile. After `max_attempts` the row goes to `<queue>.dead`
with the error, the attempt count and its original properties, for a person.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import pika

from common.config import JobType
from common.outcomes import ATTEMPT_HEADER, counted

MAX_DELAY_SECONDS = 300.0


def attempt_of(properties: pika.BasicProperties) -> int:
    """The attempt this delivery is (1 for a row that never failed)."""
    return counted((properties.headers or {}).get(ATTEMPT_HEADER), 1)


def retry_delay(job_type: JobType, attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: retry_delay_seconds doubled per failed attempt, capped."""
    return min(job_type.retry_delay_seconds * 2 ** (attempt - 1), MAX_DELAY_SECONDS)


class Disposition(StrEnum):
    """Where a republished row goes: the retry queue, the dead queue, or back to its own queue unstarted."""

    RETRY = "retry"
    DEAD = "dead"
    RETURNED = "returned"


@dataclass(frozen=True)
class Republish:
    queue: str
    properties: pika.BasicProperties
    outcome: Disposition


def _copy(properties: pika.BasicProperties, headers: dict, expiration: str | None) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
        correlation_id=properties.correlation_id,
        headers=headers,
        expiration=expiration,
    )


def after_failure(job_type: JobType, properties: pika.BasicProperties, error: str, worker_id: str) -> Republish:
    """Where a failed delivery goes next, with which properties."""
    attempt = attempt_of(properties)
    original = {key: value for key, value in (properties.headers or {}).items() if key != "x-death"}
    if attempt < job_type.max_attempts:
        headers = {**original, ATTEMPT_HEADER: attempt + 1, "x-last-error": error[:1000]}
        delay_ms = str(int(retry_delay(job_type, attempt) * 1000))
        return Republish(job_type.retry_queue, _copy(properties, headers, delay_ms), Disposition.RETRY)
    headers = {
        **original,
        "x-attempts": attempt,
        "x-error": error[:4000],
        "x-failed-at": int(time.time()),
        "x-failed-by": worker_id,
        "x-original-queue": job_type.queue,
    }
    return Republish(job_type.dead_queue, _copy(properties, headers, None), Disposition.DEAD)


def unreadable(job_type: JobType, properties: pika.BasicProperties, error: str, worker_id: str) -> Republish:
    """A body that is not a JSON object cannot succeed on any attempt: straight to `.dead`."""
    forced = _copy(properties, {**(properties.headers or {}), ATTEMPT_HEADER: job_type.max_attempts}, None)
    return after_failure(job_type, forced, error, worker_id)


def give_back(job_type: JobType, properties: pika.BasicProperties) -> Republish:
    """An unstarted row of a stopping worker goes back to the work queue as it was.

    Republished rather than nacked: a requeued message comes back flagged
    `redelivered`, which the runtime counts as a spent attempt.
    """
    return Republish(job_type.queue, _copy(properties, dict(properties.headers or {}), None), Disposition.RETURNED)
