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
"""

from __future__ import annotations

from typing import Any

from pika.adapters.blocking_connection import BlockingChannel

from jobtypes.config import JobType


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


def declare_queues(channel: BlockingChannel, job_type: JobType) -> None:
    """Declare the work, retry and dead-letter queues of `job_type` (idempotent)."""
    for name, arguments in queue_arguments(job_type).items():
        channel.queue_declare(queue=name, durable=True, arguments=arguments)
