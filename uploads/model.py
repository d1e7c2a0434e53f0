"""What an upload record is, and the pure rules that keep its counts exact.

Rules (no I/O here, so they are tested without a database):

* A row's first *final* outcome (succeeded, dead, cancelled) wins and is never
  overwritten, except by a replay: a replay moves dead rows back to pending
  under the upload's next replay number, and a report from an older replay
  number is ignored. `retrying` only moves a row that is not final.
* A row that no report mentioned yet has no stored state: it is pending. So an
  upload of a million rows costs one record to create. A row *settled*
  (succeeded or cancelled: final and never replayed) costs one bit in the
  upload's compressed bitmap (`uploads/settled.py`), not a row state; only
  rows that need details (retrying, dead, pending again after a replay) have
  a `RowState`.
* Counts follow from row states: pending = rows - succeeded - dead - cancelled
  (a retrying row is pending too). The state is derived from the counts.
* An upload whose rows are not all confirmed is `publishing` while a producer
  holds its publishing lease, and `interrupted` once publishing stopped
  (`publish_error` says why): only a retry with the same key goes on.
* `orphaned` is never stored: a reader that knows its rows cannot be worked
  (the type left the config, the queue is gone) shows a `queued` or `running`
  record so, with the reason (`public(..., orphaned=...)`), and the stored
  state shows again as soon as the cause is gone.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from common.outcomes import RowOutcome, RowStatus

FINAL = (RowStatus.SUCCEEDED, RowStatus.DEAD, RowStatus.CANCELLED)
#: Final outcomes that nothing changes afterwards (a replay takes dead rows only): kept as one bit per row.
SETTLED = (RowStatus.SUCCEEDED, RowStatus.CANCELLED)


class UploadState(StrEnum):
    """An upload's state; the values are the strings stored in the database and shown in the API."""

    PUBLISHING = "publishing"
    INTERRUPTED = "interrupted"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    #: Shown, never stored: queued or running, but no worker can ever take its rows (see `public`).
    ORPHANED = "orphaned"


#: The states a record is stored in (and can be listed by).
STATES = tuple(state.value for state in UploadState if state is not UploadState.ORPHANED)
#: The states of an upload not finished yet (publishing, or waiting for its rows to be worked).
UNFINISHED = (UploadState.PUBLISHING, UploadState.QUEUED, UploadState.RUNNING)
#: The states in which an upload waits for workers: the ones an orphan is shown instead of.
WAITING_FOR_WORKERS = frozenset({UploadState.QUEUED, UploadState.RUNNING})
#: Seconds over which `rows_per_second` is averaged (an exponentially decaying window).
RATE_WINDOW_SECONDS = 30.0


@dataclass
class RowState:
    row: int
    state: str  # pending (after a replay), retrying, succeeded, dead, cancelled
    replay: int = 0
    attempts: int = 0
    error: str | None = None
    body: str | None = None
    #: The line of the uploaded file the row starts on, as the row's message carried it (dead rows only).
    line: int | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL


@dataclass
class UploadRecord:
    id: str
    job_type: str
    file_name: str
    rows: int
    header: list[str]
    created_at: float
    #: (row, offset) breakpoints: from `row` on, a row starts on line row + offset (until the next breakpoint).
    #: New records keep one: the first row's. A row's own line travels with its message (LINE_HEADER) and is
    #: kept with its dead row; this is the fallback for a report without one (and records from before).
    line_breaks: list[tuple[int, int]] = field(default_factory=lambda: [(1, 1)])
    idempotency_key: str | None = None
    file_hash: str | None = None
    state: str = UploadState.PUBLISHING.value
    confirmed: int = 0
    publish_error: str | None = None
    succeeded: int = 0
    retrying: int = 0
    dead: int = 0
    cancelled: int = 0
    replay: int = 0
    failed_details: int = 0
    details_dropped: int = 0
    cancel_requested: bool = False
    first_report_at: float | None = None
    finished_at: float | None = None
    rate: float = 0.0
    rate_at: float | None = None

    @property
    def pending(self) -> int:
        return self.rows - self.succeeded - self.dead - self.cancelled

    def line_of(self, row: int) -> int:
        """The line of the uploaded file on which data row `row` (1-based) starts."""
        index = bisect.bisect_right(self.line_breaks, (row, math.inf)) - 1
        return row + self.line_breaks[max(index, 0)][1]

    def rows_per_second(self, now: float) -> float:
        """Rows finished per second, recently: a decaying average over about RATE_WINDOW_SECONDS."""
        if self.rate_at is None or self.first_report_at is None:
            return 0.0
        decayed = self.rate * math.exp(-(now - self.rate_at) / RATE_WINDOW_SECONDS)
        # Early on the window is not full yet: scale up by the share of it that has elapsed.
        filled = 1.0 - math.exp(-max(now - self.first_report_at, 1.0) / RATE_WINDOW_SECONDS)
        return decayed / filled

    def eta_seconds(self, now: float) -> float | None:
        if self.pending == 0:
            return 0.0
        rate = self.rows_per_second(now)
        if rate <= 0.01 or self.state in (UploadState.PUBLISHING, UploadState.INTERRUPTED, UploadState.CANCELLED):
            return None
        return self.pending / rate


def derived_state(record: UploadRecord) -> UploadState:
    if record.cancel_requested:
        return UploadState.CANCELLED
    if record.confirmed < record.rows:
        return UploadState.INTERRUPTED if record.publish_error is not None else UploadState.PUBLISHING
    if record.pending == 0:
        return UploadState.DONE
    if record.first_report_at is not None:
        return UploadState.RUNNING
    return UploadState.QUEUED


def settle(record: UploadRecord, now: float) -> UploadRecord:
    """The record with its state and finish time recomputed from its counts."""
    finished = record.pending == 0 and (record.confirmed >= record.rows or record.cancel_requested)
    return replace(
        record,
        state=derived_state(record).value,
        finished_at=(record.finished_at or now) if finished else None,
    )


def count_finished(record: UploadRecord, finished: int, now: float) -> UploadRecord:
    """Add `finished` final outcomes at `now` to the decaying rate."""
    if record.first_report_at is None:
        record = replace(record, first_report_at=now)
    if finished == 0:
        return record
    previous = record.rate_at if record.rate_at is not None else now
    decayed = record.rate * math.exp(-(now - previous) / RATE_WINDOW_SECONDS)
    return replace(record, rate=decayed + finished / RATE_WINDOW_SECONDS, rate_at=now)


# publishing leases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """Who publishes an upload right now: one publishing run of one producer, until `expires_at` (wall clock).

    Kept beside the record, not in it: it is how producer replicas sharing one
    store take turns, not part of what clients read. A holder renews it while
    it publishes; one that stops renewing (killed, cut off from the store)
    loses it at `expires_at`, and the upload reads `interrupted`.
    """

    upload_id: str
    holder: str
    expires_at: float

    def live(self, now: float) -> bool:
        return self.expires_at > now


@dataclass
class Applied:
    """What one outcome did to one row: the row's new state (None: ignored) and the counter deltas."""

    row: RowState | None
    deltas: dict[str, int]


def transition(current: RowState | None, outcome: RowOutcome) -> Applied:
    """Apply one row outcome to the row's current state (None: pending, never reported)."""
    if current is not None and outcome.replay < current.replay:
        return Applied(None, {})  # a report from before this row was replayed
    if current is not None and current.final and outcome.replay == current.replay:
        return Applied(None, {})  # the first final outcome wins
    if (
        current is not None
        and current.state == outcome.outcome == RowStatus.RETRYING
        and outcome.attempts <= current.attempts
    ):
        return Applied(None, {})  # an earlier or repeated retry report
    was = current.state if current is not None else RowStatus.PENDING
    deltas: dict[str, int] = {}
    if was in (RowStatus.RETRYING, RowStatus.DEAD):
        deltas[was] = -1
    deltas[outcome.outcome] = deltas.get(outcome.outcome, 0) + 1
    attempts = max(outcome.attempts, current.attempts if current is not None else 0)
    keep_details = outcome.outcome in (RowStatus.DEAD, RowStatus.RETRYING)
    row = RowState(
        row=outcome.row,
        state=outcome.outcome,
        replay=max(outcome.replay, current.replay if current is not None else 0),
        attempts=attempts,
        error=outcome.error if keep_details else None,
        body=outcome.body if outcome.outcome == RowStatus.DEAD else (current.body if current is not None else None),
        line=outcome.line if outcome.line is not None else (current.line if current is not None else None),
    )
    return Applied(row, {name: delta for name, delta in deltas.items() if delta})


def public(
    record: UploadRecord, base_url: str, now: float, max_failed_rows: int, orphaned: str | None = None
) -> dict[str, Any]:
    """The record as clients see it (JSON), with links under `base_url` (e.g. "/uploads/<id>").

    `orphaned` is why no worker can take the record's rows, if the caller knows of a reason: a record
    waiting for workers is then shown `orphaned` with that reason instead of `queued` or `running` forever.
    """
    orphan = orphaned if record.state in WAITING_FOR_WORKERS else None
    return {
        "id": record.id,
        "job_type": record.job_type,
        "file_name": record.file_name,
        "state": UploadState.ORPHANED.value if orphan else record.state,
        "orphaned_reason": orphan,
        "rows": record.rows,
        "confirmed": record.confirmed,
        "succeeded": record.succeeded,
        "retrying": record.retrying,
        "dead": record.dead,
        "cancelled": record.cancelled,
        "pending": record.pending,
        "replays": record.replay,
        "created_at": record.created_at,
        "finished_at": record.finished_at,
        "rows_per_second": round(record.rows_per_second(now), 2),
        "eta_seconds": _rounded(record.eta_seconds(now)),
        "publish_error": record.publish_error,
        "failed_rows_kept": record.failed_details,
        "failed_rows_cap": max_failed_rows,
        "failed_rows_truncated": record.details_dropped > 0,
        "status_url": base_url,
        "failed_rows_url": f"{base_url}/failed-rows.csv",
        "replay_url": f"{base_url}/replay",
        "cancel_url": f"{base_url}/cancel",
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
