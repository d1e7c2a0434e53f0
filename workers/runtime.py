"""The worker runtime: put a job type's consumer, executor and hooks together and run them.

The consumer owns the connection and every ack (`workers.consumer`), the
executor runs the handler on its own threads (`workers.executor`), and the
hooks between them each do one thing with every row (`workers.hooks`): in
order, skip cancelled uploads, count a redelivery as a spent attempt, decide
and publish retry copies, report outcomes to the upload record, log, and
count for the status heartbeat.
"""

from __future__ import annotations

import logging

from common.config import JobType
from workers.consumer import Consumer
from workers.executor import Executor
from workers.handlers import Handler
from workers.hooks import Hook, Hooks
from workers.hooks.cancel import Cancellations
from workers.hooks.outcomes import OutcomeReports
from workers.hooks.redelivery import Redeliveries
from workers.hooks.retries import Retries
from workers.hooks.rowlog import RowLog
from workers.settings import WorkerSettings
from workers.status import StatusHeartbeats


def build_worker(job_type: JobType, handler: Handler, settings: WorkerSettings, logger: logging.Logger) -> Consumer:
    status = StatusHeartbeats(settings.worker_id, job_type.name, settings.heartbeat_seconds)
    hooks: list[Hook] = [
        Cancellations(settings.cancel_memory_seconds, logger),
        Redeliveries(),
        Retries(job_type, settings.worker_id),
    ]
    if settings.report_outcomes:
        hooks.append(OutcomeReports(settings.worker_id, job_type.name, settings.report_max_bytes))
    hooks += [RowLog(logger, settings.summary_seconds), status]
    chain = Hooks(hooks)
    executor = Executor(job_type, handler, chain, settings.worker_id)
    status.current = executor.current_message
    # Grouping finished rows pays off when each group costs a report; without reports, ack at once.
    settle_delay = settings.settle_delay_seconds if settings.report_outcomes else 0.0
    return Consumer(
        job_type,
        settings.worker_id,
        executor,
        chain,
        status,
        logger,
        settle_delay,
        channel_prefetch(job_type, settings),
    )


#: The largest prefetch count AMQP can carry (a 16-bit field); RabbitMQ closes the channel on more.
MAX_PREFETCH_COUNT = 65_535


def channel_prefetch(job_type: JobType, settings: WorkerSettings) -> int:
    """The type's prefetch, plus room for rows whose outcome report awaits its confirm, so counting never
    starves the handler. A type that reads no rows ahead (prefetch 1: long rows) holds exactly its prefetch,
    as without reports, so no row waits in one worker while another could take it."""
    settling = settings.settle_allowance * job_type.read_ahead if settings.report_outcomes else 0
    return min(job_type.effective_prefetch + settling, MAX_PREFETCH_COUNT)
