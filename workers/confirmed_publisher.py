"""Publish with broker confirms without waiting for each one: what lets a worker report and ack in a pipeline.

pika's BlockingChannel in confirm mode waits for every publish's confirm, so
a worker that reports outcomes before acking would stall for a broker round
trip per batch, with its prefetch window full and nothing to do. This
publisher uses the asynchronous channel under a BlockingChannel (its
documented `confirm_delivery(ack_nack_callback)`): publishes go out at once,
confirms are counted as they arrive, and the consumer acks a batch's rows
once every publish made for them is confirmed (`confirmed >= its sequence`).

Everything is mandatory: a copy or report RabbitMQ cannot route, or one it
nacks, makes `check()` raise, and the consumer reconnects without acking; the
rows come back and are reported again. Used on the connection's thread only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingConnection

from common.confirms import Confirms
from common.pika_internals import async_channel
from common.queues import ROUTES_EXCHANGE

CONFIRM_SELECT_TIMEOUT = 10.0


class PublishFailed(pika.exceptions.AMQPError):
    """The broker returned or refused a publish; the message says which."""


class ConfirmedPublisher:
    def __init__(self, connection: BlockingConnection, wake: Callable[[], None]) -> None:
        self.channel = connection.channel()
        self.wake = wake
        self.confirms: Confirms[None] = Confirms()
        self.failure: str | None = None
        selected: list[Any] = []
        self.async_channel = impl = async_channel(self.channel)  # confirms by callback, not by waiting
        impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
        impl.add_on_return_callback(self._on_return)
        deadline = time.monotonic() + CONFIRM_SELECT_TIMEOUT
        while not selected:
            if time.monotonic() > deadline:
                raise pika.exceptions.AMQPConnectionError("no answer to confirm.select")
            connection.process_data_events(time_limit=0.01)

    def publish(self, queue: str, body: bytes, properties: pika.BasicProperties) -> None:
        """Publish to `queue` through the routes exchange (the only one a worker's user may write to); confirmed
        later."""
        self.async_channel.basic_publish(ROUTES_EXCHANGE, queue, body, properties, mandatory=True)
        self.confirms.published(None)

    @property
    def sequence(self) -> int:
        """The number of the last publish."""
        return self.confirms.sequence

    @property
    def confirmed(self) -> int:
        """Every publish up to this sequence number is confirmed."""
        return self.confirms.through()

    def check(self) -> None:
        if self.failure is not None:
            raise PublishFailed(self.failure)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self.failure = f"the broker refused publish {method.delivery_tag} (nack)"
        else:
            self.confirms.settle(method)
        self.wake()

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.failure = f"RabbitMQ could not route a message to {method.routing_key!r}: {method.reply_text}"
