"""Observe everything once, then decide per job type: the first half of a tick.

One observation is one management API call (all queues), one backend call
(all workers), the heartbeats already received and the pause/drain controls;
the pure policy (`scaler.policy.decide`) then says what every type wants, as a
`Claim` for the budget step. The observer keeps each type's memory between
ticks (failures, idle clock) and the last config it saw of every type, so a
type removed from the config is still decided for (its workers stopped) until
none is left, and a type whose settings changed is retried at once. It never
starts or stops anything: that is `scaler.act`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from common.config import JobType
from common.config_watch import ConfigWatcher
from common.control_messages import Heartbeat
from scaler import metrics
from scaler.backends.base import Backend, WorkerInfo, WorkerState
from scaler.budget import Claim, worker_requests
from scaler.operator_controls import Controls
from scaler.policy import Control, TypeMemory, WorkerView, decide
from scaler.policy_inputs import RUNNING_HEARTBEATS, TypeFacts, busy, effective_state
from scaler.queue_stats import QueueStatsSource, RawCounts, stats_for
from scaler.settings import ScalerSettings
from scaler.worker_channel import WorkerChannel

log = logging.getLogger("scaler")


@dataclass
class Observation:
    """Everything one tick saw, taken once at its start."""

    queues: dict[str, RawCounts] | None
    infos: list[WorkerInfo]
    heartbeats: dict[str, Heartbeat]
    leader: bool
    now: float
    controls: dict[str, Control]


@dataclass
class Observer:
    """Takes the tick's observation and turns it into one claim per type; keeps the policy's memory."""

    watcher: ConfigWatcher
    backend: Backend
    stats: QueueStatsSource
    channel: WorkerChannel
    is_leader: Callable[[], bool]
    clock: Callable[[], float]
    settings: ScalerSettings
    controls: Controls
    #: Workers asked to stop (kept by `scaler.act`): they count as stopping whatever they say.
    stop_requested: Mapping[str, float]
    memory: dict[str, TypeMemory] = field(default_factory=dict)
    #: Every type still decided for: those in the config, and removed ones while they have live workers.
    known: dict[str, JobType] = field(default_factory=dict)
    #: Workers seen consuming (an idle or busy heartbeat) at least once: their exit is no failed start.
    consumed: set[str] = field(default_factory=set)
    _was_leader: bool = False

    def observe(self) -> Observation:
        self._refresh_config()
        queues = self.stats.fetch()
        infos = self.backend.list_workers()
        heartbeats = self.channel.snapshot()
        leader = self.is_leader()
        self.controls.refresh(force=leader and not self._was_leader)
        self._was_leader = leader
        for name in self.controls.take_retries():
            self._retry(name, "retry requested")
        self.consumed = {info.worker_id for info in infos if info.worker_id in self.consumed} | {
            worker_id for worker_id, beat in heartbeats.items() if beat.state in RUNNING_HEARTBEATS
        }
        metrics.BROKER_UP.set(queues is not None)
        return Observation(queues, infos, heartbeats, leader, self.clock(), self.controls.snapshot())

    def _refresh_config(self) -> None:
        """Pick up config edits; a type whose settings changed gets its failure memory reset (retried at once)."""
        self.watcher.refresh()
        self.channel.declare(list(self.watcher.config.job_types.values()))
        for name, job_type in self.watcher.config.job_types.items():
            if name in self.known and self.known[name] != job_type:
                self._retry(name, "its config changed")
            self.known[name] = job_type

    def _retry(self, name: str, why: str) -> None:
        memory = self.memory.get(name)
        if memory is not None and memory.failures:
            log.info("%s: retrying at once: %s", name, why)
            self.memory[name] = memory.retried()

    def decide(self, seen: Observation) -> tuple[dict[str, TypeFacts], list[Claim]]:
        """Each known type's facts and claim; a removed type with no live worker left is forgotten."""
        by_type: dict[str, list[tuple[WorkerInfo, WorkerState]]] = {}
        for info in seen.infos:
            stop_requested = info.worker_id in self.stop_requested
            state = effective_state(info, seen.heartbeats.get(info.worker_id), stop_requested)
            by_type.setdefault(info.job_type, []).append((info, state))
        facts: dict[str, TypeFacts] = {}
        claims: list[Claim] = []
        for name in list(self.known):
            workers = by_type.get(name, [])
            removed = name not in self.watcher.config.job_types
            live = [(info, state) for info, state in workers if not state.finished]
            if removed and not live:
                self._forget(name)
                continue
            job_type = self.known[name]
            fact = TypeFacts(
                job_type, stats_for(job_type, seen.queues), live, removed, seen.controls.get(name, Control.RUN)
            )
            facts[name] = fact
            claims.append(self._claim(fact, workers, seen))
        return facts, claims

    def _claim(self, fact: TypeFacts, workers: list[tuple[WorkerInfo, WorkerState]], seen: Observation) -> Claim:
        job_type = fact.job_type
        views = [self._view(info, state, seen.heartbeats.get(info.worker_id)) for info, state in workers]
        active = [view for view in views if not view.state.finished and view.state is not WorkerState.STOPPING]
        decision = decide(
            job_type,
            fact.stats,
            active,
            self.memory.get(job_type.name, TypeMemory()),
            seen.now,
            removed=fact.removed,
            finished=[view for view in views if view.state.finished],
            check=None if fact.removed else self.backend.check(job_type),
            control=fact.control,
            backoff=self.settings.backoff,
        )
        self.memory[job_type.name] = decision.memory
        return Claim(
            job_type.name,
            decision,
            active=active,
            stopping=sum(1 for _, state in fact.live if state is WorkerState.STOPPING),
            priority=job_type.priority,
            weight=job_type.weight,
            min_workers=0 if fact.removed else job_type.min_workers,
            requests=worker_requests(job_type.resources),
        )

    def _view(self, info: WorkerInfo, state: WorkerState, heartbeat: Heartbeat | None) -> WorkerView:
        return WorkerView(
            info.worker_id,
            state,
            info.started_at,
            busy=busy(heartbeat),
            unschedulable_reason=info.unschedulable_reason,
            consumed=info.worker_id in self.consumed,
            stop_requested=info.worker_id in self.stop_requested,
            exit_code=info.exit_code,
            failure_reason=info.failure_reason,
        )

    def _forget(self, name: str) -> None:
        del self.known[name]
        self.memory.pop(name, None)
        metrics.forget_type(name)
