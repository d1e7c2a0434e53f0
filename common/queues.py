"""Declare a job type's queues with the same arguments wherever it is done.

RabbitMQ refuses a redeclaration whose arguments differ (PRECONDITION_FAILED
closes the channel), so the producer, the scaler and the workers all call
`declare_queues` and never spell the arguments themselves.

Each type has three durable queues:

* `<queue>`: the work. A message RabbitMQ itself dead-letters from it (rejected
  without requeue, or past the quorum delivery limit) goes to the topic exchange
  `DEAD_LETTERS_EXCHANGE` with routing key `<queue>.dead`, which routes it both
  to `<queue>.dead` and to the outcome report queue, where the tracker counts the
  row dead in its upload record (uploads.dead_letters): no row is left pending
  because no worker reported it.
* `<queue>.retry`: rows waiting to be tried again. Each message carries its own
  expiration; when it expires RabbitMQ dead-letters it back to `<queue>`. A
  failing row therefore waits here, not in front of the rows behind it.
* `<queue>.dead`: rows that failed `max_attempts` times, with the reason in
  their headers, for an operator to inspect or replay.

A type's `queue_type` (default: the QUEUE_TYPE setting) makes the three classic
queues or quorum queues (replicated on a cluster; RabbitMQ's choice for rows
that must survive a node). Quorum queues on RabbitMQ 3.10+ keep everything the
classic ones do here (per-message expiration, dead-lettering with the headers)
and add two things: RabbitMQ dead-letters `at-least-once` (a dead-lettered row
is removed from its queue only once the target confirmed it; this needs
`x-overflow: reject-publish`, which without a length limit refuses nothing),
and the work queue's `x-delivery-limit` dead-letters a message delivered more
often than the runtime's own attempt counting would ever let it be.

RabbitMQ never changes an existing queue's type or arguments: a declaration
that differs is refused. `declare_queues` turns that refusal into a message
saying what to do; common.queue_check refuses such a config before it is used.

The three are also bound, each under its own name, to the topic exchange
`ROUTES_EXCHANGE`, and so is the outcome report queue (common.outcomes).
Workers publish their retry, dead-letter, give-back copies and reports there,
never to the default exchange: a worker's broker user may write to that one
exchange only, with topic permissions naming its own type's queues, so it
cannot publish to another type's queue (scaler.broker_users).
"""

from __future__ import annotations

from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from common.config import JobType, QueueType

#: The topic exchange workers publish copies and reports to; routing key = the queue's name.
ROUTES_EXCHANGE = "autoscaler.routes"
#: The topic exchange work queues dead-letter to (routing key `<queue>.dead`); common.outcomes binds the report
#: queue to it with `#`. Only RabbitMQ's own dead-lettering publishes here; workers have no permission on it.
DEAD_LETTERS_EXCHANGE = "autoscaler.dead-letters"


PRECONDITION_FAILED = 406
#: Why a work queue declared before DEAD_LETTERS_EXCHANGE existed differs in x-dead-letter-exchange ('').
OLDER_DEAD_LETTERS = (
    f"x-dead-letter-exchange '' instead of {DEAD_LETTERS_EXCHANGE!r} is a work queue an older version declared, "
    "whose rows RabbitMQ dead-letters the upload record cannot count"
)
#: What a quorum queue that dead-letters adds: no dead-lettered row lost between the two queues.
AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def typed_arguments(queue_type: QueueType, arguments: dict[str, Any]) -> dict[str, Any]:
    """`arguments` of a queue of `queue_type` (a classic queue's stay as they always were, without x-queue-type)."""
    return {**arguments, "x-queue-type": queue_type.value} if queue_type is QueueType.QUORUM else arguments


def _dead_letters_to(exchange: str, queue: str, job_type: JobType) -> dict[str, Any]:
    arguments = {"x-dead-letter-exchange": exchange, "x-dead-letter-routing-key": queue}
    return {**arguments, **AT_LEAST_ONCE} if job_type.queue_type is QueueType.QUORUM else arguments


def queue_arguments(job_type: JobType) -> dict[str, dict[str, Any]]:
    """Queue name -> declaration arguments for every queue of `job_type`."""
    work = _dead_letters_to(DEAD_LETTERS_EXCHANGE, job_type.dead_queue, job_type)
    if job_type.queue_type is QueueType.QUORUM:
        work["x-delivery-limit"] = job_type.effective_delivery_limit
    queues = {job_type.queue: work, job_type.retry_queue: _dead_letters_to("", job_type.queue, job_type)}
    queues[job_type.dead_queue] = {}
    return {name: typed_arguments(job_type.queue_type, arguments) for name, arguments in queues.items()}


def migration_steps(job_type: JobType) -> str:
    """How to move a type's queues to another type or other arguments, which RabbitMQ cannot do in place."""
    return (
        f"to migrate: stop uploads of {job_type.name!r} and let its workers drain {job_type.queue!r} and "
        f"{job_type.retry_queue!r} (the scaler's status shows ready 0 and retrying 0); keep what "
        f"{job_type.dead_queue!r} holds (replay it later, or read it out); delete the three queues (management UI, "
        f"or rabbitmqctl delete_queue <name> -p <vhost>); then save the config file again: the scaler re-reads it "
        "and declares them anew"
    )


def refused_declaration(job_type: JobType, queue: str, error: pika.exceptions.ChannelClosedByBroker) -> str:
    """The broker's refusal to declare `queue` of `job_type`, with what it means and what to do."""
    return (
        f"job type {job_type.name!r}: RabbitMQ refused to declare queue {queue!r} as a {job_type.queue_type.value} "
        f"queue with this config's arguments ({error.reply_text}); it exists with another type or other arguments "
        f"(queue_type, delivery_limit or max_attempts changed? {OLDER_DEAD_LETTERS}): {migration_steps(job_type)}"
    )


def declare_routes_exchange(channel: BlockingChannel) -> None:
    """Declare `ROUTES_EXCHANGE` and `DEAD_LETTERS_EXCHANGE` (a work queue's declaration needs its dead-letter
    exchange, the report queue's its binding to it)."""
    for exchange in (ROUTES_EXCHANGE, DEAD_LETTERS_EXCHANGE):
        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)


def bind_route(channel: BlockingChannel, queue: str) -> None:
    """Route `ROUTES_EXCHANGE` messages with routing key `queue` to that queue (queue names hold no * or #)."""
    channel.queue_bind(queue, ROUTES_EXCHANGE, routing_key=queue)


def declare_queues(channel: BlockingChannel, job_type: JobType) -> None:
    """Declare the work, retry and dead-letter queues of `job_type` and their routes (idempotent)."""
    declare_routes_exchange(channel)
    for name, arguments in queue_arguments(job_type).items():
        try:
            channel.queue_declare(queue=name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code != PRECONDITION_FAILED:
                raise
            raise pika.exceptions.ChannelClosedByBroker(
                error.reply_code, refused_declaration(job_type, name, error)
            ) from error
        bind_route(channel, name)
    channel.queue_bind(job_type.dead_queue, DEAD_LETTERS_EXCHANGE, routing_key=job_type.dead_queue)
