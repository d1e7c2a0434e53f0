"""Publish what a tick saw and decided: the `/api/status` document, the charts' samples and the metrics.

The last step of a tick, and the only one the dashboard, `./manage.sh status`
and Prometheus see. It reads the tick's observation, facts and allocation and
writes nothing back into the decision: nothing in the loop reads the published
document to decide (the schedule included), so what is shown can change shape
without changing what the scaler does. The building of the document itself is
pure (`scaler.status_document`); this module adds the tick timings and hands
the result to the `StatusBoard`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from scaler import metrics
from scaler.backends.base import LIVE_STATES
from scaler.budget import Allocation
from scaler.history import Sample
from scaler.observe import Observation, Observer
from scaler.policy import Decision
from scaler.policy_inputs import TypeFacts
from scaler.settings import ScalerSettings
from scaler.status import StatusBoard
from scaler.status_document import budget_document, tick_document, type_document, worker_document

#: How many recent tick durations the status document's p50/p99 are taken over.
TICK_DURATIONS_KEPT = 600


class StatusPublisher:
    """Times the ticks, exports the metrics and publishes the status document to the board."""

    def __init__(self, settings: ScalerSettings, board: StatusBoard, tick_seconds: float) -> None:
        self.settings = settings
        self.board = board
        self.tick_seconds = tick_seconds
        self.last_duration = 0.0
        self.last_at = 0.0
        self.durations: deque[float] = deque(maxlen=TICK_DURATIONS_KEPT)

    def tick_done(self, duration: float) -> None:
        """Record one tick's duration (for the document, the metrics and the health check's staleness)."""
        self.last_duration = duration
        self.durations.append(duration)
        self.last_at = time.time()
        metrics.TICK_SECONDS.observe(duration)

    def export_types(self, facts: Mapping[str, TypeFacts], allocation: Allocation) -> None:
        for name, fact in facts.items():
            self._export_type(fact, allocation.decisions[name])

    def _export_type(self, fact: TypeFacts, decision: Decision) -> None:
        name = fact.job_type.name
        if fact.stats is not None:
            metrics.QUEUE_READY.labels(name).set(fact.stats.ready)
            metrics.QUEUE_UNACKED.labels(name).set(fact.stats.unacked)
            metrics.QUEUE_DEAD.labels(name).set(fact.stats.dead)
        for state in LIVE_STATES:
            metrics.WORKERS.labels(name, state.value).set(sum(1 for _, s in fact.live if s is state))
        metrics.DESIRED.labels(name).set(decision.desired)

    def export_budget(self, allocation: Allocation) -> None:
        budget = self.settings.budget
        metrics.BUDGET_USED.labels("workers").set(allocation.used)
        if budget.max_workers is not None:
            metrics.BUDGET_TOTAL.labels("workers").set(budget.max_workers)
        for resource, total in budget.resources.items():
            metrics.BUDGET_USED.labels(resource).set(allocation.resources_used.get(resource, 0.0))
            metrics.BUDGET_TOTAL.labels(resource).set(total)
        for name, share in allocation.shares.items():
            metrics.SHARE.labels(name).set(share)

    def publish(
        self,
        seen: Observation,
        facts: Mapping[str, TypeFacts],
        allocation: Allocation,
        observer: Observer,
        stop_requested: Mapping[str, float],
    ) -> None:
        """The status document of this tick, built from what `observer` saw and the workers asked to stop."""
        types = {
            name: type_document(fact, allocation.decisions[name], allocation.shares.get(name), seen.now, seen.leader)
            for name, fact in facts.items()
        }
        samples = {
            name: Sample(
                fact.stats.ready if fact.stats else None,
                fact.stats.unacked if fact.stats else None,
                len(fact.live),
                allocation.decisions[name].desired,
            )
            for name, fact in facts.items()
        }
        document: dict[str, Any] = {
            "job_types": types,
            "workers": [
                worker_document(info, seen.heartbeats.get(info.worker_id), info.worker_id in stop_requested)
                for info in sorted(seen.infos, key=lambda i: i.started_at, reverse=True)
            ],
            "budget": budget_document(self.settings.budget, allocation),
            "broker": {
                "reachable": seen.queues is not None,
                "error": observer.stats.error,
                "api_node": observer.stats.node,
                "api_failed": observer.stats.failed,
            },
            "config": {
                "path": str(observer.watcher.path),
                "error": observer.watcher.error,
                "loaded_at": observer.watcher.loaded_at,
            },
            "controls": {"error": observer.controls.error},
            "leader": seen.leader,
            "backend": observer.backend.name,
            "tick": tick_document(self.tick_seconds, self.last_duration, self.durations, self.last_at),
        }
        self.board.publish(document, samples, seen.heartbeats, seen.now)
