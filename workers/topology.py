"""What a worker needs on the broker before it consumes, and why it normally declares none of it.

A worker's broker user may declare nothing but its own server-named queues
(scaler.broker_users): the scaler declares every configured type's queues,
their routes and the shared exchanges before it starts workers, and the
producer does before it publishes. A worker therefore only checks, with
passive declarations (they need no permission), that they exist. When one is
missing, as for a worker started by hand on a fresh broker with a credential
that may declare (the development default, the tests), it declares them all; a
least-privilege worker is refused there, and its error says who declares them.
The worker's connect loop retries either way.
"""

from __future__ import annotations

import logging

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from common.config import JobType
from common.control_messages import CONTROL_EXCHANGE, HEARTBEAT_EXCHANGE, declare_control_exchanges
from common.outcomes import OUTCOMES_QUEUE, UPLOADS_EXCHANGE, declare_outcome_routes
from common.queues import DEAD_LETTERS_EXCHANGE, ROUTES_EXCHANGE, declare_queues, queue_arguments

log = logging.getLogger(__name__)
NOT_FOUND, ACCESS_REFUSED = 404, 403


def ensure_topology(connection: BlockingConnection, job_type: JobType) -> None:
    """Check that everything the worker uses exists; declare it all only when something is missing."""
    try:
        _on_scratch_channel(connection, lambda channel: _check(channel, job_type))
        return
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code != NOT_FOUND:
            raise
        missing = error.reply_text
    log.info("declaring the broker topology, something was missing", extra={"missing": missing})
    try:
        _on_scratch_channel(connection, lambda channel: _declare(channel, job_type))
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code != ACCESS_REFUSED:
            raise
        raise pika.exceptions.ChannelClosedByBroker(
            error.reply_code,
            f"{missing}, and this worker's broker user may not declare it ({error.reply_text}): the scaler "
            "declares every configured type's queues and routes before it starts workers, the producer "
            "before it publishes",
        ) from error


def _on_scratch_channel(connection: BlockingConnection, work) -> None:
    """Run `work(channel)` on a channel of its own: a refused declaration closes the channel it was made on."""
    channel = connection.channel()
    try:
        work(channel)
    finally:
        if channel.is_open:
            channel.close()


def _check(channel: BlockingChannel, job_type: JobType) -> None:
    for exchange in (ROUTES_EXCHANGE, DEAD_LETTERS_EXCHANGE, CONTROL_EXCHANGE, HEARTBEAT_EXCHANGE, UPLOADS_EXCHANGE):
        channel.exchange_declare(exchange, passive=True)
    for queue in (*queue_arguments(job_type), OUTCOMES_QUEUE):
        channel.queue_declare(queue, passive=True)


def _declare(channel: BlockingChannel, job_type: JobType) -> None:
    declare_queues(channel, job_type)
    declare_outcome_routes(channel)
    declare_control_exchanges(channel)
