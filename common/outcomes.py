"""What workers tell the upload record about the rows they finished, and what it tells them back.

Workers never write the upload store: they publish one `OutcomeReport` per
batch of finished rows to the durable queue `OUTCOMES_QUEUE`, persistent and
publisher-confirmed, *before* they ack those rows. A worker killed between
the report and the ack has its rows redelivered and reported again; the store
keeps the first final outcome of every row, so each row counts exactly once.

The other way, cancelling an upload is announced on the fanout exchange
`UPLOADS_EXCHANGE` as a `CancelNotice` listing the cancelled uploads still in
progress (sent at once and repeated while any is in progress, so a worker that
starts later learns it too). Workers skip and ack those uploads' rows and
report them as `cancelled`.

Every parser here raises ValueError for anything malformed, so a consumer can
set a bad message aside instead of dying on it. The tracker range-checks what
parses (`uploads/report_checks.py`) and moves a report it cannot apply to
`DEAD_OUTCOMES_QUEUE`, the reason in its headers.

The report queue is also bound (`#`) to `DEAD_LETTERS_EXCHANGE`, where work
queues dead-letter: a row RabbitMQ dead-lettered itself (no worker reported
it) arrives there as the row, with its `x-death` header, and the tracker turns
it into a dead outcome (uploads.dead_letters).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel

from common.config import QueueType, default_queue_type, queue_type_setting
from common.queues import DEAD_LETTERS_EXCHANGE, bind_route, declare_routes_exchange, typed_arguments

OUTCOMES_QUEUE = "autoscaler.outcomes"
#: Reports the tracker could not apply (out of range, not storable, not a report), kept for an operator with the
#: reason in their headers; the newest DEAD_REPORTS_KEPT of them (older ones are dropped first).
DEAD_OUTCOMES_QUEUE = "autoscaler.outcomes.dead"
DEAD_REPORTS_KEPT = 10_000
#: Headers of a dead-lettered report: the reason's short code, and what and where in words.
REJECT_REASON_HEADER = "x-reject-reason"
REJECT_DETAIL_HEADER = "x-reject-detail"
UPLOADS_EXCHANGE = "autoscaler.uploads"


class RowStatus(StrEnum):
    """A row's state in its upload's record: pending, or the last outcome reported for it (the wire strings)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELLED = "cancelled"


#: Final and intermediate outcomes of one delivery of a row: what a worker may report (every state but pending).
OUTCOMES = tuple(status.value for status in RowStatus if status is not RowStatus.PENDING)
#: Header on a replayed row: which replay of the upload's dead rows it belongs to (absent = 0).
REPLAY_HEADER = "x-replay"
#: Header on a retried row: which attempt this delivery is (absent = 1).
ATTEMPT_HEADER = "x-attempt"
#: Header on every row the producer publishes: the line of the uploaded file the row starts on. Workers copy it
#: into a dead row's report, so the record knows where a failed row is without keeping a line per row.
LINE_HEADER = "x-line"
#: Largest line number a report may carry (the header is a signed 32-bit AMQP integer).
MAX_LINE = 2**31 - 1


#: A classic report queue is a version 2 classic queue: it confirms a small persistent message in about half the
#: time of version 1, and workers hold their rows unacked until their report is confirmed.
CLASSIC_OUTCOMES_QUEUE_ARGUMENTS = {"x-queue-version": 2}
DEAD_OUTCOMES_QUEUE_ARGUMENTS = {"x-max-length": DEAD_REPORTS_KEPT, "x-overflow": "drop-head"}


def outcomes_queue_type(environ: Mapping[str, str] = os.environ) -> QueueType:
    """OUTCOMES_QUEUE_TYPE, default QUEUE_TYPE: the type of the report queue and its dead-letter queue.

    A setting of its own rather than "quorum when any job type is": the tracker and the workers declare these
    queues without the whole config (a worker knows its own type only), so a rule over all types could make two
    processes disagree, and adding one quorum type would then ask RabbitMQ to change a queue's type in place.
    """
    return queue_type_setting("OUTCOMES_QUEUE_TYPE", default_queue_type(environ), environ)


def outcome_queue_arguments(queue_type: QueueType) -> dict[str, dict[str, Any]]:
    """Queue name -> declaration arguments of the report queue and its dead-letter queue (quorum queues support
    the length limit with drop-head; only x-queue-version is classic's own)."""
    outcomes = {} if queue_type is QueueType.QUORUM else CLASSIC_OUTCOMES_QUEUE_ARGUMENTS
    return {
        OUTCOMES_QUEUE: typed_arguments(queue_type, outcomes),
        DEAD_OUTCOMES_QUEUE: typed_arguments(queue_type, DEAD_OUTCOMES_QUEUE_ARGUMENTS),
    }


def declare_outcome_routes(channel: BlockingChannel) -> None:
    """Declare the report queue (routed from `ROUTES_EXCHANGE`), its dead-letter queue and the cancel exchange
    (idempotent, same arguments everywhere)."""
    declare_routes_exchange(channel)
    for name, arguments in outcome_queue_arguments(outcomes_queue_type()).items():
        channel.queue_declare(queue=name, durable=True, arguments=arguments)
    bind_route(channel, OUTCOMES_QUEUE)
    channel.queue_bind(OUTCOMES_QUEUE, DEAD_LETTERS_EXCHANGE, routing_key="#")
    channel.exchange_declare(exchange=UPLOADS_EXCHANGE, exchange_type="fanout", durable=True)


def split_message_id(message_id: str | None) -> tuple[str, int] | None:
    """`<upload_id>:<row>` -> (upload_id, row); None for a message that is not an upload's row."""
    if not message_id:
        return None
    upload_id, _, row = message_id.rpartition(":")
    if not upload_id or not row.isdigit():
        return None
    return upload_id, int(row)


def counted(value: object, floor: int) -> int:
    """A count from a header anyone could have set: `value` as an integer, at least `floor`, or `floor`."""
    try:
        return max(int(value), floor) if value is not None else floor  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):  # OverflowError: a float infinity
        return floor


def line_of(headers: Mapping[str, Any]) -> int | None:
    """A row's line from its LINE_HEADER, or None when absent or not a line number (the record falls back)."""
    value = headers.get(LINE_HEADER)
    return value if type(value) is int and 1 <= value <= MAX_LINE else None


@dataclass(frozen=True)
class RowOutcome:
    """One row's outcome. `body` (the original JSON object text) and `line` are sent for dead rows only."""

    upload_id: str
    row: int
    outcome: str
    attempts: int = 1
    replay: int = 0
    error: str | None = None
    body: str | None = None
    line: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> RowOutcome:
        if not isinstance(data, dict):
            raise ValueError("a row outcome must be an object")
        outcome = cls(
            upload_id=_typed(data, "upload_id", str),
            row=_typed(data, "row", int),
            outcome=_typed(data, "outcome", str),
            attempts=_typed(data, "attempts", int, 1),
            replay=_typed(data, "replay", int, 0),
            error=_typed(data, "error", str, None),
            body=_typed(data, "body", str, None),
            line=_typed(data, "line", int, None),
        )
        if outcome.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome.outcome!r}; expected one of {', '.join(OUTCOMES)}")
        if outcome.line is not None and not 1 <= outcome.line <= MAX_LINE:
            raise ValueError(f"field 'line' must be within 1..{MAX_LINE}, got {outcome.line}")
        return outcome


@dataclass(frozen=True)
class OutcomeReport:
    """On the wire, consecutive rows that differ only in their row number share one entry of `groups` (the
    shared fields, then `rows`), so the order is kept and a report of 500 succeeded rows of one upload is a
    few bytes a row: cheap to encode, and under the size the broker confirms quickest."""

    worker_id: str
    job_type: str
    rows: list[RowOutcome] = field(default_factory=list)

    def to_json(self) -> bytes:
        groups: list[tuple[tuple[Any, ...], list[int]]] = []
        for row in self.rows:
            key = (row.upload_id, row.outcome, row.attempts, row.replay, row.error, row.body, row.line)
            if groups and groups[-1][0] == key:
                groups[-1][1].append(row.row)
            else:
                groups.append((key, [row.row]))
        data = {
            "worker_id": self.worker_id,
            "job_type": self.job_type,
            "groups": [_group(key, rows) for key, rows in groups],
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> OutcomeReport:
        data = _object(body, "an outcome report")
        groups = data.get("groups")
        if not isinstance(groups, list) or not all(isinstance(group, dict) for group in groups):
            raise ValueError("an outcome report needs a list of objects 'groups'")
        return cls(
            worker_id=_typed(data, "worker_id", str),
            job_type=_typed(data, "job_type", str),
            rows=[row for group in groups for row in _group_rows(group)],
        )


_GROUP_FIELDS = ("upload_id", "outcome", "attempts", "replay", "error", "body", "line")


def _group_rows(group: dict[str, Any]) -> list[RowOutcome]:
    """A group's rows: its shared fields checked once, then each row number (the tracker's hot path)."""
    rows = group.get("rows")
    if not isinstance(rows, list):
        raise ValueError("every group of an outcome report needs a list 'rows'")
    if not rows:
        return []
    first = RowOutcome.from_dict({**group, "row": rows[0]})
    if not all(type(row) is int for row in rows):
        raise ValueError("every row number of an outcome report must be an integer")
    shared = (first.outcome, first.attempts, first.replay, first.error, first.body, first.line)
    return [RowOutcome(first.upload_id, row, *shared) for row in rows]


def _group(key: tuple[Any, ...], rows: list[int]) -> dict[str, Any]:
    """One group of a report: the fields its rows share (None ones left out), then the row numbers."""
    group = {name: value for name, value in zip(_GROUP_FIELDS, key, strict=True) if value is not None}
    group["rows"] = rows
    return group


@dataclass(frozen=True)
class CancelNotice:
    cancelled: list[str]

    def to_json(self) -> bytes:
        return json.dumps({"cancelled": self.cancelled}).encode()

    @classmethod
    def from_json(cls, body: bytes) -> CancelNotice:
        cancelled = _object(body, "a cancel notice").get("cancelled")
        if not isinstance(cancelled, list) or not all(isinstance(item, str) for item in cancelled):
            raise ValueError("a cancel notice needs a list of upload ids 'cancelled'")
        return cls(cancelled)


_MISSING = object()


def _object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object")
    return data


def _typed(data: dict[str, Any], key: str, kind: type, default: Any = _MISSING) -> Any:
    value = data.get(key, default)
    if value is _MISSING:
        raise ValueError(f"missing field {key!r}")
    if value is default and default is not _MISSING:
        return value
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value
