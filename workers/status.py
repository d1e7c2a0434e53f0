"""The worker's status heartbeats to the scaler: state, counters, the row in hand.

Lifecycle changes (starting, stopping, stopped) are announced at once; busy
and idle ride on the periodic heartbeat, or a fast handler would double the
broker's message traffic. As a hook it counts every finished row.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pika
from pika.adapters.blocking_connection import BlockingChannel

from common.control_messages import HEARTBEAT_EXCHANGE, Heartbeat, HeartbeatState
from workers.delivery import Outcome, Status
from workers.disposition import Disposition
from workers.hooks import Hook


class StatusHeartbeats(Hook):
    def __init__(self, worker_id: str, job_type: str, every_seconds: float) -> None:
        self.every_seconds = every_seconds
        #: The message id of a row in progress, for the heartbeat (set to the executor's).
        self.current: Callable[[], str | None] = lambda: None
        self.channel: BlockingChannel | None = None
        self.last_sent = 0.0
        self.heartbeat = Heartbeat(
            worker_id=worker_id,
            job_type=job_type,
            state=HeartbeatState.STARTING,
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=time.time(),
        )

    def on_connect(self, channel: BlockingChannel) -> None:
        self.channel = channel

    def after_handle(self, outcome: Outcome) -> None:
        beat = self.heartbeat
        if outcome.status is Status.FAILED:
            beat.failed += 1
            if outcome.copy is not None and outcome.copy.outcome is Disposition.DEAD:
                beat.dead += 1
            else:
                beat.retried += 1
        elif outcome.status is not Status.RETURNED:
            beat.processed += 1

    def set_state(self, state: HeartbeatState) -> None:
        """A change between busy and idle waits for the next periodic beat; any other change is sent at once."""
        if self.heartbeat.state != state:
            self.heartbeat.state = state
            if state not in (HeartbeatState.BUSY, HeartbeatState.IDLE):
                self.send()

    def tick(self, now: float) -> None:
        if now - self.last_sent >= self.every_seconds:
            self.send()

    def send(self) -> None:
        if self.channel is None or not self.channel.is_open:
            return
        self.last_sent = time.monotonic()
        self.heartbeat.sent_at = time.time()
        self.heartbeat.current_message = self.current()
        try:
            self.channel.basic_publish(HEARTBEAT_EXCHANGE, "", self.heartbeat.to_json())
        except (pika.exceptions.AMQPError, OSError):
            pass  # the consumer notices the dead connection and reconnects
