"""Speak the workers' side of the outcome protocol in tests: publish reports, hear cancel notices."""

from __future__ import annotations

import pika

from common.outcomes import (
    OUTCOMES_QUEUE,
    UPLOADS_EXCHANGE,
    CancelNotice,
    OutcomeReport,
    RowOutcome,
    declare_outcome_routes,
)
from harness.broker import Broker


def publish_reports(broker: Broker, job_type: str, batches: list[list[RowOutcome]]) -> None:
    """Publish one persistent, confirmed OutcomeReport per batch, as a worker does."""
    with broker.channel() as channel:
        declare_outcome_routes(channel)
        channel.confirm_delivery()
        for rows in batches:
            report = OutcomeReport(worker_id="test-worker", job_type=job_type, rows=rows)
            channel.basic_publish(
                "",
                OUTCOMES_QUEUE,
                report.to_json(),
                pika.BasicProperties(delivery_mode=2, content_type="application/json"),
            )


class CancelListener:
    """An exclusive queue bound to the cancel exchange, read with basic_get."""

    def __init__(self, broker: Broker) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
        self.channel = self.connection.channel()
        declare_outcome_routes(self.channel)
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.queue, UPLOADS_EXCHANGE)

    def notices(self) -> list[CancelNotice]:
        found = []
        while True:
            method, _, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return found
            found.append(CancelNotice.from_json(body))

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
