"""The `OutcomeReports` hook: tell the upload record what became of each upload's rows.

For every finished row with an `upload_id` header and a `<upload_id>:<row>`
message id, one `RowOutcome` (succeeded, retrying, dead, cancelled; a dead
row's report carries its body and the line its message's LINE_HEADER gives). The
rows finished together go into one `OutcomeReport` (split into several when
its body would pass `max_bytes`, which keeps each one small enough for the
broker's quickest confirm), published persistent to the outcomes queue; those
rows are acked only once the broker has confirmed every report covering
them. A worker killed between the two reports the rows again when they are
redelivered: the record keeps a row's first final outcome, so it counts once.

Rows given back by a stopping worker are not reported: nothing happened to them.
"""

from __future__ import annotations

import pika

from common.outcomes import (
    OUTCOMES_QUEUE,
    REPLAY_HEADER,
    OutcomeReport,
    RowOutcome,
    RowStatus,
    counted,
    line_of,
    split_message_id,
)
from workers.confirmed_publisher import ConfirmedPublisher
from workers.delivery import Outcome, Status
from workers.disposition import Disposition
from workers.hooks import Hook

_PROPERTIES = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json")


class OutcomeReports(Hook):
    def __init__(self, worker_id: str, job_type: str, max_bytes: int) -> None:
        self.worker_id = worker_id
        self.job_type = job_type
        self.max_bytes = max_bytes
        self.rows: list[RowOutcome] = []

    def after_handle(self, outcome: Outcome) -> None:
        row = row_outcome(outcome)
        if row is not None:
            self.rows.append(row)

    def before_ack(self, outcomes: list[Outcome], publisher: ConfirmedPublisher) -> None:
        if not self.rows:
            return
        for body in self._bodies(self.rows):
            publisher.publish(OUTCOMES_QUEUE, body, _PROPERTIES)
        self.rows = []

    def _bodies(self, rows: list[RowOutcome]) -> list[bytes]:
        """One report body for the rows, or halves of them until each body fits in `max_bytes`."""
        body = OutcomeReport(self.worker_id, self.job_type, rows).to_json()
        if len(body) <= self.max_bytes or len(rows) == 1:
            return [body]
        middle = len(rows) // 2
        return self._bodies(rows[:middle]) + self._bodies(rows[middle:])


def row_outcome(outcome: Outcome) -> RowOutcome | None:
    """What to report for one finished row, or None for a row that is not an upload's or not finished."""
    delivery = outcome.delivery
    if outcome.status is Status.RETURNED or not delivery.headers.get("upload_id"):
        return None
    where = split_message_id(delivery.message_id)
    if where is None:
        return None
    upload_id, row = where
    replay = counted(delivery.headers.get(REPLAY_HEADER), 0)
    attempts = delivery.attempt
    if outcome.status is Status.SUCCEEDED:
        return RowOutcome(upload_id, row, RowStatus.SUCCEEDED, attempts, replay)
    if outcome.status is Status.CANCELLED:
        return RowOutcome(upload_id, row, RowStatus.CANCELLED, attempts, replay)
    if outcome.copy is not None and outcome.copy.outcome is Disposition.RETRY:
        return RowOutcome(upload_id, row, RowStatus.RETRYING, attempts, replay, outcome.error)
    body = delivery.body.decode("utf-8", errors="replace")
    return RowOutcome(upload_id, row, RowStatus.DEAD, attempts, replay, outcome.error, body, line_of(delivery.headers))
