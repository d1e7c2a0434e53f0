"""The `Redeliveries` hook: a row that comes back `redelivered` has cost an attempt.

RabbitMQ redelivers a row when the worker holding it died (killed, out of
memory, a crash in native code) or lost its connection. Without counting
those, a row that kills every worker that touches it would be redelivered
forever. So a redelivered row is not handled: it fails with a reason saying
so, and `Retries` republishes it with its attempt count raised (to the retry
queue, or to `.dead` once `max_attempts` is spent).

The price: a row that was merely prefetched by a worker that lost its
connection also spends an attempt. Graceful stops republish the unstarted
rows they hold instead of requeueing them, so those cost nothing; only a row
in flight at the very moment a consumer is cancelled comes back flagged. (A quorum queue's
`x-delivery-limit` would count deliveries in the broker, but changes every
deployment's queue declarations and cannot carry the reason into `.dead`.)
"""

from __future__ import annotations

from workers.delivery import Delivery, Outcome, Status
from workers.hooks import Hook

REDELIVERED_ERROR = "the worker handling it died or lost its connection (redelivered by RabbitMQ)"


class Redeliveries(Hook):
    def before_handle(self, delivery: Delivery) -> Outcome | None:
        if delivery.redelivered:
            return Outcome(delivery, Status.FAILED, REDELIVERED_ERROR)
        return None
