"""The tracker: applies workers' outcome reports to the upload store, and announces cancelled uploads.

It runs as threads of the producer. A `TrackerLoop` owns its own pika
connection (other threads hand it work with `add_callback_threadsafe`). It
consumes the durable queue `autoscaler.outcomes` with manual acks, applies
every report it has received in one store transaction, and acks them (one
`multiple` ack) only after the commit. So a tracker killed at any moment loses
nothing: unacked reports are redelivered and applied again, which changes
nothing the second time.

Nothing a report carries stops counting. Every report is range-checked first
(`uploads/report_checks.py`); a report with rows that cannot be applied, or
that is not a report at all, goes to `autoscaler.outcomes.dead` (confirmed,
before the ack) with the reason in its headers, is counted and logged once,
and its other rows are applied. A store failure is told apart by its kind
(`report_at_fault`): a database that refused a value, or a driver that could
not bind one, blames a report, so the batch is applied report by report and
the ones the store refuses are dead-lettered: no report is retried forever.
Anything else (the database down, restarting, locked, read-only) is the
store's state: the batch waits unacked and is retried with the connection's
backoff (`common.connections.Link`: about 0.5, 1, 2... up to 30 seconds,
jittered; state `store-unavailable` on /healthz,
`uploads_tracker_store_failures_total`), and good reports are never set aside
for it. A lost broker node is the same loop: the link reconnects to the next
node of RABBITMQ_URLS (state `broker-unreachable`, the node and error in the
reason, meanwhile).

`Tracker` watches the loop: a loop that died, or made no progress for
`UPLOADS_TRACKER_STALL_SECONDS` while reports wait, is a problem /healthz names
(503). A dead loop, or one blocked in a call that long, is replaced by a new one
(after 1, 2, 4... up to 30 seconds between replacements); the blocked one is
told to stop and ends when its call returns, its unacked reports going back to
the queue. At most MAX_ABANDONED blocked loops are left behind, so a database
that hangs every call does not take every pooled connection.

While a cancelled upload still has pending rows the loop broadcasts a
`CancelNotice` on the fanout exchange `autoscaler.uploads`, at once when the
cancel is requested and every few seconds after, so a worker that starts
later learns it too. It also removes records past their retention period,
hourly.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from common.connections import CONNECTION_ERRORS, Link, connect_any
from common.outcomes import (
    DEAD_OUTCOMES_QUEUE,
    OUTCOMES_QUEUE,
    REJECT_DETAIL_HEADER,
    REJECT_REASON_HEADER,
    UPLOADS_EXCHANGE,
    CancelNotice,
    OutcomeReport,
    declare_outcome_routes,
)
from uploads import dead_letters, metrics, report_checks
from uploads.errors import StoreUnavailable
from uploads.report_checks import CheckedReport, Reason, Rejection
from uploads.settings import UploadSettings
from uploads.store import ApplyResult, UploadStore

log = logging.getLogger("uploads.tracker")
MAX_BACKOFF_SECONDS = 30.0
PURGE_EVERY_SECONDS = 3600.0
#: How often the uploads-in-progress gauge and the queue's depth are read (never at scrape time, on the event loop).
GAUGE_EVERY_SECONDS = 2.0
#: How often the watchdog looks at the loop.
WATCH_EVERY_SECONDS = 1.0
#: Blocked loops left behind (each may hold a database connection until its call returns) before no new one starts.
MAX_ABANDONED = 2
#: Database errors that blame the values given (the DB-API's DataError: out of range, NUL in text...; IntegrityError).
VALUE_ERRORS = (DataError, IntegrityError)
_DEAD_LETTER = dict(delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json")


class TrackerState(StrEnum):
    STARTING = "starting"
    CONSUMING = "consuming"
    BROKER_UNREACHABLE = "broker-unreachable"
    STORE_UNAVAILABLE = "store-unavailable"
    CRASHED = "crashed"
    STOPPED = "stopped"


@dataclass
class TrackerStatus:
    state: TrackerState
    reason: str | None = None
    reports: int = 0
    dead_lettered: int = 0


def report_at_fault(error: Exception) -> bool:
    """Whether a store failure is the report's doing (dead-letter it), not the store's state (retry it).

    Only a database that refused a value, or a driver that could not bind one (Python's own errors: an
    integer too large, text that is not UTF-8), blames the report. Anything else the database says (down,
    restarting, locked, read-only after a failover, a permission missing) is retried with backoff, visibly,
    so that a store problem never sends good reports to the dead-letter queue.
    """
    cause = error.__cause__ if isinstance(error, StoreUnavailable) else error
    if isinstance(cause, SQLAlchemyError):
        return isinstance(cause, VALUE_ERRORS)
    return not isinstance(error, StoreUnavailable)


def _retry_unless_at_fault(error: Exception) -> None:
    """Raise a store failure that is not the report's doing as the loop retries it (StoreUnavailable)."""
    if report_at_fault(error):
        return
    if isinstance(error, StoreUnavailable):
        raise error
    raise StoreUnavailable(f"the upload store failed: {type(error).__name__}: {error}"[:300]) from error


class TrackerLoop(threading.Thread):
    """One consumer of the report queue; `Tracker` replaces it when it dies or blocks."""

    def __init__(self, store: UploadStore, settings: UploadSettings, connection_name: str, number: int) -> None:
        super().__init__(name=f"upload-tracker-{number}", daemon=True)
        self.store = store
        self.settings = settings
        self.connection_name = connection_name
        self.status = TrackerStatus(TrackerState.STARTING)
        self._stopping = threading.Event()
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        #: Delivered and not yet acked: (delivery tag, body, properties).
        self._pending: list[tuple[int, bytes, pika.BasicProperties]] = []
        #: Reports ready in the queue when last asked, plus those handed back by a lost connection.
        self._queued = 0
        now = time.monotonic()
        #: When the loop last returned from a call (`beat_at`), and last applied a batch or found nothing waiting
        #: (`progress_at`): a loop that reconnects and fails again and again beats, but makes no progress.
        self.beat_at = self.progress_at = now
        self._next_notice = 0.0
        self._next_purge = 0.0
        self._next_gauge = 0.0
        self.link = Link(
            connection_name,
            errors=CONNECTION_ERRORS + (StoreUnavailable,),
            should_stop=self._stopping.is_set,
            on_lost=self._on_lost,
            on_wait=self._beat,
            max_backoff=MAX_BACKOFF_SECONDS,
        )

    # other threads ------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        """Reports waiting for this loop: ready in the queue when last asked, and in hand."""
        return self._queued + self.in_hand

    @property
    def in_hand(self) -> int:
        return len(self._pending)

    def announce_cancel(self) -> None:
        """Broadcast the cancel notice now (called by the HTTP side after a cancel)."""
        connection = self._connection
        if connection is not None and connection.is_open:
            try:
                connection.add_callback_threadsafe(self._broadcast_cancels)
            except CONNECTION_ERRORS:
                pass  # the loop reconnects and broadcasts within a few seconds anyway

    def stop(self) -> None:
        """Ask the loop to end after the call it is in (it may be blocked in one)."""
        self._stopping.set()

    # the thread -----------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as error:  # a bug: end visibly, the watchdog starts another loop
            log.exception("tracker thread %s died", self.name)
            self._set(TrackerState.CRASHED, f"{type(error).__name__}: {error}"[:300])
        finally:
            self._disconnect()

    def _run(self) -> None:
        self.link.run(self._serve)
        self._set(TrackerState.STOPPED, None)

    def _serve(self, connection: BlockingConnection) -> None:
        self._connect(connection)
        self._consume()

    def _on_lost(self, error: BaseException) -> None:
        """Unacked reports go back to the queue; the status says what stopped the counting."""
        self._disconnect()
        if isinstance(error, StoreUnavailable):
            metrics.STORE_FAILURES.inc()
            self._set(TrackerState.STORE_UNAVAILABLE, error.message)
        else:
            self._set(TrackerState.BROKER_UNREACHABLE, self.link.reason)

    def _beat(self) -> None:
        """Waiting on purpose (backing off) is not being blocked."""
        self.beat_at = time.monotonic()

    def _connect(self, connection: BlockingConnection) -> None:
        channel = connection.channel()
        declare_outcome_routes(channel)
        channel.confirm_delivery()  # a dead-lettered report is acked only once the broker holds its copy
        channel.basic_qos(prefetch_count=self.settings.report_batch)
        channel.basic_consume(OUTCOMES_QUEUE, self._on_report)
        self._connection, self._channel = connection, channel
        self._set(TrackerState.CONSUMING, None)
        log.info("tracker consuming %s on %s", OUTCOMES_QUEUE, self.link.node)

    def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._queued += len(self._pending)  # unacked: the broker hands them to the next connection
        self._pending.clear()
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except CONNECTION_ERRORS:
                pass

    def _consume(self) -> None:
        assert self._connection is not None
        while not self._stopping.is_set():
            self._connection.process_data_events(time_limit=0.1)
            self.beat_at = time.monotonic()
            if self._pending:
                self._apply_pending()
                self.progress_at = time.monotonic()
            elif self._queued == 0:
                self.progress_at = time.monotonic()  # idle, and nothing was waiting when last asked
            now = self.beat_at = time.monotonic()
            if now >= self._next_notice:
                self._broadcast_cancels()
            if now >= self._next_purge:
                self._purge()
            if now >= self._next_gauge:
                self._read_gauges()

    def _on_report(self, channel: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
        self._pending.append((method.delivery_tag, body, properties))

    # applying --------------------------------------------------------------------------
    def _apply_pending(self) -> None:
        checked = report_checks.check_parsed(
            [self._parse(body, properties) for _, body, properties in self._pending], self.store.get_many
        )
        try:
            self._applied(self.store.apply([row for report in checked for row in report.accepted]))
        except Exception as error:
            _retry_unless_at_fault(error)  # nothing acked: the batch is retried whole once the store is back
            log.warning("the store refused a batch of %d reports (%s); applying them one by one", len(checked), error)
            self._apply_one_by_one(checked)
        assert self._channel is not None
        for (_, body, _), report in zip(self._pending, checked, strict=True):
            if report.first is not None:
                self._dead_letter(body, report)
            metrics.REPORTS.labels("applied" if report.first is None else "rejected").inc()
        self._channel.basic_ack(self._pending[-1][0], multiple=True)
        self.status.reports += len(self._pending)
        self._pending.clear()

    def _parse(self, body: bytes, properties: pika.BasicProperties) -> OutcomeReport | Rejection:
        """A worker's report, or the dead outcome of a row RabbitMQ dead-lettered (uploads.dead_letters)."""
        if dead_letters.is_dead_lettered(properties):
            return dead_letters.dead_outcome(properties, body, self.settings.max_report_bytes)
        return report_checks.parse(body, self.settings.max_report_bytes)

    def _apply_one_by_one(self, checked: list[CheckedReport]) -> None:
        for report in checked:
            if not report.accepted:
                continue
            try:
                self._applied(self.store.apply(report.accepted))
            except Exception as error:
                _retry_unless_at_fault(error)
                detail = error.message if isinstance(error, StoreUnavailable) else f"{type(error).__name__}: {error}"
                report.refuse_all(Rejection(Reason.STORE, detail[: report_checks.MAX_DETAIL_CHARS]))

    def _applied(self, result: ApplyResult) -> None:
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

    def _dead_letter(self, body: bytes, report: CheckedReport) -> None:
        """Keep the whole report, with why, in the dead-letter queue; say so once in the log."""
        assert self._channel is not None and report.first is not None
        rejected = sum(report.rejected.values())
        headers = {
            REJECT_REASON_HEADER: str(report.first.reason),
            REJECT_DETAIL_HEADER: report.first.detail,
            "x-rejected-rows": rejected,
            "x-applied-rows": len(report.accepted),
        }
        self._channel.basic_publish(
            "", DEAD_OUTCOMES_QUEUE, body, pika.BasicProperties(headers=headers, **_DEAD_LETTER)
        )
        for reason, rows in report.rejected.items():
            metrics.REJECTED.labels(str(reason)).inc(rows)
        self.status.dead_lettered += 1
        source = "not a report" if report.report is None else f"from worker {report.report.worker_id[:80]!r}"
        log.warning(
            "outcome report (%s) moved to %s: %s; %d rows set aside, %d applied",
            source,
            DEAD_OUTCOMES_QUEUE,
            report.first,
            rejected,
            len(report.accepted),
        )

    # housekeeping ------------------------------------------------------------------------
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

    def _read_gauges(self) -> None:
        assert self._channel is not None
        self._next_gauge = time.monotonic() + GAUGE_EVERY_SECONDS
        metrics.IN_PROGRESS.set(self.store.in_progress())
        self._queued = self._channel.queue_declare(OUTCOMES_QUEUE, passive=True).method.message_count
        metrics.WAITING.set(self.waiting)

    def _set(self, state: TrackerState, reason: str | None) -> None:
        if (state, reason) != (self.status.state, self.status.reason) and reason:
            log.warning("tracker %s: %s", state, reason)
        self.status.state, self.status.reason = state, reason


class Tracker:
    """The tracker as the producer sees it: one `TrackerLoop` at a time, watched and replaced by a watchdog thread."""

    def __init__(self, store: UploadStore, settings: UploadSettings, connection_name: str = "producer-tracker") -> None:
        self.store = store
        self.settings = settings
        self.connection_name = connection_name
        self.restarts = 0
        self._loop = self._new_loop()
        self._abandoned: list[TrackerLoop] = []
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="upload-tracker-watchdog", daemon=True)
        self._backoff = 1.0
        self._restart_at = 0.0
        #: Reports ready in the queue, as the watchdog last asked (only while the loop is blocked).
        self._ready = 0

    def start(self) -> None:
        metrics.HEALTHY.set(1)
        self._loop.start()
        self._watchdog.start()

    def stop(self, timeout: float = 10) -> None:
        self._stopping.set()
        self._loop.stop()
        self._watchdog.join(timeout)
        self._loop.join(timeout)

    def announce_cancel(self) -> None:
        self._loop.announce_cancel()

    def status(self) -> dict[str, Any]:
        """The loop's state and, when counting stopped, the problem in words (which /healthz answers 503 with)."""
        loop = self._loop
        return {
            "state": loop.status.state,
            "reason": loop.status.reason,
            "node": loop.link.node,
            "reports": loop.status.reports,
            "dead_lettered": loop.status.dead_lettered,
            "waiting": loop.waiting,
            "last_progress_age_seconds": round(time.monotonic() - loop.progress_at, 1),
            "restarts": self.restarts,
            "problem": self._problem(),
        }

    # the watchdog ------------------------------------------------------------------------
    def _problem(self) -> str | None:
        """Counting has stopped: the loop died, or reports wait on a loop (or a blocked, replaced one) that made
        no progress for `tracker_stall_seconds`."""
        loop = self._loop
        if not loop.is_alive() and loop.status.state is not TrackerState.STARTING and not self._stopping.is_set():
            return f"thread died ({loop.status.reason or 'no reason recorded'})"
        now = time.monotonic()
        held = [old for old in self._abandoned if old.in_hand and old.is_alive()]
        stalled = [part for part in (loop, *held) if now - part.progress_at > self.settings.tracker_stall_seconds]
        waiting = sum(old.in_hand for old in held if old in stalled)
        if loop in stalled:
            waiting += loop.in_hand + self._ready if self._blocked(loop) else loop.waiting
        if not waiting:
            return None
        age = now - min(part.progress_at for part in stalled)
        why = "" if loop.status.state is TrackerState.CONSUMING else f" ({loop.status.state}: {loop.status.reason})"
        return f"no progress for {age:.0f} s with {waiting} reports waiting{why}"

    def _blocked(self, loop: TrackerLoop) -> bool:
        return time.monotonic() - loop.beat_at > self.settings.tracker_stall_seconds

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_EVERY_SECONDS):
            self._check()

    def _check(self) -> None:
        loop = self._loop
        blocked = self._blocked(loop)
        # A blocked loop cannot count what waits in the queue (it may be blocked with nothing in hand): ask.
        self._ready = self._ready_in_queue() if blocked else 0
        if blocked:
            metrics.WAITING.set(loop.in_hand + self._ready)  # the loop's own reading stopped with it
        problem = self._problem()
        metrics.HEALTHY.set(0 if problem else 1)
        if problem is None:
            self._backoff = 1.0
            return
        self._abandoned = [old for old in self._abandoned if old.is_alive()]
        if (blocked or not loop.is_alive()) and time.monotonic() >= self._restart_at:
            if len(self._abandoned) >= MAX_ABANDONED:
                log.warning("tracker: %s; not restarted: %d earlier threads still blocked", problem, MAX_ABANDONED)
            else:
                self._restart(loop, problem)
            self._restart_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)

    def _ready_in_queue(self) -> int:
        """Reports ready in the queue, asked on a connection of the watchdog's own (0 when the broker is away)."""
        try:
            connection, _ = connect_any(f"{self.connection_name}-watchdog")
            try:
                return connection.channel().queue_declare(OUTCOMES_QUEUE, passive=True).method.message_count
            finally:
                connection.close()
        except CONNECTION_ERRORS:
            return 0

    def _restart(self, loop: TrackerLoop, problem: str) -> None:
        log.warning("tracker: %s; starting a new tracker thread", problem)
        loop.stop()
        if loop.is_alive():
            self._abandoned.append(loop)
        self.restarts += 1
        metrics.RESTARTS.inc()
        self._loop = self._new_loop()
        self._loop.start()

    def _new_loop(self) -> TrackerLoop:
        return TrackerLoop(self.store, self.settings, self.connection_name, self.restarts)
