"""The tracker: applies workers' outcome reports to the upload store, and announces cancelled uploads.

It runs as a thread of the producer, owning its own pika connection (other
threads hand it work with `add_callback_threadsafe`). It consumes the durable
queue `autoscaler.outcomes` with manual acks, applies every report it has
received in one store transaction, and acks them (one `multiple` ack) only
after the commit. So a tracker killed at any moment loses nothing: unacked
reports are redelivered and applied again, which changes nothing the second
time. A report that is not one is logged and acked (dropped): it would never
parse better on redelivery.

While a cancelled upload still has pending rows it broadcasts a
`CancelNotice` on the fanout exchange `autoscaler.uploads`, at once when the
cancel is requested and every few seconds after, so a worker that starts
later learns it too. It also removes records past their retention period,
hourly.

Failures have a visible state (`status()`, shown by the producer's /healthz)
and back off: a lost broker or an unreachable store is retried after 1, 2,
4... up to 30 seconds, without acking anything meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from jobtypes.outcomes import OUTCOMES_QUEUE, UPLOADS_EXCHANGE, CancelNotice, OutcomeReport, declare_outcome_routes
from jobtypes.settings import connection_parameters
from uploads import metrics
from uploads.errors import StoreUnavailable
from uploads.settings import UploadSettings
from uploads.store import UploadStore

log = logging.getLogger("uploads.tracker")
MAX_BACKOFF_SECONDS = 30.0
PURGE_EVERY_SECONDS = 3600.0
#: How often the uploads-in-progress gauge is read from the store (never at scrape time, on the event loop).
GAUGE_EVERY_SECONDS = 2.0
CONNECTION_ERRORS = (pika.exceptions.AMQPError, OSError)


@dataclass
class TrackerStatus:
    state: str  # starting, consuming, broker-unreachable, store-unavailable, stopped
    reason: str | None = None
    reports: int = 0


class Tracker(threading.Thread):
    def __init__(self, store: UploadStore, settings: UploadSettings, connection_name: str = "producer-tracker") -> None:
        super().__init__(name="upload-tracker", daemon=True)
        self.store = store
        self.settings = settings
        self.connection_name = connection_name
        self._status = TrackerStatus("starting")
        self._stopping = threading.Event()
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._pending: list[tuple[int, bytes]] = []
        self._next_notice = 0.0
        self._next_purge = 0.0
        self._next_gauge = 0.0

    # other threads ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"state": self._status.state, "reason": self._status.reason, "reports": self._status.reports}

    def announce_cancel(self) -> None:
        """Broadcast the cancel notice now (called by the HTTP side after a cancel)."""
        connection = self._connection
        if connection is not None and connection.is_open:
            try:
                connection.add_callback_threadsafe(self._broadcast_cancels)
            except CONNECTION_ERRORS:
                pass  # the loop reconnects and broadcasts within a few seconds anyway

    def stop(self, timeout: float = 10) -> None:
        self._stopping.set()
        self.join(timeout)

    # the thread -----------------------------------------------------------------------
    def run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._connect()
                self._consume()
            except CONNECTION_ERRORS as error:
                self._set("broker-unreachable", f"{type(error).__name__}: {error}"[:300])
            except StoreUnavailable as error:
                self._set("store-unavailable", error.message)
            finally:
                self._disconnect()
            if time.monotonic() - started > MAX_BACKOFF_SECONDS:
                backoff = 1.0  # it worked for a while: this is a new failure, not the same one again
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        self._set("stopped", None)

    def _connect(self) -> None:
        connection = pika.BlockingConnection(connection_parameters(self.connection_name))
        channel = connection.channel()
        declare_outcome_routes(channel)
        channel.basic_qos(prefetch_count=self.settings.report_batch)
        channel.basic_consume(OUTCOMES_QUEUE, self._on_report)
        self._connection, self._channel = connection, channel
        self._set("consuming", None)
        log.info("tracker consuming %s", OUTCOMES_QUEUE)

    def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._pending.clear()  # unacked: the broker redelivers them to the next connection
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except CONNECTION_ERRORS:
                pass

    def _consume(self) -> None:
        assert self._connection is not None
        while not self._stopping.is_set():
            self._connection.process_data_events(time_limit=0.1)
            if self._pending:
                self._apply_pending()
            now = time.monotonic()
            if now >= self._next_notice:
                self._broadcast_cancels()
            if now >= self._next_purge:
                self._purge()
            if now >= self._next_gauge:
                self._next_gauge = now + GAUGE_EVERY_SECONDS
                metrics.IN_PROGRESS.set(self.store.in_progress())

    def _on_report(self, channel: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
        self._pending.append((method.delivery_tag, body))

    def _apply_pending(self) -> None:
        outcomes = []
        for tag, body in self._pending:
            try:
                outcomes.extend(OutcomeReport.from_json(body).rows)
                metrics.REPORTS.labels("applied").inc()
            except ValueError as error:
                metrics.REPORTS.labels("malformed").inc()
                log.warning("dropping a malformed outcome report (delivery %d): %s", tag, error)
        result = self.store.apply(outcomes)  # raises StoreUnavailable: nothing acked, all redelivered
        assert self._channel is not None
        self._channel.basic_ack(self._pending[-1][0], multiple=True)
        self._status.reports += len(self._pending)
        self._pending.clear()
        metrics.observe(result)
        for record in result.finished:
            log.info(
                "upload %s type=%s %s: %d succeeded, %d dead, %d cancelled of %d rows",
                record.id,
                record.job_type,
                record.state,
                record.succeeded,
                record.dead,
                record.cancelled,
                record.rows,
            )

    def _broadcast_cancels(self) -> None:
        self._next_notice = time.monotonic() + self.settings.cancel_notice_seconds
        cancelled = self.store.cancelled_in_progress()
        if cancelled and self._channel is not None:
            self._channel.basic_publish(UPLOADS_EXCHANGE, "", CancelNotice(cancelled).to_json())

    def _purge(self) -> None:
        self._next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        removed = self.store.purge()
        if removed:
            log.info("removed %d upload records older than %g days", removed, self.settings.retention_days)

    def _set(self, state: str, reason: str | None) -> None:
        if (state, reason) != (self._status.state, self._status.reason) and reason:
            log.warning("tracker %s: %s", state, reason)
        self._status.state, self._status.reason = state, reason
