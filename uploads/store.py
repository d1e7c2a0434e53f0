"""`UploadStore`: every rule about upload records, once, over a backend's primitive reads and writes.

A backend (SQL for SQLite and Postgres, memory for tests) implements only a
`Transaction`: get, insert and update records and row states, list, delete.
Everything that decides something (which outcome wins, how counts move, when
an upload is done, the failed-row cap, replay numbers, idempotency keys,
retention) lives here, so all backends behave the same and are tested with
the same tests.

Each call is one transaction. Applying a report twice changes nothing the
second time, which is what lets the tracker ack a report only after its
commit: a crash before the ack means the report is applied again, harmlessly.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Protocol

from jobtypes.outcomes import RowOutcome
from uploads.errors import IdempotencyConflict, LeaseLost, UploadBusy, UploadNotFound
from uploads.model import Lease, RowState, UploadRecord, count_finished, settle, transition

#: Longest handler error kept per row (characters).
MAX_ERROR_CHARS = 500
#: Dead rows read per query when writing a failed-row report.
PAGE_ROWS = 1000


class DuplicateKey(Exception):
    """A backend's insert found the idempotency key (or id) taken by a concurrent insert."""


class Transaction(Protocol):
    """The primitive reads and writes a backend provides, all inside one transaction."""

    def get_upload(self, upload_id: str, for_update: bool = False) -> UploadRecord | None: ...
    def find_key(self, key: str) -> UploadRecord | None: ...
    def insert_upload(self, record: UploadRecord) -> None: ...
    def update_upload(self, record: UploadRecord) -> None: ...
    def list_uploads(self, job_type: str | None, state: str | None, limit: int) -> list[UploadRecord]: ...
    def cancelled_unfinished(self) -> list[str]: ...
    def count_in_states(self, states: tuple[str, ...]) -> int: ...
    def get_rows(self, upload_id: str, rows: Iterable[int]) -> dict[int, RowState]: ...
    def put_rows(self, upload_id: str, inserted: list[RowState], updated: list[RowState]) -> None: ...
    def rows_in_state(self, upload_id: str, state: str, after_row: int, limit: int) -> list[RowState]: ...
    def numbers_between(self, upload_id: str, first: int, last: int) -> set[int]: ...
    def delete_older_than(self, cutoff: float) -> int: ...

    # publishing leases (a table of their own beside the records)
    def get_lease(self, upload_id: str) -> Lease | None: ...
    def put_lease(self, lease: Lease) -> None: ...
    def delete_lease(self, upload_id: str) -> None: ...
    def expired_leases(self, now: float) -> list[str]: ...
    def unleased_publishing(self, created_before: float) -> list[str]: ...


@dataclass
class ApplyResult:
    """What a batch of outcomes changed: rows changed, final outcomes per (job type, outcome), uploads finished."""

    changed: int = 0
    finals: Counter[tuple[str, str]] = field(default_factory=Counter)
    finished: list[UploadRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Replay:
    """Rows claimed by one replay: their replay number and their bodies, to publish again."""

    number: int
    rows: list[RowState]
    not_replayable: int


class UploadStore:
    """The upload record's rules. Subclasses provide `transaction()` and `close()`."""

    def __init__(self, max_failed_rows: int, retention_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.max_failed_rows = max_failed_rows
        self.retention_seconds = retention_seconds
        self.clock = clock

    def transaction(self, write: bool = True) -> AbstractContextManager[Transaction]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (nothing by default)."""

    # creating and publishing ---------------------------------------------------------
    def begin_upload(self, draft: UploadRecord) -> tuple[UploadRecord, bool]:
        """Create the record, or return the one its idempotency key names; (record, created)."""
        try:
            with self.transaction() as tx:
                existing = tx.find_key(draft.idempotency_key) if draft.idempotency_key else None
                if existing is None:
                    tx.insert_upload(draft)
                    return draft, True
        except DuplicateKey:
            with self.transaction(write=False) as tx:
                existing = tx.find_key(draft.idempotency_key or "")
            if existing is None:
                raise
        _check_same_upload(existing, draft)
        return existing, False

    def mark_published(self, upload_id: str, confirmed: int, error: str | None) -> UploadRecord:
        """Record that rows 1..confirmed are durably queued (never lowers it); `error` says why it stopped."""
        with self.transaction() as tx:
            return self._published(tx, _existing(tx, upload_id, for_update=True), confirmed, error)

    def _published(self, tx: Transaction, record: UploadRecord, confirmed: int, error: str | None) -> UploadRecord:
        record = replace(record, confirmed=max(record.confirmed, confirmed), publish_error=error)
        record = settle(record, self.clock())
        tx.update_upload(record)
        return record

    # publishing leases: one publisher per upload across producer replicas ---------------------------
    def acquire_lease(self, upload_id: str, holder: str, seconds: float) -> UploadRecord:
        """Make `holder` the one publisher of the upload for `seconds`; the record as it stands now.

        Refused with `UploadBusy` while another holder's lease is live. No lease
        is taken when there is nothing to publish (every row confirmed, or the
        upload cancelled): the caller reads that from the record it gets.
        Taking it clears `publish_error`, so the upload reads `publishing` again.
        """
        now = self.clock()
        with self.transaction() as tx:
            record = _existing(tx, upload_id, for_update=True)
            lease = tx.get_lease(upload_id)
            if lease is not None and lease.live(now):
                raise UploadBusy(
                    f"upload {upload_id} is being published by another request right now; "
                    "retry with the same Idempotency-Key when that request has answered"
                )
            if record.cancel_requested or record.confirmed >= record.rows:
                return record
            tx.put_lease(Lease(upload_id, holder, now + seconds))
            record = settle(replace(record, publish_error=None), now)
            tx.update_upload(record)
            return record

    def renew_lease(self, upload_id: str, holder: str, seconds: float, confirmed: int) -> UploadRecord:
        """Extend `holder`'s lease by `seconds` from now and store its progress (rows 1..confirmed are queued).

        Raises `LeaseLost` when the lease is no longer `holder`'s. The record
        returned tells the publisher whether the upload was cancelled meanwhile.
        """
        now = self.clock()
        with self.transaction() as tx:
            record = _existing(tx, upload_id, for_update=True)
            lease = tx.get_lease(upload_id)
            if lease is None or lease.holder != holder:
                raise LeaseLost(upload_id)
            tx.put_lease(replace(lease, expires_at=now + seconds))
            if confirmed > record.confirmed:
                record = settle(replace(record, confirmed=confirmed), now)
                tx.update_upload(record)
            return record

    def release_lease(self, upload_id: str, holder: str, confirmed: int, error: str | None) -> UploadRecord:
        """`holder` stopped publishing: store how far it got (as `mark_published`) and free the upload.

        If another holder took the lease over meanwhile, only the confirmed count
        is raised: the upload is still being published, by that one.
        """
        with self.transaction() as tx:
            record = _existing(tx, upload_id, for_update=True)
            lease = tx.get_lease(upload_id)
            if lease is not None and lease.holder != holder:
                return self._published(tx, record, confirmed, record.publish_error)
            if lease is not None:
                tx.delete_lease(upload_id)
            return self._published(tx, record, confirmed, error)

    def publishing_now(self, upload_id: str) -> bool:
        """Whether some producer holds a live publishing lease on the upload."""
        with self.transaction(write=False) as tx:
            lease = tx.get_lease(upload_id)
        return lease is not None and lease.live(self.clock())

    def interrupt_expired(self, lease_seconds: float) -> list[str]:
        """End the publishing of uploads whose publisher stopped renewing its lease; their ids.

        Such an upload reads `interrupted` with its confirmed count (a retry with
        the same key publishes the rest); a cancelled one gets its unpublished
        rows counted cancelled. A new upload that never got a lease (its producer
        died right after creating the record) counts as expired after
        `lease_seconds`.
        """
        now = self.clock()
        with self.transaction(write=False) as tx:
            candidates = tx.expired_leases(now) + tx.unleased_publishing(now - lease_seconds)
        interrupted = [upload_id for upload_id in dict.fromkeys(candidates) if self._interrupt(upload_id, now)]
        for upload_id in interrupted:
            self.cancel_unpublished(upload_id)  # nothing unless it was cancelled
        return interrupted

    def _interrupt(self, upload_id: str, now: float) -> bool:
        """Free an upload whose lease expired (or that never had one); whether it had rows left to publish."""
        with self.transaction() as tx:
            record = tx.get_upload(upload_id, for_update=True)
            lease = tx.get_lease(upload_id)
            if lease is not None and lease.live(now) and record is not None:
                return False  # renewed, or taken by a retry, since the candidates were read
            if lease is not None:
                tx.delete_lease(upload_id)
            if record is None or record.confirmed >= record.rows or record.publish_error is not None:
                return False
            if not record.cancel_requested:
                error = (
                    f"publishing stopped after {record.confirmed} confirmed rows: the producer publishing it "
                    "stopped renewing its lease (killed, or cut off from the store)"
                )
                self._published(tx, record, record.confirmed, error)
            return True

    # outcomes ---------------------------------------------------------------------------
    def apply(self, outcomes: list[RowOutcome]) -> ApplyResult:
        """Apply a batch of row outcomes in one transaction."""
        by_upload: dict[str, list[RowOutcome]] = {}
        for outcome in outcomes:
            by_upload.setdefault(outcome.upload_id, []).append(outcome)
        result = ApplyResult()
        now = self.clock()
        with self.transaction() as tx:
            for upload_id in sorted(by_upload):  # a fixed lock order: no deadlock between two trackers
                self._apply_to_upload(tx, upload_id, by_upload[upload_id], now, result)
        return result

    def _apply_to_upload(
        self, tx: Transaction, upload_id: str, outcomes: list[RowOutcome], now: float, result: ApplyResult
    ) -> None:
        record = tx.get_upload(upload_id, for_update=True)
        if record is None:
            return  # not ours, or removed by retention: nothing to count
        valid = [outcome for outcome in outcomes if 1 <= outcome.row <= record.rows]
        stored = tx.get_rows(upload_id, {outcome.row for outcome in valid})
        changes: dict[int, RowState] = {}
        counts = {"succeeded": record.succeeded, "retrying": record.retrying, "dead": record.dead}
        counts["cancelled"] = record.cancelled
        finished = 0
        for outcome in valid:
            current = changes.get(outcome.row) or stored.get(outcome.row)
            applied = transition(current, outcome)
            if applied.row is None:
                continue
            row, record = self._cap_details(record, current, applied.row)
            changes[outcome.row] = row
            for name, delta in applied.deltas.items():
                counts[name] += delta
            if row.final:
                finished += 1
                result.finals[(record.job_type, row.state)] += 1
        if not changes:
            return
        tx.put_rows(
            upload_id,
            [row for number, row in changes.items() if number not in stored],
            [row for number, row in changes.items() if number in stored],
        )
        was_finished = record.finished_at is not None
        record = settle(count_finished(replace(record, **counts), finished, now), now)
        tx.update_upload(record)
        result.changed += len(changes)
        if record.finished_at is not None and not was_finished:
            result.finished.append(record)

    def _cap_details(
        self, record: UploadRecord, current: RowState | None, row: RowState
    ) -> tuple[RowState, UploadRecord]:
        """Keep a dead row's body and error only while the upload is under its cap of failed rows."""
        row = replace(row, error=row.error[:MAX_ERROR_CHARS] if row.error else row.error)
        if row.state != "dead" or (current is not None and current.body is not None):
            return row, record
        if row.body is not None and record.failed_details < self.max_failed_rows:
            return row, replace(record, failed_details=record.failed_details + 1)
        return replace(row, body=None, error=None), replace(record, details_dropped=record.details_dropped + 1)

    # replay and cancel ---------------------------------------------------------------------
    def claim_replay(self, upload_id: str) -> Replay:
        """Move every dead row whose body is kept back to pending under the next replay number.

        One transaction with the record locked: two concurrent replays claim each
        row once between them (the second finds no dead rows left).
        """
        with self.transaction() as tx:
            record = _existing(tx, upload_id, for_update=True)
            dead = list(_all_rows(tx, upload_id, "dead"))
            replayable = [row for row in dead if row.body is not None]
            if not replayable:
                return Replay(record.replay, [], len(dead))
            number = record.replay + 1
            claimed = [replace(row, state="pending", replay=number) for row in replayable]
            tx.put_rows(upload_id, [], claimed)
            record = replace(record, dead=record.dead - len(claimed), replay=number)
            tx.update_upload(settle(record, self.clock()))
            return Replay(number, claimed, len(dead) - len(claimed))

    def release_replay(self, upload_id: str, number: int, rows: list[int]) -> None:
        """Rows of replay `number` that could not be published go back to dead (if nothing reported them)."""
        with self.transaction() as tx:
            record = _existing(tx, upload_id, for_update=True)
            back = [
                replace(row, state="dead")
                for row in tx.get_rows(upload_id, rows).values()
                if row.state == "pending" and row.replay == number
            ]
            tx.put_rows(upload_id, [], back)
            tx.update_upload(settle(replace(record, dead=record.dead + len(back)), self.clock()))

    def request_cancel(self, upload_id: str) -> UploadRecord:
        with self.transaction() as tx:
            record = _existing(tx, upload_id, for_update=True)
            if record.state == "done" or record.cancel_requested:
                return record
            record = settle(replace(record, cancel_requested=True), self.clock())
            tx.update_upload(record)
            return record

    def cancel_unpublished(self, upload_id: str) -> int:
        """Count the rows of a cancelled upload that were never confirmed as cancelled (none will be reported).

        Rows after the confirmed count may still be in the queue (the publish
        window); if a worker reports one, its row already has its final outcome.
        """
        with self.transaction() as tx:
            record = _existing(tx, upload_id, for_update=True)
            if not record.cancel_requested or record.confirmed >= record.rows:
                return 0
            first = record.confirmed + 1
            known = tx.numbers_between(upload_id, first, record.rows)
            missing = [RowState(row=n, state="cancelled") for n in range(first, record.rows + 1) if n not in known]
            for start in range(0, len(missing), PAGE_ROWS * 10):
                tx.put_rows(upload_id, missing[start : start + PAGE_ROWS * 10], [])
            record = replace(record, cancelled=record.cancelled + len(missing))
            tx.update_upload(settle(record, self.clock()))
            return len(missing)

    # reading -------------------------------------------------------------------------------
    def get(self, upload_id: str) -> UploadRecord:
        with self.transaction(write=False) as tx:
            return _existing(tx, upload_id)

    def get_many(self, upload_ids: Iterable[str]) -> dict[str, UploadRecord]:
        """The records of those ids that exist, in one read transaction (the tracker checks a batch of reports
        against them: rows, replays issued)."""
        with self.transaction(write=False) as tx:
            records = (tx.get_upload(upload_id) for upload_id in sorted(set(upload_ids)))
            return {record.id: record for record in records if record is not None}

    def recent(self, job_type: str | None = None, state: str | None = None, limit: int = 50) -> list[UploadRecord]:
        with self.transaction(write=False) as tx:
            return tx.list_uploads(job_type, state, limit)

    def cancelled_in_progress(self) -> list[str]:
        """Ids of cancelled uploads that still have pending rows (what the cancel notice lists)."""
        with self.transaction(write=False) as tx:
            return tx.cancelled_unfinished()

    def in_progress(self) -> int:
        """Uploads publishing, queued or running (a gauge)."""
        with self.transaction(write=False) as tx:
            return tx.count_in_states(("publishing", "queued", "running"))

    def dead_rows(self, upload_id: str) -> Iterator[RowState]:
        """Every dead row of the upload, in row order, a page per transaction."""

        def page(after: int) -> list[RowState]:
            with self.transaction(write=False) as tx:
                return tx.rows_in_state(upload_id, "dead", after, PAGE_ROWS)

        return _paged(page)

    # retention -----------------------------------------------------------------------------
    def purge(self) -> int:
        """Remove records (and their row states) finished, or created, more than the retention period ago."""
        with self.transaction() as tx:
            return tx.delete_older_than(self.clock() - self.retention_seconds)


def _existing(tx: Transaction, upload_id: str, for_update: bool = False) -> UploadRecord:
    record = tx.get_upload(upload_id, for_update=for_update)
    if record is None:
        raise UploadNotFound(upload_id)
    return record


def _all_rows(tx: Transaction, upload_id: str, state: str) -> Iterator[RowState]:
    return _paged(lambda after: tx.rows_in_state(upload_id, state, after, PAGE_ROWS))


def _paged(fetch: Callable[[int], list[RowState]]) -> Iterator[RowState]:
    """Rows page by page: `fetch(after_row)` returns up to PAGE_ROWS rows numbered above `after_row`."""
    after = 0
    while True:
        page = fetch(after)
        yield from page
        if len(page) < PAGE_ROWS:
            return
        after = page[-1].row


def _check_same_upload(existing: UploadRecord, draft: UploadRecord) -> None:
    if existing.file_hash != draft.file_hash or existing.job_type != draft.job_type:
        what = "job type" if existing.job_type != draft.job_type else "file"
        raise IdempotencyConflict(
            f"the Idempotency-Key {draft.idempotency_key!r} already names upload {existing.id} "
            f"of another {what} ({existing.file_name!r} for {existing.job_type}); "
            "use a new key for a new file, the same key only to retry the same file"
        )
