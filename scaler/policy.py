"""The scaling policy: a pure function from what is observed to what to do, for one job type.

No I/O and no clock of its own: `decide(job_type, stats, workers, memory, now)`
gets everything it needs and returns a `Decision` with the type's new memory,
so it is tested exhaustively without a broker and can be replayed in a
simulator. The rules (DESIGN.md, "Scaling rules"):

* Scale up when the backlog (ready + rows waiting to be retried) is above
  `threshold` and fewer than `max_workers` are alive: one worker, or up to
  `burst_size` at once when the backlog is above the burst threshold. Workers
  still starting count as capacity and hold further scale-ups until they run,
  so a slow start never triggers a second burst for the same backlog. A type
  whose workers cannot be scheduled is not scaled further.
* A backlog with no live worker at all gets one even below the threshold (a
  crashed last worker is replaced; a few rows are never stranded).
* `min_workers` are kept warm.
* Scale down only after ready = 0, unacked = 0 and nothing waiting for retry
  held continuously for `idle_seconds`; any message resets the clock. Only
  workers not reported busy are stopped, newest first, down to `min_workers`.
* No data (broker unreachable): no decision at all, and the idle clock stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from jobtypes.config import JobType
from scaler.backends.base import WorkerState


@dataclass(frozen=True)
class QueueStats:
    ready: int
    unacked: int
    retrying: int = 0
    dead: int = 0

    @property
    def backlog(self) -> int:
        """Rows waiting to be worked on: ready now, or back from the retry queue soon."""
        return self.ready + self.retrying

    @property
    def idle(self) -> bool:
        return self.ready == 0 and self.unacked == 0 and self.retrying == 0


@dataclass(frozen=True)
class WorkerView:
    """What the policy needs to know of one live worker."""

    worker_id: str
    state: WorkerState
    started_at: float
    busy: bool = False
    unschedulable_reason: str | None = None


@dataclass(frozen=True)
class TypeMemory:
    """What the policy remembers of a type between ticks."""

    idle_since: float | None = None


@dataclass(frozen=True)
class Decision:
    start: int = 0
    stop: tuple[str, ...] = ()
    #: idle, busy, scaling-up, burst, scaling-down, draining, unschedulable, broker-unreachable
    state: str = "idle"
    reason: str = ""
    memory: TypeMemory = field(default_factory=TypeMemory)

    @property
    def direction(self) -> str | None:
        if self.start:
            return "up"
        if self.stop:
            return "down"
        return None


def decide(
    job_type: JobType,
    stats: QueueStats | None,
    workers: list[WorkerView],
    memory: TypeMemory,
    now: float,
    removed: bool = False,
) -> Decision:
    """One type's decision for this tick. `workers` are the type's live workers, stopping ones excluded.

    `removed` is true for a type no longer in the config: it gets no new worker
    and its workers are stopped once it is idle, without waiting.
    """
    if stats is None:
        return Decision(state="broker-unreachable", reason="broker unreachable: no scaling decision", memory=memory)

    idle_since = (memory.idle_since if memory.idle_since is not None else now) if stats.idle else None
    memory = replace(memory, idle_since=idle_since)
    capacity = len(workers)
    starting = sum(1 for worker in workers if worker.state is WorkerState.STARTING)
    stuck = [worker for worker in workers if worker.unschedulable_reason]
    maximum = 0 if removed else job_type.max_workers
    minimum = 0 if removed else job_type.min_workers
    summary = f"ready {stats.ready}, unacked {stats.unacked}, {capacity} worker{'s' if capacity != 1 else ''}"

    if idle_since is not None:
        return _when_idle(job_type, workers, memory, now - idle_since, minimum, removed)

    if removed:
        return Decision(state="draining", reason=f"removed from the config, draining: {summary}", memory=memory)
    if stuck:
        return Decision(state="unschedulable", reason=f"unschedulable: {stuck[0].unschedulable_reason}", memory=memory)
    if capacity < minimum:
        add = minimum - capacity
        return Decision(start=add, state="scaling-up", reason=f"warm pool +{add}: min_workers {minimum}", memory=memory)

    backlog = stats.backlog
    room = maximum - capacity
    if starting and backlog > 0:
        return Decision(
            state="scaling-up", reason=f"waiting for {starting} starting worker(s): {summary}", memory=memory
        )
    if backlog > job_type.threshold and room > 0:
        burst_threshold = job_type.effective_burst_threshold
        if backlog > burst_threshold and job_type.burst_size > 1:
            add = min(job_type.burst_size, room)
            return Decision(
                start=add, state="burst", reason=f"burst +{add}: ready {backlog} > {burst_threshold}", memory=memory
            )
        return Decision(
            start=1, state="scaling-up", reason=f"scale up +1: ready {backlog} > {job_type.threshold}", memory=memory
        )
    if backlog > 0 and capacity == 0 and room > 0:
        return Decision(
            start=1, state="scaling-up", reason=f"scale up +1: ready {backlog} and no worker", memory=memory
        )
    return Decision(state="busy", reason=summary + (f" (max_workers {maximum})" if room <= 0 else ""), memory=memory)


def _when_idle(
    job_type: JobType, workers: list[WorkerView], memory: TypeMemory, idle_for: float, minimum: int, removed: bool
) -> Decision:
    surplus = len(workers) - minimum
    if surplus <= 0:
        if len(workers) < minimum:
            add = minimum - len(workers)
            return Decision(
                start=add, state="scaling-up", reason=f"warm pool +{add}: min_workers {minimum}", memory=memory
            )
        return Decision(state="idle", reason="idle", memory=memory)
    wait = 0.0 if removed else job_type.idle_seconds
    if idle_for < wait:
        return Decision(state="idle", reason=f"idle {idle_for:.0f}/{wait:.0f} s", memory=memory)
    candidates = sorted((w for w in workers if not w.busy), key=lambda w: w.started_at, reverse=True)[:surplus]
    if not candidates:
        return Decision(state="idle", reason="idle, waiting for busy workers to report idle", memory=memory)
    why = "removed from the config" if removed else f"idle for {idle_for:.0f} s"
    return Decision(
        stop=tuple(w.worker_id for w in candidates),
        state="scaling-down",
        reason=f"scale down -{len(candidates)}: {why}",
        memory=memory,
    )
