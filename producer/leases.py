"""Publishing leases: one producer publishes an upload at a time, however many replicas share the store.

Who publishes an upload is a row in the store with an expiry (`Lease`), not a
set inside one process: two same-key requests landing on two replicas take
turns (the second is answered 409 while the first holds the lease).

While a request publishes, a `PublishLease` thread writes one small
transaction every `PRODUCER_PUBLISH_PROGRESS_SECONDS`: the rows confirmed so
far (so a crash loses at most that much progress), the renewed expiry, and it
reads the cancel flag back. So a cancel sent to any replica stops the
publishing on whichever replica holds the upload within that interval: the
store is the one place every replica already reads and writes, so no second
channel between replicas is needed (a broadcast over RabbitMQ would work too,
but it can be missed by a replica that reconnects, and the lease needs the
store write anyway). A holder that cannot renew for half the lease stops on
its own, before anyone else may take the upload over.

A producer killed mid-publish stops renewing; every producer runs a
`LeaseSweeper` that, every `PRODUCER_LEASE_CHECK_SECONDS`, marks uploads whose
lease expired `interrupted` (or, when cancelled, counts their unpublished rows
cancelled). A retry with the same Idempotency-Key then takes a new lease and
publishes the rows after the confirmed count.

Expiries are wall-clock times written by one producer and read by another:
the lease must be much longer than the clock skew between their hosts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from producer.row_publisher import PublishControl, PublishResult
from uploads.errors import LeaseLost, StoreUnavailable
from uploads.model import UploadRecord
from uploads.store import UploadStore

log = logging.getLogger("producer.leases")

CANCELLED = "the upload was cancelled"


@dataclass(frozen=True)
class LeaseSettings:
    #: A publisher that stops renewing loses the upload this long after its last renewal.
    lease_seconds: float = 10.0
    #: How often a publisher stores its confirmed count, renews its lease and looks for a cancel.
    progress_seconds: float = 0.5
    #: How often each producer looks for expired leases (uploads whose publisher died).
    check_seconds: float = 2.0


def process_holder() -> str:
    """This producer process's name in leases: host, pid and a random part (pids repeat across restarts)."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PublishLease:
    """One publishing run's hold on one upload: renewed, with progress, until `release`."""

    def __init__(self, store: UploadStore, settings: LeaseSettings, upload_id: str, holder: str) -> None:
        self.store = store
        self.settings = settings
        self.upload_id = upload_id
        self.holder = holder
        self.control = PublishControl()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"lease-{upload_id[:12]}", daemon=True)

    def publish(self, publish: Callable[[PublishControl], PublishResult]) -> tuple[PublishResult, UploadRecord]:
        """Run `publish` under this lease, renewing it meanwhile; then release it with how far publishing got
        (also when `publish` raises: the upload then reads `interrupted` at once, not after the lease expires)."""
        self._thread.start()
        try:
            result = publish(self.control)
        except BaseException as error:
            self._release(self.control.confirmed_through, f"publishing failed: {error or type(error).__name__}"[:300])
            raise
        return result, self._release(result.confirmed_through, result.error)

    def _release(self, confirmed: int, error: str | None) -> UploadRecord:
        self._done.set()
        self._thread.join()
        return self.store.release_lease(self.upload_id, self.holder, confirmed, error)

    def _keep(self) -> None:
        """Renew until released; the run may send for half a lease after each renewal (`send_until`), so it stops
        on its own, before anyone else may take the upload, when renewing fails or hangs."""
        margin = self.settings.lease_seconds / 2
        self.control.send_until = time.monotonic() + margin
        while not self._done.wait(self.settings.progress_seconds):
            started = time.monotonic()
            try:
                record = self.store.renew_lease(
                    self.upload_id, self.holder, self.settings.lease_seconds, self.control.confirmed_through
                )
            except LeaseLost as error:
                self.control.stop(error.message)
                return
            except Exception as error:  # the store unreachable, or anything else: the next round tries again
                log.warning("upload %s: cannot renew the publishing lease: %s", self.upload_id, error)
                continue
            self.control.send_until = started + margin
            if record.cancel_requested:
                self.control.stop(CANCELLED)
                return


class Leases:
    """This producer's side of publishing leases: taking one per publishing run, and the sweeper."""

    def __init__(self, store: UploadStore, settings: LeaseSettings) -> None:
        self.store = store
        self.settings = settings
        self.holder = process_holder()
        self._sweeper = LeaseSweeper(store, settings)

    def start(self) -> None:
        self._sweeper.start()

    def stop(self) -> None:
        self._sweeper.stop()

    def acquire(self, upload_id: str) -> tuple[UploadRecord, PublishLease | None]:
        """Take the upload's lease (`UploadBusy` while another run holds it): the record as it stands now, and
        the lease, or None when there is nothing left to publish (every row confirmed, or cancelled)."""
        lease = PublishLease(self.store, self.settings, upload_id, f"{self.holder}:{uuid.uuid4().hex[:8]}")
        record = self.store.acquire_lease(upload_id, lease.holder, self.settings.lease_seconds)
        if record.cancel_requested or record.confirmed >= record.rows:
            return record, None
        lease.control.confirmed_through = record.confirmed
        return record, lease


class LeaseSweeper(threading.Thread):
    """Every `check_seconds`: uploads whose publisher stopped renewing its lease become `interrupted`."""

    def __init__(self, store: UploadStore, settings: LeaseSettings) -> None:
        super().__init__(name="lease-sweeper", daemon=True)
        self.store = store
        self.settings = settings
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(10)

    def run(self) -> None:
        while not self._stopping.wait(self.settings.check_seconds):
            try:
                for upload_id in self.store.interrupt_expired(self.settings.lease_seconds):
                    log.warning(
                        "upload %s: its publisher stopped renewing its lease; publishing is interrupted "
                        "(a retry with the same Idempotency-Key publishes the rest)",
                        upload_id,
                    )
            except StoreUnavailable as error:
                log.warning("cannot look for expired publishing leases: %s", error.message)
            except Exception:
                log.exception("looking for expired publishing leases failed; trying again later")
