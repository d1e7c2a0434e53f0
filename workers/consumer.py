"""The consumer: owns the pika connection, takes deliveries, hands them to the executor, acks.

Threads: this runs on the main thread, which owns the connection (pika is not
thread-safe) and never blocks for long, so AMQP heartbeats, stop requests,
cancel notices and status heartbeats keep flowing while handlers run for
minutes on the executor's threads. Executors wake this thread when outcomes
are ready; it gathers finished rows into a group of about half the rows it
holds (fewer if nothing else is running, or once the oldest has waited
`settle_delay`; at once when nothing is reported), runs the hooks over the
group (one `before_ack`: one outcome report, retry copies, published without
waiting), and once the broker has confirmed those publishes, acks with one
`basic_ack(tag, multiple=True)` up to the highest tag below which every
delivery is settled. Confirms arrive while the other half is being handled,
and the channel's prefetch has room for the rows awaiting them
(`channel_prefetch`, see `workers.runtime`), so the handler keeps its window.

At-least-once: a row is acked only after its handler returned, or after its
retry, dead-letter or give-back copy was confirmed by the broker. A worker
that dies or loses its connection acks nothing more; RabbitMQ redelivers what
it held. `generation` counts connections: an outcome for a delivery of an
older connection is dropped, since its tag means nothing on the new one.
Reconnecting (`common.connections.Link`) tries the next node of
RABBITMQ_URLS first, with capped, jittered backoff between rounds.

A handler call running past the type's `timeout_seconds` fails its rows
(copies confirmed, then acked) and the worker stops with exit code
`EXIT_HANDLER_TIMED_OUT`: the stuck thread cannot be stopped, so the scaler
replaces the process.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from common.config import JobType
from common.connections import Link
from common.control_messages import CONTROL_EXCHANGE, HeartbeatState, stop_routing_key
from workers.acks import AckLedger
from workers.confirmed_publisher import ConfirmedPublisher, PublishFailed
from workers.delivery import Delivery, Outcome, Status
from workers.executor import Executor
from workers.hooks import Hooks
from workers.status import StatusHeartbeats
from workers.topology import ensure_topology

#: Errors that mean "the connection is gone", or that the channel cannot be trusted (a copy or report was
#: refused): reconnect (common.connections, to the next node) and carry on.
RECONNECT_ERRORS = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ChannelClosed,
    pika.exceptions.StreamLostError,
    PublishFailed,
)
EXIT_HANDLER_TIMED_OUT = 3
#: How often the loop looks up from the socket to tick hooks and check for timeouts.
TICK_SECONDS = 0.2


class Consumer:
    def __init__(
        self,
        job_type: JobType,
        worker_id: str,
        executor: Executor,
        hooks: Hooks,
        status: StatusHeartbeats,
        logger: logging.Logger,
        settle_delay: float,
        channel_prefetch: int,
    ) -> None:
        self.job_type = job_type
        self.worker_id = worker_id
        self.executor = executor
        self.hooks = hooks
        self.status = status
        self.log = logger
        self.ledger = AckLedger()
        self.stopping = False
        self.exit_code = 0
        self.connection: BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        self.publisher: ConfirmedPublisher | None = None
        #: finished rows not settled yet (see `_group_complete`), since when
        self.finished: list[Outcome] = []
        self.finished_since = 0.0
        self.settle_delay = settle_delay
        #: the channel's prefetch: the type's, plus room for rows whose report awaits its confirm
        self.channel_prefetch = channel_prefetch
        #: (publisher sequence to wait for, outcomes) in the order they were settled
        self.unconfirmed: deque[tuple[int, list[Outcome]]] = deque()
        self.awaiting_confirm = 0
        self.consumer_tag: str | None = None
        self.generation = 0
        self.next_tick = 0.0
        self.link = Link(
            worker_id, errors=RECONNECT_ERRORS, should_stop=lambda: self.stopping, on_lost=self._lost_connection
        )

    # lifecycle ----------------------------------------------------------------
    def run(self) -> int:
        """Consume until stopped; returns the process exit code (0 for a graceful stop)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.executor.start()
        self.log.info(
            "worker starting",
            extra={
                "queue": self.job_type.queue,
                "prefetch": self.job_type.effective_prefetch,
                "channel_prefetch": self.channel_prefetch,
            },
        )
        self.link.run(self._serve_connection)
        self._close()
        self.executor.close()
        beat = self.status.heartbeat
        self.log.info(
            "worker stopped", extra={"processed": beat.processed, "failed": beat.failed, "exit_code": self.exit_code}
        )
        return self.exit_code

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.log.info("stop requested", extra={"reason": signal.Signals(signum).name})
        self.stopping = True

    def _serve_connection(self, connection: BlockingConnection) -> None:
        self._connect(connection)
        self._serve()
        self.status.set_state("stopped")  # while the connection is open: the scaler hears it at once

    def _connect(self, connection: BlockingConnection) -> None:
        self.connection = connection
        self.generation += 1
        self.executor.wake = lambda: _wake(connection)
        self.publisher = ConfirmedPublisher(connection, self.executor.wake)
        ensure_topology(connection, self.job_type)
        self.channel = connection.channel()
        self.channel.basic_qos(prefetch_count=self.channel_prefetch)
        control = connection.channel()
        listen = control.queue_declare("", exclusive=True, auto_delete=True).method.queue
        control.queue_bind(listen, CONTROL_EXCHANGE, routing_key=stop_routing_key(self.worker_id))
        control.basic_consume(listen, self._on_control, auto_ack=True)
        self.hooks.on_connect(control)
        if not self.stopping:
            self.consumer_tag = self.channel.basic_consume(self.job_type.queue, self._on_message)
        self.log.info("consuming", extra={"queue": self.job_type.queue, "node": self.link.node})
        self.status.set_state(HeartbeatState.IDLE)

    def _lost_connection(self, error: BaseException) -> None:
        """Forget what the dead connection held: RabbitMQ redelivers it to someone."""
        self.log.warning(
            "connection lost, reconnecting",
            extra={"error": _reason(error), "node": self.link.node, "unacked_returned": len(self.ledger)},
        )
        self.executor.take_unstarted()
        self.ledger.reset()
        self.finished = []
        self.unconfirmed.clear()
        self.awaiting_confirm = 0
        self.consumer_tag = None
        self._close_connection()
        self.connection = None

    def _close(self) -> None:
        self.status.set_state(HeartbeatState.STOPPED)
        self._close_connection()

    def _close_connection(self) -> None:
        if self.connection is not None and self.connection.is_open:
            try:
                self.connection.close()
            except (pika.exceptions.AMQPError, OSError):
                pass

    # the loop -----------------------------------------------------------------
    def _serve(self) -> None:
        assert self.connection is not None
        while True:
            if self.stopping:
                self._begin_stop()
                if not self.ledger:
                    return
            now = time.monotonic()
            if now >= self.next_tick:
                self._tick(now)
            self.connection.process_data_events(time_limit=self._wait_limit(now))
            self._flush()

    def _tick(self, now: float) -> None:
        self.next_tick = now + TICK_SECONDS
        if self.job_type.timeout_seconds is not None:
            self._fail_overdue(self.job_type.timeout_seconds)
        if not self.stopping:
            self.status.set_state(HeartbeatState.BUSY if self.ledger else HeartbeatState.IDLE)
        self.hooks.tick(now)

    def _on_message(self, channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        delivery = Delivery(method.delivery_tag, properties, body, method.redelivered, self.generation)
        self.ledger.delivered(delivery.tag)
        if self.stopping:
            self._settle([Outcome(delivery, Status.RETURNED)])
        else:
            self.executor.submit(delivery)

    def _on_control(self, channel: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
        self.log.info("stop requested", extra={"reason": "scaler stop request"})
        self.stopping = True

    def _begin_stop(self) -> None:
        """No new rows; rows not started yet go back to the queue."""
        assert self.channel is not None
        if self.status.heartbeat.state != HeartbeatState.STOPPING:
            self.status.set_state(HeartbeatState.STOPPING)
            self.executor.stopping = True
        if self.consumer_tag is not None:
            self.channel.basic_cancel(self.consumer_tag)
            self.consumer_tag = None
        unstarted = self.executor.take_unstarted()
        if unstarted:
            self._settle([Outcome(delivery, Status.RETURNED) for delivery in unstarted])

    # settling -------------------------------------------------------------------
    def _flush(self) -> None:
        """Gather finished rows; settle them as one group once `_group_complete`."""
        finished = [o for o in self.executor.take_finished() if o.delivery.generation == self.generation]
        if finished and not self.finished:
            self.finished_since = time.monotonic()
        self.finished += finished
        if self.finished and self._group_complete():
            group, self.finished = self.finished, []
            self._settle(group)
        else:
            self._ack_confirmed()

    def _group_complete(self) -> bool:
        """One report and one ack for the group once it holds half the rows in hand (the other half keeps
        the handler busy meanwhile), or nothing else held is running, or its oldest row has waited
        `settle_delay` (a slow row among fast ones), or the worker is stopping."""
        running = len(self.ledger) - self.awaiting_confirm - len(self.finished)
        half = 2 * len(self.finished) >= len(self.ledger) - self.awaiting_confirm
        waited = time.monotonic() - self.finished_since >= self.settle_delay
        return half or running <= 0 or waited or self.stopping

    def _wait_limit(self, now: float) -> float:
        """How long the socket may be watched: until the next tick, or until finished rows must settle."""
        if self.finished:
            return max(min(TICK_SECONDS, self.finished_since + self.settle_delay - now), 0)
        return TICK_SECONDS

    def _settle(self, outcomes: list[Outcome]) -> None:
        """Hooks first (copies and reports published), then the ack once the broker confirmed them."""
        assert self.publisher is not None
        self.hooks.after_handle(outcomes)
        self.hooks.before_ack(outcomes, self.publisher)
        self.unconfirmed.append((self.publisher.sequence, outcomes))
        self.awaiting_confirm += len(outcomes)
        self._ack_confirmed()

    def _ack_confirmed(self) -> None:
        """One `multiple=True` ack for every contiguous row whose copies and reports are confirmed."""
        assert self.publisher is not None and self.channel is not None
        self.publisher.check()
        confirmed = self.publisher.confirmed
        while self.unconfirmed and self.unconfirmed[0][0] <= confirmed:
            outcomes = self.unconfirmed.popleft()[1]
            self.awaiting_confirm -= len(outcomes)
            for outcome in outcomes:
                self.ledger.settle(outcome.delivery.tag)
        last = self.ledger.release()
        if last is not None:
            self.channel.basic_ack(last, multiple=True)

    def _fail_overdue(self, limit: float) -> None:
        late = self.executor.overdue(limit)
        if not late:
            return
        error = f"timed out after {limit:g} s"
        self.log.error(
            "handler timed out: its rows count as failed; exiting so this worker is replaced",
            extra={"message_ids": [delivery.message_id for delivery in late], "error": error},
        )
        current = [delivery for delivery in late if delivery.generation == self.generation]
        if current:
            self._settle([Outcome(delivery, Status.FAILED, error, limit) for delivery in current])
        self.exit_code = EXIT_HANDLER_TIMED_OUT
        self.stopping = True


def _wake(connection: BlockingConnection) -> None:
    """Make the connection's thread return from `process_data_events` (called from executor threads)."""
    try:
        connection.add_callback_threadsafe(_nothing)
    except (pika.exceptions.ConnectionWrongStateError, pika.exceptions.AMQPConnectionError):
        pass  # the connection is gone; the consumer drops that generation's outcomes


def _nothing() -> None:
    return None


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__
