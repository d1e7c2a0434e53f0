"""The control loop: observe everything once, decide per job type, share the budget, act, publish.

One tick makes one management API call (all queues), one backend call (all
workers) and reads the heartbeats already received; then the pure policy
decides what every type wants (`scaler.policy.decide`), the pure budget step
shares the budget across types (`scaler.budget.allocate`), and the loop
carries the result out. Any failure inside a tick is logged and the next tick
runs as usual: the loop never dies, and without queue data it makes no
decision at all. A change of a type's state is one event; a failing type's
probes are not events of their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobtypes.config import DEFAULT_STOP_GRACE_SECONDS, JobType
from jobtypes.config_watch import ConfigWatcher
from jobtypes.control import Heartbeat
from scaler import metrics
from scaler.backends.base import Backend, WorkerInfo, WorkerState
from scaler.budget import Allocation, Claim, allocate, worker_requests
from scaler.control_state import Controls
from scaler.history import Sample
from scaler.policy import Control, Decision, State, TypeMemory, WorkerView, decide
from scaler.queue_stats import QueueStatsSource, RawCounts, stats_for
from scaler.settings import ScalerSettings
from scaler.status import StatusBoard
from scaler.status_document import (
    RUNNING_HEARTBEATS,
    TypeFacts,
    budget_document,
    busy,
    effective_state,
    tick_document,
    type_document,
    worker_document,
)
from scaler.worker_channel import WorkerChannel

log = logging.getLogger("scaler")
#: States worth an event of their own when a type enters them.
NOTABLE_STATES = frozenset({State.FAILING, State.PAUSED, State.WAITING_FOR_BUDGET, State.UNSCHEDULABLE})
#: Shortest pause between two ticks, so a storm of wake-ups cannot keep the loop ticking back to back.
WAKE_MIN_GAP_SECONDS = 0.02
#: A tick meant for the end of an idle period runs this much after it, so the period has surely passed.
IDLE_DEADLINE_MARGIN_SECONDS = 0.01
#: While a type's last rows are in hand, tick this often (for at most TAIL_WATCH_SECONDS), to see the last ack soon.
TAIL_TICK_SECONDS = 0.2
TAIL_WATCH_SECONDS = 10.0


@dataclass
class Observation:
    """Everything one tick saw, taken once at its start."""

    queues: dict[str, RawCounts] | None
    infos: list[WorkerInfo]
    heartbeats: dict[str, Heartbeat]
    leader: bool
    now: float
    controls: dict[str, Control]


class Scaler:
    def __init__(
        self,
        watcher: ConfigWatcher,
        backend: Backend,
        stats: QueueStatsSource,
        channel: WorkerChannel,
        tick_seconds: float | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
        settings: ScalerSettings | None = None,
        controls: Controls | None = None,
    ) -> None:
        self.settings = settings or ScalerSettings()
        self.watcher = watcher
        self.backend = backend
        self.stats = stats
        self.channel = channel
        self.tick_seconds = tick_seconds if tick_seconds is not None else self.settings.tick_seconds
        self.is_leader = is_leader
        self.clock = clock
        self.controls = controls or Controls()
        self.board = StatusBoard(self.settings.history)
        self.memory: dict[str, TypeMemory] = {}
        self.known: dict[str, JobType] = {}
        self.states: dict[str, State] = {}
        self.stop_requested: dict[str, float] = {}
        #: Workers seen consuming (an idle or busy heartbeat) at least once: their exit is no failed start.
        self.consumed: set[str] = set()
        self._was_leader = False
        self._stopping = threading.Event()
        self._woken = threading.Event()
        self.last_duration = 0.0
        self.last_at = 0.0
        self.durations: deque[float] = deque(maxlen=600)

    # running ---------------------------------------------------------------------
    def run(self) -> None:
        """Tick every `tick_seconds`, and sooner when there is a reason, until `stop()`.

        Sooner: at once on a wake-up (several during a tick make one tick after it); when a type's
        `idle_seconds` run out; and every `TAIL_TICK_SECONDS` for up to `TAIL_WATCH_SECONDS` while a
        type's last rows are in hand (nothing ready, some unacked), so the idle clock starts within
        a fraction of a tick of the last ack. A failing tick is logged, never fatal.
        """
        log.info("control loop running every %.2f s with the %s backend", self.tick_seconds, self.backend.name)
        next_tick = time.monotonic()
        tail_since: float | None = None
        while not self._stopping.is_set():
            self._woken.clear()
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive anything one tick meets
                log.exception("tick failed; carrying on")
            ended = time.monotonic()
            if next_tick <= ended:
                next_tick = max(next_tick + self.tick_seconds, ended)
            tail_since = (tail_since or ended) if self._in_tail() else None
            wake_at = min(next_tick, self._idle_deadline())
            if tail_since is not None and ended - tail_since < TAIL_WATCH_SECONDS:
                wake_at = min(wake_at, ended + TAIL_TICK_SECONDS)
            self._woken.wait(max(wake_at - ended, 0))
            self._stopping.wait(max(ended + WAKE_MIN_GAP_SECONDS - time.monotonic(), 0))

    def wake(self, job_type: str = "") -> None:
        """Tick as soon as possible: work arrived for `job_type`. Safe from any thread."""
        log.debug("woken up by new work for %s", job_type or "a job type")
        self._woken.set()

    def _in_tail(self) -> bool:
        """Whether some type has its last rows in hand: none ready, some unacknowledged."""
        types = self.board.document()["job_types"].values()
        return any(t.get("ready") == 0 and (t.get("unacked") or 0) > 0 for t in types)

    def _idle_deadline(self) -> float:
        """The monotonic time at which the next type's `idle_seconds` run out, so scale-down is not late by a tick."""
        wall, mono = self.clock(), time.monotonic()
        deadlines = [
            memory.idle_since + self.known[name].idle_seconds - wall + mono + IDLE_DEADLINE_MARGIN_SECONDS
            for name, memory in self.memory.items()
            if memory.idle_since is not None and name in self.known
        ]
        return min((d for d in deadlines if d > mono), default=float("inf"))

    def stop(self) -> None:
        self._stopping.set()
        self._woken.set()

    # one tick -----------------------------------------------------------------------
    def tick(self) -> None:
        started = time.perf_counter()
        seen = self._observe()
        facts, claims = self._decide(seen)
        allocation = allocate(claims, self.settings.budget)
        workers = {info.worker_id: info for info in seen.infos}
        for claim in claims:
            self._act(facts[claim.name], allocation.decisions[claim.name], claim, workers if seen.leader else None)
        self.last_duration = time.perf_counter() - started
        self.durations.append(self.last_duration)
        self.last_at = time.time()
        metrics.TICK_SECONDS.observe(self.last_duration)
        self._export_budget(allocation)
        self._publish(seen, facts, allocation)

    def _observe(self) -> Observation:
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
        now = self.clock()
        self._escalate_stops(infos, now)
        return Observation(queues, infos, heartbeats, leader, now, self.controls.snapshot())

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

    def _decide(self, seen: Observation) -> tuple[dict[str, TypeFacts], list[Claim]]:
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
        self.states.pop(name, None)
        metrics.forget_type(name)

    # acting ---------------------------------------------------------------------------
    def _act(self, fact: TypeFacts, decision: Decision, claim: Claim, workers: dict[str, WorkerInfo] | None) -> None:
        """Count, announce and (when `workers` is given: only the leader acts) carry out one type's decision."""
        name = fact.job_type.name
        if decision.new_failures:
            metrics.FAILED_STARTS.labels(name).inc(decision.new_failures)
        previous = self.states.get(name)
        self.states[name] = decision.state
        changed = decision.state is not previous and (decision.state in NOTABLE_STATES or previous in NOTABLE_STATES)
        if changed:
            failing = decision.state is State.FAILING
            log.log(logging.WARNING if failing else logging.INFO, "%s: %s", name, decision.reason)
            self.board.event(name, "error" if failing else "state", decision.reason)
        if workers is not None and decision.direction:
            if not changed and decision.state is not State.FAILING:  # a probe is no news: its state change was
                log.info("%s: %s", name, decision.reason)
                self.board.event(name, decision.direction, decision.reason)
            self._carry_out(fact.job_type, decision, claim, workers)
        self._export_type(fact, decision)

    def _carry_out(self, job_type: JobType, decision: Decision, claim: Claim, workers: dict[str, WorkerInfo]) -> None:
        metrics.SCALE_EVENTS.labels(job_type.name, decision.direction or "").inc()
        for _ in range(decision.start):
            try:
                self.backend.start_worker(job_type)
            except Exception as error:  # noqa: BLE001 - reported, retried by the policy next tick
                log.error("%s: could not start a worker: %s", job_type.name, error)
                self.board.event(job_type.name, "error", f"could not start a worker: {error}")
                break
        starting = {view.worker_id for view in claim.active if view.state is WorkerState.STARTING}
        for worker_id in decision.stop:
            self.stop_requested[worker_id] = self.clock()
            if worker_id in starting:
                self.backend.terminate(workers[worker_id], job_type)  # it holds no message yet and may not listen yet
            else:
                self.channel.request_stop(worker_id)

    def _escalate_stops(self, infos: list[WorkerInfo], now: float) -> None:
        """Workers that ignored their stop request past the type's grace period are terminated."""
        alive = {info.worker_id: info for info in infos if not info.state.finished}
        listed = {info.worker_id for info in infos}
        for worker_id, asked_at in list(self.stop_requested.items()):
            info = alive.get(worker_id)
            if info is None:
                if worker_id not in listed:  # kept while it is listed: its exit is no failed start
                    del self.stop_requested[worker_id]
                continue
            job_type = self.known.get(info.job_type)
            grace = job_type.stop_grace_seconds if job_type else DEFAULT_STOP_GRACE_SECONDS
            if now - asked_at >= grace:
                self.backend.terminate(info, job_type)

    # publishing -----------------------------------------------------------------------
    def _export_type(self, fact: TypeFacts, decision: Decision) -> None:
        name = fact.job_type.name
        if fact.stats is not None:
            metrics.QUEUE_READY.labels(name).set(fact.stats.ready)
            metrics.QUEUE_UNACKED.labels(name).set(fact.stats.unacked)
            metrics.QUEUE_DEAD.labels(name).set(fact.stats.dead)
        for state in (WorkerState.STARTING, WorkerState.RUNNING, WorkerState.STOPPING):
            metrics.WORKERS.labels(name, state.value).set(sum(1 for _, s in fact.live if s is state))
        metrics.DESIRED.labels(name).set(decision.desired)

    def _export_budget(self, allocation: Allocation) -> None:
        budget = self.settings.budget
        metrics.BUDGET_USED.labels("workers").set(allocation.used)
        if budget.max_workers is not None:
            metrics.BUDGET_TOTAL.labels("workers").set(budget.max_workers)
        for resource, total in budget.resources.items():
            metrics.BUDGET_USED.labels(resource).set(allocation.resources_used.get(resource, 0.0))
            metrics.BUDGET_TOTAL.labels(resource).set(total)
        for name, share in allocation.shares.items():
            metrics.SHARE.labels(name).set(share)

    def _publish(self, seen: Observation, facts: dict[str, TypeFacts], allocation: Allocation) -> None:
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
                worker_document(info, seen.heartbeats.get(info.worker_id), info.worker_id in self.stop_requested)
                for info in sorted(seen.infos, key=lambda i: i.started_at, reverse=True)
            ],
            "budget": budget_document(self.settings.budget, allocation),
            "broker": {
                "reachable": seen.queues is not None,
                "error": self.stats.error,
                "api_node": self.stats.node,
                "api_failed": self.stats.failed,
            },
            "config": {
                "path": str(self.watcher.path),
                "error": self.watcher.error,
                "loaded_at": self.watcher.loaded_at,
            },
            "controls": {"error": self.controls.error},
            "leader": seen.leader,
            "backend": self.backend.name,
            "tick": tick_document(self.tick_seconds, self.last_duration, self.durations, self.last_at),
        }
        self.board.publish(document, samples, seen.heartbeats, seen.now)
