"""The worker runtime: consume a job type's queue, call its handler, ack, retry or park.

Threads: the main thread owns the pika connection (pika is not thread-safe)
and never blocks for long, so AMQP heartbeats, stop requests and our own
status heartbeats keep flowing while a handler runs for minutes. Every
delivery goes straight to a second thread that runs handlers one at a time,
back to back; each outcome comes back with `add_callback_threadsafe`, which
wakes the main thread to ack. A stopping worker's handler thread starts
nothing new and hands the unstarted deliveries back to be requeued.

At-least-once: a row is acked only after its handler returned, or after its
retry or dead-letter copy was confirmed by the broker. A worker that dies or
loses its connection acks nothing more; RabbitMQ redelivers what it held.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from tenacity import Retrying, retry_if_exception_type, stop_never, wait_exponential

from jobtypes.config import JobType
from jobtypes.control import (
    CONTROL_EXCHANGE,
    HEARTBEAT_EXCHANGE,
    Heartbeat,
    declare_control_exchanges,
    stop_routing_key,
)
from jobtypes.queues import declare_queues
from jobtypes.settings import connection_parameters
from workers.context import Context
from workers.handlers import Handler
from workers.retry import Republish, after_failure, attempt_of, unreadable

#: Errors that mean "the connection is gone": reconnect and carry on.
CONNECTION_ERRORS = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ChannelClosed,
    pika.exceptions.StreamLostError,
)


@dataclass
class Delivery:
    tag: int
    properties: pika.BasicProperties
    body: bytes
    redelivered: bool
    generation: int


@dataclass
class Outcome:
    delivery: Delivery
    error: str | None
    seconds: float
    unreadable: bool = False
    started: bool = True


class StopRequested(Exception):
    """Raised out of a reconnect wait when the worker was told to stop."""


class Worker:
    def __init__(self, job_type: JobType, handler: Handler, worker_id: str, logger: logging.Logger) -> None:
        self.job_type = job_type
        self.handler = handler
        self.worker_id = worker_id
        self.log = logger
        self.heartbeat_seconds = float(os.environ.get("WORKER_HEARTBEAT_SECONDS", "2"))
        self.stats = Heartbeat(
            worker_id=worker_id,
            job_type=job_type.name,
            state="starting",
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=time.time(),
        )
        self.stopping = False
        self.connection: BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        self.notify: BlockingChannel | None = None
        self.consumer_tag: str | None = None
        self.generation = 0
        self.in_hand = 0
        self.last_heartbeat = 0.0
        self.jobs: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self.handler_thread = threading.Thread(target=self._handler_loop, name="handler", daemon=True)

    # lifecycle ----------------------------------------------------------------
    def run(self) -> int:
        """Consume until stopped; returns the process exit code (0 for a graceful stop)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.handler_thread.start()
        self.log.info("worker starting", extra={"queue": self.job_type.queue, "prefetch": self.job_type.prefetch})
        while True:
            try:
                self._connect_with_backoff()
                self._serve()
                break
            except StopRequested:
                break
            except CONNECTION_ERRORS as error:
                self._lost_connection(error)
        self._close()
        self.jobs.put(None)
        self.log.info("worker stopped", extra={"processed": self.stats.processed, "failed": self.stats.failed})
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.log.info("stop requested", extra={"reason": signal.Signals(signum).name})
        self.stopping = True

    def _connect_with_backoff(self) -> None:
        for attempt in Retrying(
            retry=retry_if_exception_type(CONNECTION_ERRORS),
            wait=wait_exponential(multiplier=0.5, max=10),
            stop=stop_never,
            reraise=True,
        ):
            if self.stopping:
                raise StopRequested
            with attempt:
                try:
                    self._connect()
                except CONNECTION_ERRORS as error:
                    self.log.warning(
                        "cannot reach RabbitMQ, retrying", extra={"error": str(error) or type(error).__name__}
                    )
                    raise

    def _connect(self) -> None:
        self.connection = pika.BlockingConnection(connection_parameters(self.worker_id))
        self.generation += 1
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        declare_queues(self.channel, self.job_type)
        self.channel.basic_qos(prefetch_count=self.job_type.prefetch)
        self.notify = self.connection.channel()
        declare_control_exchanges(self.notify)
        control = self.notify.queue_declare("", exclusive=True, auto_delete=True).method.queue
        self.notify.queue_bind(control, CONTROL_EXCHANGE, routing_key=stop_routing_key(self.worker_id))
        self.notify.basic_consume(control, self._on_control, auto_ack=True)
        if not self.stopping:
            self.consumer_tag = self.channel.basic_consume(self.job_type.queue, self._on_message)
        self.log.info("consuming", extra={"queue": self.job_type.queue})
        self._set_state("idle")

    def _lost_connection(self, error: BaseException) -> None:
        """Forget what the dead connection held: RabbitMQ redelivers it to someone."""
        self.log.warning(
            "connection lost, reconnecting",
            extra={"error": str(error) or type(error).__name__, "unacked_returned": self.in_hand},
        )
        self.in_hand = 0
        self.consumer_tag = None
        self.connection = None

    def _close(self) -> None:
        self._set_state("stopped")
        if self.connection is not None and self.connection.is_open:
            try:
                self.connection.close()
            except CONNECTION_ERRORS:
                pass

    # the main loop ------------------------------------------------------------
    def _serve(self) -> None:
        assert self.connection is not None
        while True:
            if self.stopping:
                self._begin_stop()
                if self.in_hand == 0:
                    return
            self._maybe_heartbeat()
            self.connection.process_data_events(time_limit=min(self.heartbeat_seconds, 0.5))

    def _on_message(self, channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        delivery = Delivery(method.delivery_tag, properties, body, method.redelivered, self.generation)
        if self.stopping:
            channel.basic_nack(method.delivery_tag, requeue=True)
            return
        self.in_hand += 1
        self._set_state("busy")
        self.jobs.put(delivery)

    def _on_control(self, channel: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
        self.log.info("stop requested", extra={"reason": "scaler stop request"})
        self.stopping = True

    def _begin_stop(self) -> None:
        """No new rows; the handler thread hands back the prefetched ones it has not started."""
        assert self.channel is not None
        if self.stats.state != "stopping":
            self._set_state("stopping")
        if self.consumer_tag is not None:
            self.channel.basic_cancel(self.consumer_tag)
            self.consumer_tag = None

    # handler thread -------------------------------------------------------------
    def _handler_loop(self) -> None:
        while (delivery := self.jobs.get()) is not None:
            if delivery.generation != self.generation:
                continue  # its connection is gone: RabbitMQ redelivers it
            if self.stopping:
                outcome = Outcome(delivery, None, 0.0, started=False)
            else:
                self.stats.current_message = delivery.properties.message_id
                outcome = self._call_handler(delivery)
                self.stats.current_message = None
            connection = self.connection
            try:
                if connection is None or delivery.generation != self.generation:
                    raise pika.exceptions.ConnectionWrongStateError("connection replaced")
                connection.add_callback_threadsafe(lambda outcome=outcome: self._finish(outcome))
            except (pika.exceptions.ConnectionWrongStateError, pika.exceptions.AMQPConnectionError):
                self.log.warning(
                    "finished after the connection was lost; RabbitMQ redelivers the row",
                    extra={"message_id": delivery.properties.message_id},
                )

    def _call_handler(self, delivery: Delivery) -> Outcome:
        started = time.perf_counter()
        message_id = delivery.properties.message_id or f"tag-{delivery.tag}"
        try:
            row = json.loads(delivery.body)
            if not isinstance(row, dict):
                raise ValueError("the body is JSON but not an object")
        except ValueError as error:
            return Outcome(delivery, f"unreadable body: {error}", time.perf_counter() - started, unreadable=True)
        context = Context(
            message_id=message_id,
            upload_id=str((delivery.properties.headers or {}).get("upload_id", "")),
            attempt=attempt_of(delivery.properties),
            job_type=self.job_type.name,
            worker_id=self.worker_id,
            logger=logging.LoggerAdapter(logging.getLogger("handler"), {"message_id": message_id}),
            redelivered=delivery.redelivered,
        )
        try:
            self.handler(row, context)
        except Exception as error:  # noqa: BLE001 - any handler failure is retried, then parked
            return Outcome(delivery, f"{type(error).__name__}: {error}", time.perf_counter() - started)
        return Outcome(delivery, None, time.perf_counter() - started)

    # back on the main thread --------------------------------------------------------
    def _finish(self, outcome: Outcome) -> None:
        assert self.channel is not None
        delivery = outcome.delivery
        if delivery.generation != self.generation:
            return
        self.in_hand -= 1
        if not outcome.started:
            self.channel.basic_nack(delivery.tag, requeue=True)
            return
        fields = {
            "message_id": delivery.properties.message_id,
            "attempt": attempt_of(delivery.properties),
            "duration_ms": round(outcome.seconds * 1000, 1),
        }
        if outcome.error is None:
            # Logged before the ack: a worker killed in between has its row redelivered, and the
            # log then shows the duplicate, never a row that was acked but not recorded.
            self.log.info("processed", extra=fields)
            self.channel.basic_ack(delivery.tag)
            self.stats.processed += 1
        else:
            self.stats.failed += 1
            decide = unreadable if outcome.unreadable else after_failure
            target = decide(self.job_type, delivery.properties, outcome.error, self.worker_id)
            self._republish(delivery, target)
            self.channel.basic_ack(delivery.tag)
            if target.outcome == "retry":
                self.stats.retried += 1
            else:
                self.stats.dead += 1
            self.log.warning(f"failed, {target.outcome}", extra={**fields, "error": outcome.error, "to": target.queue})
        if self.in_hand == 0 and not self.stopping:
            self._set_state("idle")

    def _republish(self, delivery: Delivery, target: Republish) -> None:
        """Publish the copy with confirms before the original is acked, so the row is never lost."""
        assert self.channel is not None
        self.channel.basic_publish("", target.queue, delivery.body, target.properties, mandatory=True)

    # heartbeats ---------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        """Lifecycle changes are announced at once; busy/idle flips ride on the periodic heartbeat,
        or a fast handler would double the broker's message traffic."""
        if self.stats.state != state:
            self.stats.state = state
            if state not in ("busy", "idle"):
                self._send_heartbeat()

    def _maybe_heartbeat(self) -> None:
        if time.monotonic() - self.last_heartbeat >= self.heartbeat_seconds:
            self._send_heartbeat()

    def _send_heartbeat(self) -> None:
        if self.notify is None or not self.notify.is_open:
            return
        self.last_heartbeat = time.monotonic()
        self.stats.sent_at = time.time()
        try:
            self.notify.basic_publish(HEARTBEAT_EXCHANGE, "", self.stats.to_json())
        except CONNECTION_ERRORS:
            pass  # the main loop notices the dead connection and reconnects
