"""`UploadStore`: every rule about upload records, once, over a backend's primitive reads and writes.

A backend (SQL for SQLite and Postgres, memory for tests) implements only a
`Transaction`: get, insert and update records and row states, list, delete.
Everything that decides something (which outcome wins, how counts move, when
an upload is done, the failed-row cap, replay numbers, idempotency keys,
retention) lives here, so all backends behave the same and are tested with
the same tests.

Each call is one transaction, except replay and cancel, which go a page of
rows per transaction (each page complete in itself, so a crash between two
leaves a state that the next call continues from, never applies twice).
Applying a report twice changes nothing the second time, which is what lets
the tracker ack a report only after its commit: a crash before the ack means
the report is applied again, harmlessly.

Storage is proportional to the rows that need it: a settled row (succeeded,
cancelled) is one bit of a compressed bitmap (`uploads/settled.py`); only
retrying, dead and replayed rows have a row state.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Protocol

from common.outcomes import RowOutcome, RowStatus
from uploads.errors import IdempotencyConflict, LeaseLost, UploadBusy, UploadNotFound
from uploads.model import (
    SETTLED,
    UNFINISHED,
    Lease,
    RowState,
    UploadRecord,
    UploadState,
    count_finished,
    settle,
    transition,
)
from uploads.settled import CHUNK_ROWS, SettledRows, chunk_of, chunks_between

#: Longest handler error kept per row (characters).
MAX_ERROR_CHARS = 500
#: Rows per page: read per query for a failed-row report, and claimed per transaction by a replay (which keeps
#: each of its transactions well under a second, and its memory to one page).
PAGE_ROWS = 500


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
    def delete_rows(self, upload_id: str, rows: list[int]) -> None: ...
    def get_settled(self, upload_id: str, chunks: Iterable[int]) -> dict[int, bytes]: ...
    def put_settled(self, upload_id: str, inserted: dict[int, bytes], updated: dict[int, bytes]) -> None: ...
    def delete_finished_before(self, cutoff: float) -> int: ...
    def touch_replay(self, upload_id: str, number: int, now: float) -> None: ...
    def end_replays(self, upload_id: str, numbers: list[int]) -> None: ...
    def stale_replays(self, upload_id: str, cutoff: float) -> list[int]: ...

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


class Replay:
    """One replay: its number, and its rows claimed a page per transaction as they are iterated, so a replay of
    a million dead rows holds one page in memory and no long transaction.

    Its rows, in row order, are the dead ones whose body is kept and the rows
    left pending by interrupted replays (`stale`: their producer died before
    publishing them all). Each page claimed renews the replay in the store;
    `finish()` ends it.
    """

    def __init__(
        self,
        store: UploadStore,
        upload_id: str,
        number: int,
        not_replayable: int,
        stale: list[int],
        first: tuple[list[RowState], int | None] | None,
    ) -> None:
        self.store = store
        self.upload_id = upload_id
        #: The replay number (the upload's current one when there is nothing to replay).
        self.number = number
        #: Dead rows without a kept body (over the cap): they stay dead.
        self.not_replayable = not_replayable
        #: Whether there was anything to replay (a new replay number was taken).
        self.started = first is not None
        self.stale = stale
        self._first = first or ([], None)
        self.claimed = len(self._first[0])

    @property
    def rows(self) -> Iterator[RowState]:
        if not self.started:
            return
        page, after = self._first
        self._first = ([], None)
        yield from page
        while after is not None:
            page, after = self.store._claim_page(self.upload_id, self.number, self.stale, after)
            self.claimed += len(page)
            yield from page
        self.store._end_replays(self.upload_id, self.stale)

    def finish(self) -> None:
        """This replay has published what it claimed (or given back what it could not)."""
        if self.started:
            self.store._end_replays(self.upload_id, [self.number])


class UploadStore:
    """The upload record's rules. Subclasses provide `transaction()` and `close()`."""

    def __init__(
        self,
        max_failed_rows: int,
        retention_seconds: float,
        clock: Callable[[], float] = time.time,
        replay_stale_seconds: float = 120.0,
    ) -> None:
        self.max_failed_rows = max_failed_rows
        self.retention_seconds = retention_seconds
        self.clock = clock
        self.replay_stale_seconds = replay_stale_seconds

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
        if not valid:
            return
        settled = SettledRows(tx.get_settled(upload_id, {chunk_of(outcome.row) for outcome in valid}))
        stored = tx.get_rows(upload_id, {outcome.row for outcome in valid if outcome.row not in settled})
        changes: dict[int, RowState] = {}
        counts = Counter({"succeeded": record.succeeded, "retrying": record.retrying, "dead": record.dead})
        counts["cancelled"] = record.cancelled
        finals: Counter[str] = Counter()
        newly_settled = 0  # rows settled without ever having a row state (not in `changes`)
        for outcome in valid:
            number = outcome.row
            if number in settled:
                continue  # settled rows never change: the first final outcome won
            current = changes.get(number) or stored.get(number)
            if current is None and outcome.outcome in SETTLED:
                # What `transition` does to a row without a state, without building one: the hot path.
                settled.add(number)
                counts[outcome.outcome] += 1
                finals[outcome.outcome] += 1
                newly_settled += 1
                continue
            applied = transition(current, outcome)
            if applied.row is None:
                continue
            row, record = self._cap_details(record, current, applied.row)
            changes[number] = row
            counts.update(applied.deltas)
            if row.final:
                finals[row.state] += 1
            if row.state in SETTLED:
                settled.add(number)
        if not changes and not finals:
            return
        self._write_rows(tx, upload_id, changes, stored, settled)
        was_finished = record.finished_at is not None
        record = replace(record, **counts)
        record = settle(count_finished(record, finals.total(), now), now)
        tx.update_upload(record)
        result.changed += len(changes) + newly_settled
        for state, count in finals.items():
            result.finals[(record.job_type, state)] += count
        if record.finished_at is not None and not was_finished:
            result.finished.append(record)

    @staticmethod
    def _write_rows(
        tx: Transaction, upload_id: str, changes: dict[int, RowState], stored: dict[int, RowState], settled: SettledRows
    ) -> None:
        """Settled rows become bits (their row state, if any, goes); the others are row states."""
        kept = {number: row for number, row in changes.items() if row.state not in SETTLED}
        tx.put_rows(
            upload_id,
            [row for number, row in kept.items() if number not in stored],
            [row for number, row in kept.items() if number in stored],
        )
        tx.delete_rows(upload_id, [number for number in changes if number not in kept and number in stored])
        tx.put_settled(upload_id, *settled.writes())

    def _cap_details(
        self, record: UploadRecord, current: RowState | None, row: RowState
    ) -> tuple[RowState, UploadRecord]:
        """Keep a dead row's body and error only while the upload is under its cap of failed rows."""
        if row.error and len(row.error) > MAX_ERROR_CHARS:
            row = replace(row, error=row.error[:MAX_ERROR_CHARS])
        if row.state != RowStatus.DEAD or (current is not None and current.body is not None):
            return row, record
        if row.body is not None and record.failed_details < self.max_failed_rows:
            return row, replace(record, failed_details=record.failed_details + 1)
        return replace(row, body=None, error=None), replace(record, details_dropped=record.details_dropped + 1)

    # replay and cancel ---------------------------------------------------------------------
    def claim_replay(self, upload_id: str) -> Replay:
        """Start a replay: the next replay number, whose rows are claimed page by page as `Replay.rows` is read.

        Each page moves its rows back to pending under the replay's number in
        one transaction with the record locked, so concurrent replays claim
        each row once between them, and a replay stopped half-way leaves the
        rest dead, for the next replay. Rows an interrupted replay claimed but
        may not have published (pending under a replay not renewed for
        `replay_stale_seconds`) are claimed again: if one was in the queue
        after all, its old replay number makes its report count for nothing.
        """
        with self.transaction() as tx:
            record = _existing(tx, upload_id, for_update=True)
            not_replayable = min(record.details_dropped, record.dead)
            stale = tx.stale_replays(upload_id, self.clock() - self.replay_stale_seconds)
            number = record.replay + 1
            # The first page is claimed with the number: racing replays of up to a page of dead rows share one.
            first, dead, after = _claim_in(tx, upload_id, number, stale, 0)
            if not first and after is None:
                return Replay(self, upload_id, record.replay, not_replayable, [], None)
            tx.touch_replay(upload_id, number, self.clock())
            tx.update_upload(settle(replace(record, replay=number, dead=record.dead - dead), self.clock()))
            return Replay(self, upload_id, number, not_replayable, stale, (first, after))

    def _claim_page(
        self, upload_id: str, number: int, stale: list[int], after: int
    ) -> tuple[list[RowState], int | None]:
        """Claim one page of rows after row `after` for replay `number`: (claimed rows, next `after` or None)."""
        with self.transaction() as tx:
            record = _existing(tx, upload_id, for_update=True)
            claimed, dead, following = _claim_in(tx, upload_id, number, stale, after)
            tx.touch_replay(upload_id, number, self.clock())
            tx.update_upload(settle(replace(record, dead=record.dead - dead), self.clock()))
            return claimed, following

    def _end_replays(self, upload_id: str, numbers: list[int]) -> None:
        if numbers:
            with self.transaction() as tx:
                tx.end_replays(upload_id, numbers)

    def release_replay(self, upload_id: str, number: int, after_row: int) -> int:
        """Rows of replay `number` after `after_row` not published go back to dead (if nothing reported them).

        A page per transaction; how many went back.
        """
        released = 0
        while True:
            with self.transaction() as tx:
                record = _existing(tx, upload_id, for_update=True)
                page = tx.rows_in_state(upload_id, RowStatus.PENDING.value, after_row, PAGE_ROWS)
                back = [replace(row, state=RowStatus.DEAD.value) for row in page if row.replay == number]
                tx.put_rows(upload_id, [], back)
                tx.update_upload(settle(replace(record, dead=record.dead + len(back)), self.clock()))
            released += len(back)
            if len(page) < PAGE_ROWS:
                return released
            after_row = page[-1].row

    def request_cancel(self, upload_id: str) -> UploadRecord:
        with self.transaction() as tx:
            record = _existing(tx, upload_id, for_update=True)
            if record.state == UploadState.DONE or record.cancel_requested:
                return record
            record = settle(replace(record, cancel_requested=True), self.clock())
            tx.update_upload(record)
            return record

    def cancel_unpublished(self, upload_id: str) -> int:
        """Count the rows of a cancelled upload that were never confirmed as cancelled (none will be reported).

        Rows after the confirmed count may still be in the queue (the publish
        window); if a worker reports one, its row already has its final outcome.
        One transaction per chunk of the settled bitmap (CHUNK_ROWS rows), each
        complete in itself: a call stopped half-way is finished by calling
        again, and a row already settled is never counted twice.
        """
        total = 0
        start = 1
        while True:
            with self.transaction() as tx:
                record = _existing(tx, upload_id, for_update=True)
                if not record.cancel_requested or record.confirmed >= record.rows:
                    return total
                first = max(start, record.confirmed + 1)
                if first > record.rows:
                    return total
                last = min(record.rows, (chunk_of(first) + 1) * CHUNK_ROWS - 1)
                settled = SettledRows(tx.get_settled(upload_id, chunks_between(first, last)))
                added = settled.settle_range(first, last, tx.numbers_between(upload_id, first, last))
                tx.put_settled(upload_id, *settled.writes())
                tx.update_upload(settle(replace(record, cancelled=record.cancelled + added), self.clock()))
            total += added
            start = last + 1

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
            return tx.count_in_states(tuple(state.value for state in UNFINISHED))

    def dead_rows(self, upload_id: str) -> Iterator[RowState]:
        """Every dead row of the upload, in row order, a page per transaction."""

        def page(after: int) -> list[RowState]:
            with self.transaction(write=False) as tx:
                return tx.rows_in_state(upload_id, RowStatus.DEAD.value, after, PAGE_ROWS)

        return _paged(page)

    # retention -----------------------------------------------------------------------------
    def purge(self) -> int:
        """Remove records (and their row states) finished more than the retention period ago.

        An unfinished upload is never removed, however old: its reports still
        count, and its Idempotency-Key still names it.
        """
        with self.transaction() as tx:
            return tx.delete_finished_before(self.clock() - self.retention_seconds)


def _existing(tx: Transaction, upload_id: str, for_update: bool = False) -> UploadRecord:
    record = tx.get_upload(upload_id, for_update=for_update)
    if record is None:
        raise UploadNotFound(upload_id)
    return record


def _claim_in(
    tx: Transaction, upload_id: str, number: int, stale: list[int], after: int
) -> tuple[list[RowState], int, int | None]:
    """Move one page of rows after row `after` to pending under replay `number`: dead rows with a kept body,
    and pending rows an interrupted (`stale`) replay left, in row order (the publisher needs rows in order to
    say how far they are confirmed). Returns (claimed rows, how many were dead, the row the next page starts
    after, or None at the end)."""
    dead = tx.rows_in_state(upload_id, RowStatus.DEAD.value, after, PAGE_ROWS)
    pending = tx.rows_in_state(upload_id, RowStatus.PENDING.value, after, PAGE_ROWS) if stale else []
    page = sorted(dead + pending, key=lambda row: row.row)[:PAGE_ROWS]
    claimed = [
        replace(row, state=RowStatus.PENDING.value, replay=number)
        for row in page
        if (row.state == RowStatus.DEAD and row.body is not None)
        or (row.state == RowStatus.PENDING and row.replay in stale)
    ]
    tx.put_rows(upload_id, [], claimed)
    more = len(dead) == PAGE_ROWS or len(pending) == PAGE_ROWS
    return (
        claimed,
        sum(1 for row in page if row.state == RowStatus.DEAD and row.body is not None),
        (page[-1].row if more else None),
    )


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
