"""Declare a job type's queues with the same arguments wherever it is done.

RabbitMQ refuses a redeclaration whose arguments differ (PRECONDITION_FAILED
closes the channel), so the producer, the scaler and the workers all call
`declare_queues` and never spell the arguments themselves.

Each type has three durable queues:

* `<queue>`: the work. Messages a worker rejects outright are dead-lettered to
  `<queue>.dead`.
* `<queue>.retry`: rows waiting to be tried again. Each message carries its own
  expiration; when it expires RabbitMQ dead-letters it back to `<queue>`. A
  failing row therefore waits here, not in front of the rows behind it.
* `<queue>.dead`: rows that failed `max_attempts` times, with the reason in
  their headers, for an operator to inspect or replay.

The three are also bound, each under its own name, to the topic exchange
`ROUTES_EXCHANGE`, and so is the outcome report queue (jobtypes.outcomes).
Workers publish their retry, dead-letter, give-back copies and reports there,
never to the default exchange: a worker's broker user may write to that one
exchange only, with topic permissions naming its own type's queues, so it
cannot publish to another type's queue (scaler.broker_users).
"""

from __future__ import annotations

from typing import Any

from pika.adapters.blocking_connection import BlockingChannel

from jobtypes.config import JobType

#: The topic exchange workers publish copies and reports to; routing key = the queue's name.
ROUTES_EXCHANGE = "autoscaler.routes"


def queue_arguments(job_type: JobType) -> dict[str, dict[str, Any]]:
    """Queue name -> declaration arguments for every queue of `job_type`."""
    return {
        job_type.queue: {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": job_type.dead_queue,
        },
        job_type.retry_queue: {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": job_type.queue,
        },
        job_type.dead_queue: {},
    }


def declare_routes_exchange(channel: BlockingChannel) -> None:
    channel.exchange_declare(exchange=ROUTES_EXCHANGE, exchange_type="topic", durable=True)


def bind_route(channel: BlockingChannel, queue: str) -> None:
    """Route `ROUTES_EXCHANGE` messages with routing key `queue` to that queue (queue names hold no * or #)."""
    channel.queue_bind(queue, ROUTES_EXCHANGE, routing_key=queue)


def declare_queues(channel: BlockingChannel, job_type: JobType) -> None:
    """Declare the work, retry and dead-letter queues of `job_type` and their routes (idempotent)."""
    declare_routes_exchange(channel)
    for name, arguments in queue_arguments(job_type).items():
        channel.queue_declare(queue=name, durable=True, arguments=arguments)
        bind_route(channel, name)
