"""Publish an upload's rows with publisher confirms, and know exactly how many the broker took.

A blocking publisher that waits for each confirm manages ~1,500 rows/s; this
one keeps a window of unconfirmed messages in flight on pika's asynchronous
SelectConnection (one per upload, on a worker thread) and counts the broker's
acks, cumulative or single. Rows leave as pre-encoded frames (`RowFrames`),
many rows per socket write, never more than about `UNSENT_BYTES` waiting in
memory for the socket. If the connection dies or the broker nacks, it
stops and reports how far the rows are confirmed without a gap: every row up
to `confirmed_through` is durably in the queue, so a retry of the same upload
publishes only the rows after it.

Rows come as (row number, line, JSON body) in increasing row order: all rows
of a new upload, the rest of an upload retried after a failure, or the dead
rows of a replay. The line (where the row starts in the uploaded file) goes
with the row as its LINE_HEADER, for the record's failed-row report.

Another thread may follow a run through a `PublishControl`: it reads how far
rows are confirmed without a gap (the producer stores that while publishing)
and can stop the run (a cancel, a lost lease); the run then ends as after a
failure, with `confirmed_through` exact.

As soon as more rows are confirmed than the type's `threshold` (or the upload
is complete), one wake-up goes to the scaler on a second channel, so the
scaler scales up now rather than at its next tick; it is a hint, and losing
it only costs that tick.

With several broker nodes, the upload's queues are declared on the first node
that answers (from a random one) and its rows published to that same node. A
node lost mid-upload fails the run like any lost connection: the client's
retry with the same Idempotency-Key publishes the rest, on a node that answers.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pika
from pika.adapters.select_connection import SelectConnection
from pika.channel import Channel
from pika.frame import Method

from common.config import JobType
from common.confirms import Confirms
from common.connections import connect_any
from common.control_messages import CONTROL_EXCHANGE, WAKE_ROUTING_KEY, declare_control_exchanges, wake_body
from common.pika_internals import unsent_bytes, write_frames
from common.queues import declare_queues
from common.settings import node_parameters
from producer.properties import RowFrames

log = logging.getLogger(__name__)

#: Seconds without a single confirm before the broker counts as stuck (e.g. a
#: memory or disk alarm blocks publishers).
CONFIRM_STALL_SECONDS = 30.0
#: Rows are handed to the socket in buffers of about this size (one send instead of three per row) ...
BATCH_BYTES = 256 * 1024
#: ... while fewer than this many bytes wait unsent, so memory stays flat whatever the window and row size.
UNSENT_BYTES = 1024 * 1024


@dataclass
class PublishResult:
    #: Messages the broker confirmed in this run.
    confirmed: int
    #: The highest row number such that it and every row before it in this run is confirmed (or `first - 1`).
    confirmed_through: int
    error: str | None = None


class PublishControl:
    """What another thread sees of one publishing run, and how it stops it (thread-safe).

    `confirmed_through` is written only by the run's I/O thread (a plain int:
    readers see the old or the new value, both true). `send_until` (monotonic)
    is moved on by whoever holds the run's lease: past it the run sends
    nothing more and fails, so a holder stuck renewing (a store that hangs)
    cannot keep publishing after its lease may have passed to another.
    """

    def __init__(self, first: int = 1) -> None:
        self.confirmed_through = first - 1
        self.send_until = math.inf
        self._lock = threading.Lock()
        self._stop_reason: str | None = None
        self._run: _ConfirmedRun | None = None

    def stop(self, reason: str) -> None:
        """Stop publishing as soon as the run's I/O loop gets to it (before it starts, if it has not yet)."""
        with self._lock:
            self._stop_reason = self._stop_reason or reason
            run = self._run
        if run is not None:
            run.stop_threadsafe(reason)

    def _attach(self, run: _ConfirmedRun) -> None:
        with self._lock:
            self._run = run
            reason = self._stop_reason
        if reason is not None:
            run.stop_threadsafe(reason)


def file_rows(bodies: BinaryIO, first: int = 1) -> Iterator[tuple[int, int, bytes]]:
    """(row, line, body) for every line of a bodies file (`<line> <JSON body>` per line), from row `first` on."""
    for row, text in enumerate(bodies, start=1):
        if row >= first:
            line, _, body = text.partition(b" ")
            yield row, int(line), body[:-1]


def declare(job_type: JobType, connection_name: str) -> str:
    """Declare the type's queues on a short-lived connection to the first node that answers; returns that node's
    URL, which the upload's publishing connection then uses (raises pika errors when no node is reachable)."""
    connection, url = connect_any(connection_name)
    try:
        channel = connection.channel()
        declare_queues(channel, job_type)
        declare_control_exchanges(channel)
    finally:
        connection.close()
    return url


class _ConfirmedRun:
    """One upload's publishing session on its own SelectConnection."""

    def __init__(
        self,
        job_type: JobType,
        upload_id: str,
        rows: Iterable[tuple[int, int, bytes]],
        window: int,
        replay: int,
        control: PublishControl,
        node_url: str,
    ) -> None:
        self.job_type = job_type
        self.control = control
        self.upload_id = upload_id
        self.rows = iter(rows)
        self.window = window
        self.channel: Channel | None = None
        self.wake_channel: Channel | None = None
        self.woke = False
        self.last_row = 0
        self.confirmed = 0
        self.confirms: Confirms[int] = Confirms()  # delivery tag -> row
        self.returned: list[int] = []  # rows the broker could not route: never confirmed
        self.eof = False
        self.error: str | None = None
        self.last_progress = time.monotonic()
        self.replay = replay
        self.frames: RowFrames | None = None
        self.connection = SelectConnection(
            node_parameters(f"producer-upload-{upload_id}", node_url),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
        )

    def run(self, first: int) -> PublishResult:
        self.last_row = first - 1
        self.connection.ioloop.call_later(5, self._watchdog)
        self.control._attach(self)
        self.connection.ioloop.start()
        return PublishResult(self.confirmed, self._through(), self.error)

    def stop_threadsafe(self, reason: str) -> None:
        """Called from another thread: fail the run with `reason` on its own I/O thread."""
        self.connection.ioloop.add_callback_threadsafe(lambda: self._fail(reason))

    def _through(self) -> int:
        """The highest row confirmed with every row before it (rows and delivery tags rise together, and
        `confirms` keeps tags in the order they were sent, so its first entry is the lowest row)."""
        first = self.confirms.first_pending()
        lowest = self.last_row + 1 if first is None else first
        return min(lowest, *self.returned) - 1 if self.returned else lowest - 1

    # connection lifecycle -------------------------------------------------
    def _on_open(self, connection: SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_wake_channel)
        connection.channel(on_open_callback=self._on_channel)

    def _on_wake_channel(self, channel: Channel) -> None:
        self.wake_channel = channel

    def _maybe_wake(self) -> None:
        """Tell the scaler once that work arrived, when it is enough to scale for (or all there is)."""
        if self.woke or self.wake_channel is None or not self.wake_channel.is_open:
            return
        if self.confirmed > self.job_type.threshold or self._done():
            self.woke = True
            self.wake_channel.basic_publish(CONTROL_EXCHANGE, WAKE_ROUTING_KEY, wake_body(self.job_type.name))

    def _on_open_error(self, connection: SelectConnection, error: BaseException) -> None:
        self.error = f"cannot connect to RabbitMQ: {error or type(error).__name__}"
        connection.ioloop.stop()

    def _on_closed(self, connection: SelectConnection, reason: BaseException) -> None:
        if not self._done() and self.error is None:
            self.error = f"the RabbitMQ connection was lost: {reason or type(reason).__name__}"
        connection.ioloop.stop()

    def _on_channel(self, channel: Channel) -> None:
        self.channel = channel
        self.frames = RowFrames(
            channel.channel_number,
            self.job_type.queue,
            self.job_type.name,
            self.upload_id,
            int(time.time()),
            self.connection.params.frame_max,
            self.replay,
        )
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._pump())

    def _on_channel_closed(self, channel: Channel, reason: BaseException) -> None:
        if not self._done():
            self._fail(f"the RabbitMQ channel was closed: {reason}")

    def _fail(self, error: str) -> None:
        if self.error is None:
            self.error = error
        if self.connection.is_open:
            self.connection.close()
        else:
            self.connection.ioloop.stop()

    def _done(self) -> bool:
        return self.eof and not self.confirms.pending

    def _watchdog(self) -> None:
        if self._done() or self.error:
            return
        if time.monotonic() - self.last_progress > CONFIRM_STALL_SECONDS:
            self._fail(f"RabbitMQ confirmed nothing for {CONFIRM_STALL_SECONDS:g} s (is it blocked by an alarm?)")
            return
        self.connection.ioloop.call_later(5, self._watchdog)

    # publishing ------------------------------------------------------------
    def _pump(self) -> None:
        """Publish until the window of unconfirmed messages is full, the socket lags or the rows run out."""
        if self._room() and time.monotonic() > self.control.send_until:
            self._fail("this producer could not renew its publishing lease in time, so it stopped publishing")
            return
        while self._room() and unsent_bytes(self.connection) < UNSENT_BYTES:
            self._send_batch()
        if self._done() and self.connection.is_open:
            self._maybe_wake()
            self.connection.close()

    def _room(self) -> bool:
        return not self.eof and len(self.confirms.pending) < self.window and self.error is None

    def _send_batch(self) -> None:
        """Take rows up to BATCH_BYTES (or the window) and hand their frames to the connection as one buffer.

        This is what `channel.basic_publish` does row by row (see `RowFrames`);
        like it, it refuses to write on a channel that is not open.
        """
        assert self.channel is not None and self.frames is not None
        if not self.channel.is_open:
            self._fail("the RabbitMQ channel closed while publishing")
            return
        parts: list[bytes] = []
        add = self.frames.add
        rows = self.rows
        outstanding = self.confirms.pending
        published = self.confirms.published
        size = 0
        while size < BATCH_BYTES and len(outstanding) < self.window:
            item = next(rows, None)
            if item is None:
                self.eof = True
                break
            row, line, body = item
            add(parts, row, line, body)
            published(row)
            self.last_row = row
            size += len(body)
        if parts:
            write_frames(self.connection, b"".join(parts))

    def _on_return(self, channel: Channel, method, properties, body: bytes) -> None:
        """A returned row is not in the queue: its confirm (which still follows) must not count it."""
        row = int(properties.message_id.rpartition(":")[2])
        self.returned.append(row)
        self.confirms.discard(row)
        self._fail(f"RabbitMQ could not route row {properties.message_id} to queue {self.job_type.queue!r}")

    def _on_confirm(self, frame: Method) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self._fail(f"RabbitMQ refused row {self.upload_id}:{method.delivery_tag} (nack)")
            return
        self.confirmed += self.confirms.settle(method)
        self.control.confirmed_through = self._through()
        self.last_progress = time.monotonic()
        if self.error is None:
            self._maybe_wake()
            self._pump()


def publish_rows(
    job_type: JobType,
    upload_id: str,
    rows: Iterable[tuple[int, int, bytes]],
    window: int,
    first: int = 1,
    replay: int = 0,
    control: PublishControl | None = None,
) -> PublishResult:
    """Publish `rows` (numbered from `first` on) to the type's queue; blocks until all are confirmed, it fails,
    or `control` stops it."""
    try:
        node_url = declare(job_type, f"producer-declare-{upload_id}")
    except pika.exceptions.ChannelClosedByBroker as error:  # e.g. a queue that exists with another type
        return PublishResult(0, first - 1, f"RabbitMQ refused to declare the queues: {error.reply_text}")
    except pika.exceptions.AMQPError as error:
        return PublishResult(0, first - 1, f"cannot reach RabbitMQ: {error or type(error).__name__}")
    run = _ConfirmedRun(job_type, upload_id, rows, window, replay, control or PublishControl(first), node_url)
    return run.run(first)
