"""The scaler's side of the worker control protocol (common.control_messages), on its own thread.

It keeps the latest heartbeat of every worker (state, processed and failed
counts, current message), sends stop requests and passes the producer's
wake-ups ("work arrived for this type") to a callback, so the control loop
ticks at once instead of at its next interval. pika connections are not
thread-safe, so the control loop only enqueues stop requests; this thread
publishes them between servicing the connection, and reconnects to the next
node with backoff when its node goes away (`common.connections.Link`; the
node and the reason while reconnecting are in `health()`, on /healthz).

Anything can publish to these exchanges, so nothing received may stop the
thread: a malformed heartbeat or wake-up is counted, logged (at most once per
`MALFORMED_LOG_SECONDS`) and dropped. `health()` says whether the thread runs
and when it last made progress, for the scaler's /healthz.

It also declares what workers use and may not declare themselves (their
broker user is read and route-only, scaler.broker_users): the control and
cancel exchanges, the outcome report queue, and the queues and routes of every
configured type (`declare`, called by the control loop with the config each
tick; a type is declared again only when it changed or the connection was new).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pika

from common.config import JobType
from common.connections import Link
from common.control_messages import (
    CONTROL_EXCHANGE,
    HEARTBEAT_EXCHANGE,
    STOP_COMMAND,
    WAKE_ROUTING_KEY,
    Heartbeat,
    declare_control_exchanges,
    stop_routing_key,
    wake_job_type,
)
from common.outcomes import declare_outcome_routes
from common.queues import declare_queues

log = logging.getLogger(__name__)
#: Heartbeats older than this are forgotten (the worker is gone).
FORGET_AFTER_SECONDS = 600.0
#: A burst of malformed messages is logged once per this many seconds, with a count.
MALFORMED_LOG_SECONDS = 10.0


@dataclass(frozen=True)
class ChannelHealth:
    alive: bool
    connected: bool
    #: Seconds since the thread's loop last went round (it does every 0.2 s, or every reconnect attempt).
    last_progress_age: float
    malformed: int
    wake_ups: int
    #: host:port of the node connected to (or last connected to), and what the link is doing about a loss
    node: str | None
    reason: str | None


class WorkerChannel:
    def __init__(
        self, amqp_urls: tuple[str, ...], name: str = "scaler", on_wake: Callable[[str], None] | None = None
    ) -> None:
        self.link = Link(
            f"{name}-worker-channel",
            amqp_urls,
            errors=(Exception,),  # the thread reconnects whatever happened
            should_stop=lambda: not self._running,
            on_wait=self._beat,
            on_lost=self._on_lost,
        )
        self.on_wake = on_wake or (lambda job_type: None)
        self.heartbeats: dict[str, Heartbeat] = {}
        self.received_at: dict[str, float] = {}
        self.stops: queue.SimpleQueue[str] = queue.SimpleQueue()
        #: the configured types (replaced whole by `declare`), and those declared on the current connection
        self._wanted: tuple[JobType, ...] = ()
        self._declared: dict[str, JobType] = {}
        self.malformed = 0
        self.wake_ups = 0
        self._malformed_logged_at = 0.0
        self._connection: pika.BlockingConnection | None = None
        self._progress_at = time.monotonic()
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="worker-channel", daemon=True)

    def start(self) -> WorkerChannel:
        self._thread.start()
        return self

    def health(self) -> ChannelHealth:
        return ChannelHealth(
            alive=self._thread.is_alive(),
            connected=self._connection is not None,
            last_progress_age=time.monotonic() - self._progress_at,
            malformed=self.malformed,
            wake_ups=self.wake_ups,
            node=self.link.node,
            reason=self.link.reason,
        )

    def request_stop(self, worker_id: str) -> None:
        """Queue a stop request and wake the thread, so it goes out now rather than within 0.2 s."""
        self.stops.put(worker_id)
        connection = self._connection
        if connection is not None:
            try:
                connection.add_callback_threadsafe(lambda: None)
            except pika.exceptions.AMQPError:
                pass  # the thread reconnects and sends it then

    def declare(self, job_types: list[JobType]) -> None:
        """Have the thread declare these types' queues and routes (those not declared on this connection yet)."""
        self._wanted = tuple(job_types)

    def snapshot(self) -> dict[str, Heartbeat]:
        with self._lock:
            return dict(self.heartbeats)

    def _on_message(self, channel, method, properties, body: bytes) -> None:
        """Every delivery of the inbox: a wake-up or a heartbeat. Nothing raised here may end the thread."""
        try:
            if method.routing_key == WAKE_ROUTING_KEY and method.exchange == CONTROL_EXCHANGE:
                self.on_wake(wake_job_type(body))
                self.wake_ups += 1
            else:
                self._remember(Heartbeat.from_json(body))
        except ValueError as error:
            self._drop(error)
        except Exception:  # noqa: BLE001 - a bug met by one message must not stop heartbeats and stops
            log.exception("dropped a control message that could not be handled")

    def _drop(self, error: ValueError) -> None:
        self.malformed += 1
        now = time.monotonic()
        if now - self._malformed_logged_at >= MALFORMED_LOG_SECONDS:
            self._malformed_logged_at = now
            log.warning("dropped a malformed control message (%d so far): %s", self.malformed, error)

    def _remember(self, heartbeat: Heartbeat) -> None:
        now = time.monotonic()
        with self._lock:
            self.heartbeats[heartbeat.worker_id] = heartbeat
            self.received_at[heartbeat.worker_id] = now
            for worker_id in [w for w, at in self.received_at.items() if now - at > FORGET_AFTER_SECONDS]:
                self.heartbeats.pop(worker_id, None)
                self.received_at.pop(worker_id, None)

    def _on_lost(self, error: BaseException) -> None:
        if not isinstance(error, pika.exceptions.AMQPError):
            log.error("worker channel failed; reconnecting", exc_info=error)

    def _beat(self) -> None:
        self._progress_at = time.monotonic()

    def _run(self) -> None:
        self.link.run(self._serve)

    def _serve(self, connection: pika.BlockingConnection) -> None:
        try:
            channel = connection.channel()
            declare_control_exchanges(channel)
            declare_outcome_routes(channel)
            self._declared = {}
            inbox = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.queue_bind(inbox, HEARTBEAT_EXCHANGE)
            channel.queue_bind(inbox, CONTROL_EXCHANGE, routing_key=WAKE_ROUTING_KEY)
            channel.basic_consume(inbox, self._on_message, auto_ack=True)
            log.info("listening to worker heartbeats and wake-ups")
            self._connection = connection
            while self._running:
                self._progress_at = time.monotonic()
                self._declare_wanted(connection)
                while True:
                    try:
                        worker_id = self.stops.get_nowait()
                    except queue.Empty:
                        break
                    channel.basic_publish(CONTROL_EXCHANGE, stop_routing_key(worker_id), STOP_COMMAND)
                connection.process_data_events(time_limit=0.2)
        finally:
            self._connection = None  # the link closes the connection

    def _declare_wanted(self, connection: pika.BlockingConnection) -> None:
        """Declare each type not declared on this connection yet, on a channel of its own: a declaration the broker
        refuses (a queue that exists with other arguments) closes only that channel, is logged once and is not
        tried again until the type's settings change or the connection is new."""
        for job_type in self._wanted:
            if self._declared.get(job_type.name) == job_type:
                continue
            self._declared[job_type.name] = job_type
            channel = connection.channel()
            try:
                declare_queues(channel, job_type)
            except pika.exceptions.ChannelClosedByBroker as refused:
                log.warning("could not declare the queues of %s: %s", job_type.name, refused.reply_text)
            finally:
                if channel.is_open:
                    channel.close()

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
