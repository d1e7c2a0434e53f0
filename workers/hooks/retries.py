"""The `Retries` hook: a failed row gets a confirmed copy in `<queue>.retry` or `<queue>.dead` before its ack.

The decision (which queue, which headers) is the pure `workers.disposition`; this
hook applies it to each failed row after it finished and publishes the copies
just before the rows are acked. Rows a stopping worker did not start are
republished to the work queue the same way. Copies keep every original
header (the upload id and the replay number included).
"""

from __future__ import annotations

from common.config import JobType
from workers.confirmed_publisher import ConfirmedPublisher
from workers.delivery import Outcome, Status
from workers.disposition import after_failure, give_back, unreadable
from workers.hooks import Hook


class Retries(Hook):
    def __init__(self, job_type: JobType, worker_id: str) -> None:
        self.job_type = job_type
        self.worker_id = worker_id

    def after_handle(self, outcome: Outcome) -> None:
        properties = outcome.delivery.properties
        if outcome.status is Status.FAILED:
            decide = unreadable if outcome.hopeless else after_failure
            outcome.copy = decide(self.job_type, properties, outcome.error or "", self.worker_id)
        elif outcome.status is Status.RETURNED:
            outcome.copy = give_back(self.job_type, properties)

    def before_ack(self, outcomes: list[Outcome], publisher: ConfirmedPublisher) -> None:
        for outcome in outcomes:
            if outcome.copy is not None:
                publisher.publish(outcome.copy.queue, outcome.delivery.body, outcome.copy.properties)
