"""The scaler's side of the worker control protocol (jobtypes.control), on its own thread.

It keeps the latest heartbeat of every worker (state, processed and failed
counts, current message) and sends stop requests. pika connections are not
thread-safe, so the control loop only enqueues stop requests; this thread
publishes them between servicing the connection, and reconnects with backoff
when the broker goes away.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import pika

from jobtypes.control import (
    CONTROL_EXCHANGE,
    HEARTBEAT_EXCHANGE,
    STOP_COMMAND,
    Heartbeat,
    declare_control_exchanges,
    stop_routing_key,
)
from jobtypes.settings import connection_parameters

log = logging.getLogger(__name__)
#: Heartbeats older than this are forgotten (the worker is gone).
FORGET_AFTER_SECONDS = 600.0


class WorkerChannel:
    def __init__(self, amqp_url: str, name: str = "scaler") -> None:
        self.amqp_url = amqp_url
        self.name = name
        self.heartbeats: dict[str, Heartbeat] = {}
        self.received_at: dict[str, float] = {}
        self.stops: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="worker-channel", daemon=True)

    def start(self) -> WorkerChannel:
        self._thread.start()
        return self

    def request_stop(self, worker_id: str) -> None:
        self.stops.put(worker_id)

    def snapshot(self) -> dict[str, Heartbeat]:
        with self._lock:
            return dict(self.heartbeats)

    def _on_heartbeat(self, channel, method, properties, body: bytes) -> None:
        try:
            heartbeat = Heartbeat.from_json(body)
        except ValueError as error:
            log.warning("ignoring a malformed heartbeat: %s", error)
            return
        now = time.monotonic()
        with self._lock:
            self.heartbeats[heartbeat.worker_id] = heartbeat
            self.received_at[heartbeat.worker_id] = now
            for worker_id in [w for w, at in self.received_at.items() if now - at > FORGET_AFTER_SECONDS]:
                self.heartbeats.pop(worker_id, None)
                self.received_at.pop(worker_id, None)

    def _run(self) -> None:
        delay = 0.5
        while self._running:
            try:
                self._serve()
                delay = 0.5
            except pika.exceptions.AMQPError as error:
                log.warning("worker channel lost (%s); reconnecting in %.1f s", error or type(error).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _serve(self) -> None:
        connection = pika.BlockingConnection(connection_parameters(f"{self.name}-worker-channel", self.amqp_url))
        try:
            channel = connection.channel()
            declare_control_exchanges(channel)
            inbox = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.queue_bind(inbox, HEARTBEAT_EXCHANGE)
            channel.basic_consume(inbox, self._on_heartbeat, auto_ack=True)
            log.info("listening to worker heartbeats")
            while self._running:
                while True:
                    try:
                        worker_id = self.stops.get_nowait()
                    except queue.Empty:
                        break
                    channel.basic_publish(CONTROL_EXCHANGE, stop_routing_key(worker_id), STOP_COMMAND)
                connection.process_data_events(time_limit=0.2)
        finally:
            if connection.is_open:
                connection.close()

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
