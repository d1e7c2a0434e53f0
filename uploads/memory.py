"""An in-memory upload store, for tests and for a producer run without persistence (`memory://`).

Transactions are serialised by one lock and buffer their writes, which are
applied only when the transaction ends without an exception: a failed call
leaves nothing half-written, as with the SQL backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from uploads.model import Lease, RowState, UploadRecord, UploadState
from uploads.store import DuplicateKey, UploadStore


class _MemoryTransaction:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.uploads: dict[str, UploadRecord] = {}
        self.rows: dict[tuple[str, int], RowState | None] = {}  # None: deleted in this transaction
        self.settled: dict[tuple[str, int], bytes] = {}
        self.replays: dict[tuple[str, int], float | None] = {}  # None: ended in this transaction
        self.deleted: set[str] = set()
        self.leases: dict[str, Lease | None] = {}  # None: deleted in this transaction

    def _upload(self, upload_id: str) -> UploadRecord | None:
        if upload_id in self.deleted:
            return None
        record = self.uploads.get(upload_id) or self.store.uploads.get(upload_id)
        return replace(record) if record is not None else None

    def get_upload(self, upload_id: str, for_update: bool = False) -> UploadRecord | None:
        return self._upload(upload_id)

    def find_key(self, key: str) -> UploadRecord | None:
        ids = {**self.store.uploads, **self.uploads}
        return next((self._upload(i) for i, r in ids.items() if r.idempotency_key == key), None)

    def insert_upload(self, record: UploadRecord) -> None:
        if self._upload(record.id) is not None or (record.idempotency_key and self.find_key(record.idempotency_key)):
            raise DuplicateKey(record.id)
        self.uploads[record.id] = replace(record)

    def update_upload(self, record: UploadRecord) -> None:
        self.uploads[record.id] = replace(record)

    def list_uploads(self, job_type: str | None, state: str | None, limit: int) -> list[UploadRecord]:
        ids = set(self.store.uploads) | set(self.uploads)
        records = [record for record in map(self._upload, ids) if record is not None]
        chosen = [r for r in records if job_type in (None, r.job_type) and state in (None, r.state)]
        return sorted(chosen, key=lambda r: r.created_at, reverse=True)[:limit]

    def cancelled_unfinished(self) -> list[str]:
        return [r.id for r in self.list_uploads(None, UploadState.CANCELLED, 1 << 30) if r.pending > 0]

    def count_in_states(self, states: tuple[str, ...]) -> int:
        return sum(1 for r in self.list_uploads(None, None, 1 << 30) if r.state in states)

    def _row(self, upload_id: str, row: int) -> RowState | None:
        key = (upload_id, row)
        found = self.rows[key] if key in self.rows else self.store.rows.get(upload_id, {}).get(row)
        return replace(found) if found is not None and upload_id not in self.deleted else None

    def get_rows(self, upload_id: str, rows: Iterable[int]) -> dict[int, RowState]:
        found = {row: self._row(upload_id, row) for row in rows}
        return {row: state for row, state in found.items() if state is not None}

    def put_rows(self, upload_id: str, inserted: list[RowState], updated: list[RowState]) -> None:
        for row in (*inserted, *updated):
            self.rows[(upload_id, row.row)] = replace(row)

    def rows_in_state(self, upload_id: str, state: str, after_row: int, limit: int) -> list[RowState]:
        numbers = set(self.store.rows.get(upload_id, {})) | {row for (uid, row) in self.rows if uid == upload_id}
        rows = [self._row(upload_id, n) for n in sorted(numbers) if n > after_row]
        return [row for row in rows if row is not None and row.state == state][:limit]

    def numbers_between(self, upload_id: str, first: int, last: int) -> set[int]:
        numbers = set(self.store.rows.get(upload_id, {})) | {row for (uid, row) in self.rows if uid == upload_id}
        return {n for n in numbers if first <= n <= last and self._row(upload_id, n) is not None}

    def delete_rows(self, upload_id: str, rows: list[int]) -> None:
        for row in rows:
            self.rows[(upload_id, row)] = None

    def get_settled(self, upload_id: str, chunks: Iterable[int]) -> dict[int, bytes]:
        stored = self.store.settled.get(upload_id, {})
        found = {chunk: self.settled.get((upload_id, chunk)) or stored.get(chunk) for chunk in chunks}
        return {chunk: bits for chunk, bits in found.items() if bits is not None}

    def put_settled(self, upload_id: str, inserted: dict[int, bytes], updated: dict[int, bytes]) -> None:
        for chunk, bits in {**inserted, **updated}.items():
            self.settled[(upload_id, chunk)] = bits

    def touch_replay(self, upload_id: str, number: int, now: float) -> None:
        self.replays[(upload_id, number)] = now

    def end_replays(self, upload_id: str, numbers: list[int]) -> None:
        for number in numbers:
            self.replays[(upload_id, number)] = None

    def stale_replays(self, upload_id: str, cutoff: float) -> list[int]:
        renewed = {
            **self.store.replays.get(upload_id, {}),
            **{n: t for (u, n), t in self.replays.items() if u == upload_id},
        }
        return [number for number, at in renewed.items() if at is not None and at < cutoff]

    def delete_finished_before(self, cutoff: float) -> int:
        old = [
            r.id for r in self.list_uploads(None, None, 1 << 30) if r.finished_at is not None and r.finished_at < cutoff
        ]
        self.deleted.update(old)
        return len(old)

    # publishing leases -----------------------------------------------------------------------
    def get_lease(self, upload_id: str) -> Lease | None:
        return self.leases[upload_id] if upload_id in self.leases else self.store.leases.get(upload_id)

    def put_lease(self, lease: Lease) -> None:
        self.leases[lease.upload_id] = lease

    def delete_lease(self, upload_id: str) -> None:
        self.leases[upload_id] = None

    def expired_leases(self, now: float) -> list[str]:
        ids = set(self.store.leases) | set(self.leases)
        return [i for i in ids if (lease := self.get_lease(i)) is not None and not lease.live(now)]

    def unleased_publishing(self, created_before: float) -> list[str]:
        records = self.list_uploads(None, UploadState.PUBLISHING, 1 << 30)
        return [r.id for r in records if r.created_at < created_before and self.get_lease(r.id) is None]

    def commit(self) -> None:
        for upload_id, lease in self.leases.items():
            if lease is None:
                self.store.leases.pop(upload_id, None)
            else:
                self.store.leases[upload_id] = lease
        self.store.uploads.update(self.uploads)
        for (upload_id, number), row in self.rows.items():
            if row is None:
                self.store.rows.get(upload_id, {}).pop(number, None)
            else:
                self.store.rows.setdefault(upload_id, {})[number] = row
        for (upload_id, chunk), bits in self.settled.items():
            self.store.settled.setdefault(upload_id, {})[chunk] = bits
        for (upload_id, number), at in self.replays.items():
            if at is None:
                self.store.replays.get(upload_id, {}).pop(number, None)
            else:
                self.store.replays.setdefault(upload_id, {})[number] = at
        for upload_id in self.deleted:
            self.store.replays.pop(upload_id, None)
            self.store.uploads.pop(upload_id, None)
            self.store.rows.pop(upload_id, None)
            self.store.settled.pop(upload_id, None)


class MemoryStore(UploadStore):
    def __init__(self, max_failed_rows: int, retention_seconds: float, **kwargs) -> None:
        super().__init__(max_failed_rows, retention_seconds, **kwargs)
        self.uploads: dict[str, UploadRecord] = {}
        self.rows: dict[str, dict[int, RowState]] = {}
        self.leases: dict[str, Lease] = {}
        self.settled: dict[str, dict[int, bytes]] = {}
        self.replays: dict[str, dict[int, float]] = {}
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[_MemoryTransaction]:
        with self._lock:
            tx = _MemoryTransaction(self)
            yield tx
            tx.commit()
