"""The `Cancellations` hook: rows of a cancelled upload are skipped, acked and reported `cancelled`.

The worker binds an exclusive queue to the uploads fanout exchange and keeps
the upload ids of every `CancelNotice` it hears, each for
`cancel_memory_seconds` after it was last announced (the record repeats its
notices while a cancelled upload still has rows, so a worker started later
learns them too, and ids of long-finished uploads are forgotten). A row is
checked just before its handler would start: rows already in progress finish.
A malformed notice is logged and dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel

from common.outcomes import UPLOADS_EXCHANGE, CancelNotice
from workers.delivery import Delivery, Outcome, Status
from workers.hooks import Hook


class Cancellations(Hook):
    def __init__(self, memory_seconds: float, logger: logging.Logger) -> None:
        self.memory_seconds = memory_seconds
        self.log = logger
        #: upload id -> monotonic time it was last announced; replaced, never mutated, so executor threads can read it
        self.cancelled: dict[str, float] = {}

    def on_connect(self, channel: BlockingChannel) -> None:
        """Listen for cancel notices on `channel` (the exchange is declared by the consumer)."""
        listen = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(listen, UPLOADS_EXCHANGE)
        channel.basic_consume(listen, self._on_notice, auto_ack=True)

    def _on_notice(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            notice = CancelNotice.from_json(body)
        except ValueError as error:
            self.log.warning("malformed cancel notice dropped", extra={"error": str(error), "body": body[:200]})
            return
        now = time.monotonic()
        new = [upload for upload in notice.cancelled if upload not in self.cancelled]
        self.cancelled = {**self.cancelled, **dict.fromkeys(notice.cancelled, now)}
        if new:
            self.log.info("uploads cancelled: their rows will be skipped", extra={"uploads": new})

    def before_handle(self, delivery: Delivery) -> Outcome | None:
        upload_id = delivery.headers.get("upload_id")
        # Another process wrote the header: a list or a number in it is not an upload id, and must not raise.
        if self.cancelled and isinstance(upload_id, str) and upload_id in self.cancelled:
            return Outcome(delivery, Status.CANCELLED)
        return None

    def tick(self, now: float) -> None:
        oldest = time.monotonic() - self.memory_seconds
        if any(seen < oldest for seen in self.cancelled.values()):
            self.cancelled = {upload: seen for upload, seen in self.cancelled.items() if seen >= oldest}
