"""Rows RabbitMQ dead-lettered itself, turned into the dead outcome no worker reported.

A worker reports every row it finishes, but two ways out of a work queue pass
no worker's hands: a consumer that rejects a row without requeue, and a quorum
queue's `x-delivery-limit` (a row whose deliveries all ended in crashes). Work
queues dead-letter to `DEAD_LETTERS_EXCHANGE`, which routes the row both to
`<queue>.dead` (for people) and to the report queue, where the tracker finds
it among the reports by its `x-death` header and applies it as a `dead`
outcome: the upload record counts it (reason, line, body for replay) instead
of keeping it pending forever. The store keeps a row's first final outcome, so
a row a worker already reported stays as the worker reported it.

The row comes from the broker but was made by whoever published it, so all of
it is checked: its size, the `x-death` entry's shape, and then, like every report,
the upload, row, replay and body (uploads.report_checks). A row that is not an
upload's (no `upload_id` header, no `<upload_id>:<row>` message id) concerns
no record and is only acknowledged: its copy stays in `<queue>.dead`.
"""

from __future__ import annotations

from typing import Any

import pika

from common.outcomes import (
    ATTEMPT_HEADER,
    REPLAY_HEADER,
    OutcomeReport,
    RowOutcome,
    RowStatus,
    counted,
    line_of,
    split_message_id,
)
from uploads.report_checks import MAX_DETAIL_CHARS, Reason, Rejection

DEATH_HEADER = "x-death"
#: The worker id a broker-made outcome is reported under (in logs and dead-lettered reports).
BROKER = "rabbitmq"
#: What each x-death reason means, as the row's error in its upload record.
REASONS = {
    "delivery_limit": "delivery limit reached (RabbitMQ dead-lettered it from {queue!r}: delivered more often than "
    "its x-delivery-limit allows, each time without an ack)",
    "rejected": "rejected (a consumer of {queue!r} rejected it without requeue; RabbitMQ dead-lettered it)",
    "expired": "expired (RabbitMQ dead-lettered it from {queue!r})",
    "maxlen": "queue length limit (RabbitMQ dead-lettered it from {queue!r})",
}


def is_dead_lettered(properties: pika.BasicProperties) -> bool:
    """Whether a message on the report queue is a row RabbitMQ dead-lettered rather than a worker's report."""
    return DEATH_HEADER in (properties.headers or {})


def dead_outcome(properties: pika.BasicProperties, body: bytes, max_bytes: int) -> OutcomeReport | Rejection:
    """A report of the dead outcome of a dead-lettered row (of no rows for a row of no upload), or why it is none.

    The row's body is kept for its replay like a worker's dead-row report, so it is bounded the same way
    (UPLOADS_MAX_REPORT_BYTES)."""
    headers: dict[str, Any] = properties.headers or {}
    job_type = properties.type if isinstance(properties.type, str) else ""
    where = split_message_id(properties.message_id)
    if where is None or not headers.get("upload_id"):
        return OutcomeReport(BROKER, job_type, [])
    if len(body) > max_bytes:
        return Rejection(Reason.TOO_LARGE, f"a {len(body)}-byte row, over UPLOADS_MAX_REPORT_BYTES={max_bytes}")
    reason = _reason(headers.get(DEATH_HEADER))
    if isinstance(reason, Rejection):
        return reason
    upload_id, row = where
    outcome = RowOutcome(
        upload_id,
        row,
        RowStatus.DEAD,
        counted(headers.get(ATTEMPT_HEADER), 1),
        counted(headers.get(REPLAY_HEADER), 0),
        reason,
        body.decode("utf-8", errors="replace"),
        line_of(headers),
    )
    return OutcomeReport(BROKER, job_type, [outcome])


def _reason(deaths: object) -> str | Rejection:
    """The newest `x-death` entry (RabbitMQ puts it first) in words, or why the header is not one."""
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
        return Rejection(Reason.MALFORMED, f"{DEATH_HEADER} is not a list of tables: {deaths!r}"[:MAX_DETAIL_CHARS])
    death = deaths[0]
    reason, queue = _text(death.get("reason")), _text(death.get("queue"))
    if reason not in REASONS or queue is None:
        detail = f"{DEATH_HEADER} entry without a known reason and queue: {death!r}"
        return Rejection(Reason.MALFORMED, detail[:MAX_DETAIL_CHARS])
    return REASONS[reason].format(queue=queue)


def _text(value: object) -> str | None:
    """A header string (pika hands over bytes when it is not UTF-8)."""
    return value if isinstance(value, str) else None
