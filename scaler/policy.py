"""The scaling policy: a pure function from what is observed to what one job type wants.

No I/O and no clock of its own: `decide(job_type, stats, workers, memory, now)`
gets everything it needs and returns a `Decision` with the type's new memory,
so it is tested exhaustively without a broker and can be replayed in a
simulator. Every decision names its `state` (what the status API shows) and a
short machine `code` (which rule fired) beside the human `reason`. Sharing a
budget across types is a second pure step (`scaler.budget.allocate`). The rules
(the design document's "Scaling rules"):

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
* A worker that ends with an error before it ever consumed (and was not killed
  from outside) is a failed start:
  the type turns `failing`, and starts one probe at a time after an
  exponential backoff, until a worker started after the failure consumes. A
  type the backend finds unusable without starting anything (`check`) is
  `failing` and starts nothing.
* Paused: no new worker, every worker is asked to stop (it finishes its row).
  Draining: the backlog is worked off, then the type holds at zero.
* No data (broker unreachable): no decision at all, and the idle clock stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from common.config import JobType
from scaler.backends.base import WorkerState


class State(str, Enum):
    """A type's state as the status API shows it."""

    IDLE = "idle"
    BUSY = "busy"
    SCALING_UP = "scaling-up"
    BURST = "burst"
    SCALING_DOWN = "scaling-down"
    FAILING = "failing"
    PAUSED = "paused"
    DRAINING = "draining"
    UNSCHEDULABLE = "unschedulable"
    WAITING_FOR_BUDGET = "waiting-for-budget"
    BROKER_UNREACHABLE = "broker-unreachable"


class Code(str, Enum):
    """Which rule made the decision: what tests and alerts match on, never the prose."""

    NO_DATA = "no-data"
    IDLE = "idle"
    IDLE_WAIT = "idle-wait"
    WAIT_BUSY = "wait-busy"
    SCALE_DOWN = "scale-down"
    WARM_POOL = "warm-pool"
    SCALE_UP = "scale-up"
    BURST = "burst"
    NO_WORKER = "no-worker"
    WAIT_START = "wait-start"
    AT_MAX = "at-max"
    BUSY = "busy"
    UNSCHEDULABLE = "unschedulable"
    REMOVED = "removed"
    CHECK_FAILED = "check-failed"
    BACKOFF = "backoff"
    PROBE = "probe"
    PROBING = "probing"
    PAUSED = "paused"
    DRAINED = "drained"
    BUDGET = "budget"
    PREEMPTED = "preempted"


class Control(str, Enum):
    """What an operator set for a type (pause, drain) or not."""

    RUN = "run"
    PAUSED = "paused"
    DRAIN = "drain"


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


#: Local exit codes of a process ended by a signal someone else sent: no failure of the worker's own.
KILLED_FROM_OUTSIDE = frozenset({-9, -15})


@dataclass(frozen=True)
class WorkerView:
    """What the policy needs to know of one worker."""

    worker_id: str
    state: WorkerState
    started_at: float
    busy: bool = False
    unschedulable_reason: str | None = None
    #: It reported idle or busy at least once: it got as far as consuming.
    consumed: bool = False
    #: The scaler asked it to stop (an exit then is no failed start).
    stop_requested: bool = False
    exit_code: int | None = None
    failure_reason: str | None = None

    @property
    def failed_start(self) -> bool:
        """It ended in failure without ever consuming, nobody asked it to stop, it was not killed from outside
        (SIGKILL or SIGTERM by an operator: a local exit code of -9 or -15), and how it ended is known (a worker
        adopted after a scaler restart may end with no exit code and no reason: no evidence of a failure)."""
        if self.state is not WorkerState.FAILED or self.consumed or self.stop_requested:
            return False
        known = self.exit_code is not None or self.failure_reason is not None
        return known and self.exit_code not in KILLED_FROM_OUTSIDE


@dataclass(frozen=True)
class Backoff:
    """Seconds before the next probe of a failing type: `initial`, doubling per failure, at most `maximum`."""

    initial: float = 5.0
    maximum: float = 300.0

    def delay(self, failures: int) -> float:
        return min(self.initial * 2 ** max(failures - 1, 0), self.maximum)


@dataclass(frozen=True)
class TypeMemory:
    """What the policy remembers of a type between ticks."""

    idle_since: float | None = None
    #: Consecutive rounds of failed starts, and when the next probe may start.
    failures: int = 0
    retry_at: float | None = None
    failure_reason: str | None = None
    #: The latest start time among the failed workers: a worker started since then that consumes clears it.
    failed_started_at: float = 0.0
    #: Finished workers already accounted for (each stays listed for a while).
    counted: frozenset[str] = frozenset()
    #: A draining type worked off its backlog and holds at zero.
    drained: bool = False

    def retried(self) -> TypeMemory:
        """Forget the failures: the next tick may start at once (retry, or a config change)."""
        return replace(self, failures=0, retry_at=None, failure_reason=None)


@dataclass(frozen=True)
class Decision:
    start: int = 0
    stop: tuple[str, ...] = ()
    state: State = State.IDLE
    code: Code = Code.IDLE
    reason: str = ""
    memory: TypeMemory = field(default_factory=TypeMemory)
    #: Workers the type claims from a shared budget (not counting those already stopping): what it is
    #: growing towards while its backlog is above the threshold, else what it keeps after this decision.
    desired: int = 0
    #: Failed starts first seen on this tick (for the metric).
    new_failures: int = 0

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
    workers: Sequence[WorkerView],
    memory: TypeMemory,
    now: float,
    removed: bool = False,
    *,
    finished: Sequence[WorkerView] = (),
    check: str | None = None,
    control: Control = Control.RUN,
    backoff: Backoff = Backoff(),
) -> Decision:
    """One type's decision for this tick.

    `workers` are the type's live workers, stopping ones excluded; `finished`
    the ones that ended recently (the same worker may be listed on several
    ticks). `removed` is true for a type no longer in the config: it gets no
    new worker and its workers are stopped once it is idle, without waiting.
    `check` is what the backend found wrong with the type without starting it.
    """
    memory, new_failures = _account_exits(memory, workers, finished, now, backoff)
    decision = _decide(job_type, stats, workers, memory, now, removed, check, control)
    return replace(decision, desired=_desired(job_type, stats, len(workers), decision), new_failures=new_failures)


#: Rules under which a type with a backlog above its threshold keeps growing, one step per tick.
GROWING = frozenset({Code.BURST, Code.SCALE_UP, Code.WAIT_START, Code.AT_MAX})


def _desired(job_type: JobType, stats: QueueStats | None, active: int, decision: Decision) -> int:
    """How many workers the type claims from a shared budget: the size it is growing towards, not only this
    tick's step, so a type whose new workers are still starting does not hand its slots back meanwhile."""
    if stats is not None and decision.code in GROWING and stats.backlog > job_type.threshold:
        return max(job_type.max_workers, active)
    if decision.code in (Code.PROBING, Code.BACKOFF) and stats is not None and stats.backlog:
        return max(active, 1)
    return active + decision.start - len(decision.stop)


def _account_exits(
    memory: TypeMemory, workers: Sequence[WorkerView], finished: Sequence[WorkerView], now: float, backoff: Backoff
) -> tuple[TypeMemory, int]:
    """Count failed starts once each (one backoff step per tick that saw any); a consuming worker clears them."""
    new = [worker for worker in finished if worker.worker_id not in memory.counted]
    memory = replace(memory, counted=frozenset(worker.worker_id for worker in finished))
    failed = [worker for worker in new if worker.failed_start]
    if failed:
        latest = max(failed, key=lambda worker: worker.started_at)
        failures = memory.failures + 1
        memory = replace(
            memory,
            failures=failures,
            retry_at=now + backoff.delay(failures),
            failure_reason=latest.failure_reason or _exit_text(latest.exit_code),
            failed_started_at=max(memory.failed_started_at, latest.started_at),
        )
    elif memory.failures and any(w.consumed and w.started_at >= memory.failed_started_at for w in [*workers, *new]):
        memory = memory.retried()
    return memory, len(failed)


def _exit_text(code: int | None) -> str:
    return "the worker exited before it consumed" + (f" (exit {code})" if code is not None else "")


def _decide(
    job_type: JobType,
    stats: QueueStats | None,
    workers: Sequence[WorkerView],
    memory: TypeMemory,
    now: float,
    removed: bool,
    check: str | None,
    control: Control,
) -> Decision:
    if stats is None:
        return Decision(
            state=State.BROKER_UNREACHABLE,
            code=Code.NO_DATA,
            reason="broker unreachable: no scaling decision",
            memory=memory,
        )
    idle_since = (memory.idle_since if memory.idle_since is not None else now) if stats.idle else None
    drained = control is Control.DRAIN and (memory.drained or (stats.idle and not workers))
    memory = replace(memory, idle_since=idle_since, drained=drained)
    if control is Control.PAUSED or drained:
        return _held(stats, workers, memory, drained)
    if check is not None and not removed:
        return Decision(state=State.FAILING, code=Code.CHECK_FAILED, reason=f"failing: {check}", memory=memory)
    if memory.failures and not removed and (idle_since is None or not workers):
        return _failing(job_type, stats, workers, memory, now)
    decision = _scale(job_type, stats, workers, memory, now, removed, draining=control is Control.DRAIN)
    if control is Control.DRAIN:
        return replace(decision, state=State.DRAINING, reason=f"draining: {decision.reason}")
    return decision


def _held(stats: QueueStats, workers: Sequence[WorkerView], memory: TypeMemory, drained: bool) -> Decision:
    """Paused, or drained: no new worker; every worker is asked to stop after the row in hand."""
    code = Code.DRAINED if drained else Code.PAUSED
    why = "drained, held at zero until resumed" if drained else f"paused: ready {stats.ready} kept in the queue"
    stop = tuple(worker.worker_id for worker in workers)
    if stop:
        why += f"; stopping {len(stop)} worker(s) after their row"
    return Decision(stop=stop, state=State.PAUSED, code=code, reason=why, memory=memory)


def _failing(
    job_type: JobType, stats: QueueStats, workers: Sequence[WorkerView], memory: TypeMemory, now: float
) -> Decision:
    """At most one probe at a time, each after the backoff: never a storm of doomed workers."""
    why = f"{memory.failures} failed start round(s): {memory.failure_reason}"
    if any(worker.state is WorkerState.STARTING for worker in workers):
        return Decision(
            state=State.FAILING, code=Code.PROBING, reason=f"failing, a probe is starting; {why}", memory=memory
        )
    wait = (memory.retry_at or now) - now
    needed = stats.backlog > 0 or len(workers) < job_type.min_workers
    if wait > 0 or not needed or len(workers) >= job_type.max_workers:
        return Decision(
            state=State.FAILING,
            code=Code.BACKOFF,
            reason=f"failing, next probe in {max(wait, 0):.0f} s; {why}",
            memory=memory,
        )
    return Decision(start=1, state=State.FAILING, code=Code.PROBE, reason=f"failing, probe +1; {why}", memory=memory)


def _scale(
    job_type: JobType,
    stats: QueueStats,
    workers: Sequence[WorkerView],
    memory: TypeMemory,
    now: float,
    removed: bool,
    draining: bool,
) -> Decision:
    capacity = len(workers)
    starting = sum(1 for worker in workers if worker.state is WorkerState.STARTING)
    stuck = [worker for worker in workers if worker.unschedulable_reason]
    maximum = 0 if removed else job_type.max_workers
    minimum = 0 if removed or draining else job_type.min_workers
    summary = f"ready {stats.ready}, unacked {stats.unacked}, {capacity} worker{'s' if capacity != 1 else ''}"

    if memory.idle_since is not None:
        at_once = "removed from the config" if removed else "drained" if draining else None
        return _when_idle(job_type, workers, memory, now - memory.idle_since, minimum, at_once)
    if removed:
        return Decision(
            state=State.DRAINING,
            code=Code.REMOVED,
            reason=f"removed from the config, draining: {summary}",
            memory=memory,
        )
    if stuck:
        return Decision(
            state=State.UNSCHEDULABLE,
            code=Code.UNSCHEDULABLE,
            reason=f"unschedulable: {stuck[0].unschedulable_reason}",
            memory=memory,
        )
    if capacity < minimum:
        return _warm_pool(minimum - capacity, minimum, memory)

    backlog = stats.backlog
    room = maximum - capacity
    if starting and backlog > 0:
        return Decision(
            state=State.SCALING_UP,
            code=Code.WAIT_START,
            reason=f"waiting for {starting} starting worker(s): {summary}",
            memory=memory,
        )
    if backlog > job_type.threshold and room > 0:
        burst_threshold = job_type.effective_burst_threshold
        if backlog > burst_threshold and job_type.burst_size > 1:
            add = min(job_type.burst_size, room)
            return Decision(
                start=add,
                state=State.BURST,
                code=Code.BURST,
                reason=f"burst +{add}: ready {backlog} > {burst_threshold}",
                memory=memory,
            )
        return Decision(
            start=1,
            state=State.SCALING_UP,
            code=Code.SCALE_UP,
            reason=f"scale up +1: ready {backlog} > {job_type.threshold}",
            memory=memory,
        )
    if backlog > 0 and capacity == 0 and room > 0:
        return Decision(
            start=1,
            state=State.SCALING_UP,
            code=Code.NO_WORKER,
            reason=f"scale up +1: ready {backlog} and no worker",
            memory=memory,
        )
    if room <= 0:
        return Decision(state=State.BUSY, code=Code.AT_MAX, reason=f"{summary} (max_workers {maximum})", memory=memory)
    return Decision(state=State.BUSY, code=Code.BUSY, reason=summary, memory=memory)


def _warm_pool(add: int, minimum: int, memory: TypeMemory) -> Decision:
    return Decision(
        start=add,
        state=State.SCALING_UP,
        code=Code.WARM_POOL,
        reason=f"warm pool +{add}: min_workers {minimum}",
        memory=memory,
    )


def _when_idle(
    job_type: JobType,
    workers: Sequence[WorkerView],
    memory: TypeMemory,
    idle_for: float,
    minimum: int,
    at_once: str | None,
) -> Decision:
    """Scale down after `idle_seconds`, or at once (`at_once` says why) for a removed or draining type."""
    surplus = len(workers) - minimum
    if surplus <= 0:
        if len(workers) < minimum:
            return _warm_pool(minimum - len(workers), minimum, memory)
        return Decision(state=State.IDLE, code=Code.IDLE, reason="idle", memory=memory)
    wait = 0.0 if at_once is not None else job_type.idle_seconds
    if idle_for < wait:
        return Decision(
            state=State.IDLE, code=Code.IDLE_WAIT, reason=f"idle {idle_for:.0f}/{wait:.0f} s", memory=memory
        )
    candidates = sorted((w for w in workers if not w.busy), key=lambda w: w.started_at, reverse=True)[:surplus]
    if not candidates:
        return Decision(
            state=State.IDLE,
            code=Code.WAIT_BUSY,
            reason="idle, waiting for busy workers to report idle",
            memory=memory,
        )
    why = at_once or f"idle for {idle_for:.0f} s"
    return Decision(
        stop=tuple(w.worker_id for w in candidates),
        state=State.SCALING_DOWN,
        code=Code.SCALE_DOWN,
        reason=f"scale down -{len(candidates)}: {why}",
        memory=memory,
    )
