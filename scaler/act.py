"""Carry out the tick's decisions: start and stop workers through the backend, announce changes.

Only the leader acts (a standby decides and shows, but starts and stops
nothing). A stop is a request over the broker, so a worker finishes the row in
hand; a worker still starting holds no message and may not listen yet, so it
is terminated through the backend; a worker that ignores its request past the
type's `stop_grace_seconds` is terminated too. A failed start is reported and
left to the policy, which sees the missing worker next tick. The actor keeps
the stop requests (the observer counts those workers as stopping) and each
type's last announced state, so a state change is one event and a failing
type's probes are not events of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from common.config import DEFAULT_STOP_GRACE_SECONDS, JobType
from scaler import metrics
from scaler.backends.base import Backend, WorkerInfo, WorkerState
from scaler.budget import Allocation, Claim
from scaler.policy import Decision, State
from scaler.policy_inputs import TypeFacts
from scaler.status import StatusBoard
from scaler.worker_channel import WorkerChannel

log = logging.getLogger("scaler")
#: States worth an event of their own when a type enters them.
NOTABLE_STATES = frozenset({State.FAILING, State.PAUSED, State.WAITING_FOR_BUDGET, State.UNSCHEDULABLE})


class Actor:
    """Counts, announces and carries out decisions; owns the stop requests."""

    def __init__(
        self, backend: Backend, channel: WorkerChannel, board: StatusBoard, clock: Callable[[], float]
    ) -> None:
        self.backend = backend
        self.channel = channel
        self.board = board
        self.clock = clock
        #: Worker id -> when it was asked to stop (wall clock).
        self.stop_requested: dict[str, float] = {}
        #: Each type's state as last announced.
        self.states: dict[str, State] = {}

    def act(
        self,
        facts: Mapping[str, TypeFacts],
        claims: list[Claim],
        allocation: Allocation,
        workers: dict[str, WorkerInfo] | None,
    ) -> None:
        """Every type's share of the tick; `workers` is given only to the leader, who alone starts and stops."""
        self.states = {name: state for name, state in self.states.items() if name in facts}  # forgotten types go
        for claim in claims:
            self._act(facts[claim.name], allocation.decisions[claim.name], claim, workers)

    def _act(self, fact: TypeFacts, decision: Decision, claim: Claim, workers: dict[str, WorkerInfo] | None) -> None:
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

    def escalate_stops(self, infos: list[WorkerInfo], now: float, known: Mapping[str, JobType]) -> None:
        """Workers that ignored their stop request past the type's grace period are terminated."""
        alive = {info.worker_id: info for info in infos if not info.state.finished}
        listed = {info.worker_id for info in infos}
        for worker_id, asked_at in list(self.stop_requested.items()):
            info = alive.get(worker_id)
            if info is None:
                if worker_id not in listed:  # kept while it is listed: its exit is no failed start
                    del self.stop_requested[worker_id]
                continue
            job_type = known.get(info.job_type)
            grace = job_type.stop_grace_seconds if job_type else DEFAULT_STOP_GRACE_SECONDS
            if now - asked_at >= grace:
                self.backend.terminate(info, job_type)
