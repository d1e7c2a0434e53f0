"""The `RowLog` hook: what an operator reads in a worker's log.

Per-row lines ("processed", with message id, attempt and duration) are DEBUG,
so a fast type does not write a line per row (set WORKER_LOG_LEVEL=debug to
see them); failures are WARNING lines with the error and where the row went;
every `summary_seconds` with activity, one INFO "progress" line counts what
happened since the last one. Lines are written before the rows are acked: a
worker killed in between shows the row twice, never an acked row unlogged.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from workers.delivery import Outcome, Status
from workers.hooks import Hook


class RowLog(Hook):
    def __init__(self, logger: logging.Logger, summary_seconds: float) -> None:
        self.log = logger
        self.summary_seconds = summary_seconds
        self.counts: Counter[str] = Counter()
        self.since = time.monotonic()

    def after_handle(self, outcome: Outcome) -> None:
        self.counts[outcome.status.value] += 1
        if outcome.status is Status.FAILED:
            self._failed(outcome)
        elif self.log.isEnabledFor(logging.DEBUG):
            self._row(outcome)

    def _row(self, outcome: Outcome) -> None:
        event = "processed" if outcome.status is Status.SUCCEEDED else outcome.status.value
        self.log.debug(event, extra=self._fields(outcome))

    def _failed(self, outcome: Outcome) -> None:
        where = outcome.copy.outcome if outcome.copy is not None else "dropped"
        to = outcome.copy.queue if outcome.copy is not None else None
        self.log.warning(f"failed, {where}", extra={**self._fields(outcome), "error": outcome.error, "to": to})

    def _fields(self, outcome: Outcome) -> dict[str, object]:
        delivery = outcome.delivery
        return {
            "message_id": delivery.message_id,
            "attempt": delivery.attempt,
            "duration_ms": round(outcome.seconds * 1000, 1),
        }

    def tick(self, now: float) -> None:
        if now - self.since < self.summary_seconds:
            return
        if self.counts:
            rows = sum(self.counts.values())
            self.log.info(
                "progress",
                extra={
                    **self.counts,
                    "rows": rows,
                    "seconds": round(now - self.since, 1),
                    "rows_per_second": round(rows / (now - self.since), 1),
                },
            )
        self.counts = Counter()
        self.since = now
