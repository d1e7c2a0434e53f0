"""The replay: uploads arrive at job types, a controller scales workers, workers start rows; a virtual clock.

Three controllers share one model of the work (`Lane`: a job type's FIFO
queue and its worker slots):

* `project`: every tick calls the real `scaler.policy.decide` per type and the
  real `scaler.budget.allocate` across types (imported, never copied), with the
  inputs `scaler.observe.Observer` builds from what it observes: `QueueStats` (ready
  and unacked as RabbitMQ would count them with the type's prefetch),
  `WorkerView`s (starting or running, busy or not) and the type's memory. Ticks
  come as in the loop: every `tick_seconds` while a type has work, at once on an
  upload (the producer's wake-up), at the end of `idle_seconds`, and every
  `TAIL_TICK_SECONDS` while a type's last rows are in hand.
* `keda`: KEDA's ScaledJob with the RabbitMQ scaler at its defaults (see `KedaModel`).
* `fixed:N`: N always-on workers per type.

Cost grows with events, not rows: a worker slot that starts a run of rows is
one step (rows of one upload start evenly, one per `batch_size * row_seconds`),
and their waits are one piece of a `Sketch`. Times are seconds of trace time.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from common.config import JobType
from scaler.backends.base import WorkerState
from scaler.budget import Budget, Claim, allocate, worker_requests
from scaler.policy import Decision, QueueStats, TypeMemory, WorkerView, decide
from scaler.schedule import IDLE_DEADLINE_MARGIN_SECONDS, TAIL_TICK_SECONDS, TAIL_WATCH_SECONDS
from scaler.settings import DEFAULT_TICK_SECONDS
from simulator.sketch import Sketch
from simulator.traces import Trace

#: Local backend: a worker forked from its type's warm template consumes after 0.026 s (README, `bench reaction`).
LOCAL_WORKER_START_SECONDS = 0.026
#: Local backend: from a stop request to the process gone (the worker hears it on its next heartbeat).
LOCAL_WORKER_STOP_SECONDS = 0.1
#: What a worker spends per row beyond the handler (ack, outcome report, next delivery at prefetch 1): a stated
#: guess for a quiet machine; `./manage.sh replay` measures it on the real stack.
ROW_OVERHEAD_SECONDS = 0.002
#: Kubernetes: from the Job created to the pod consuming (image cached, node available): a stated guess.
KUBERNETES_WORKER_START_SECONDS = 5.0
KUBERNETES_WORKER_STOP_SECONDS = 1.0
#: Rows still queued this long after the trace's window ends are reported unfinished.
DEFAULT_DRAIN_LIMIT_SECONDS = 6 * 3600.0
#: Points of the timeline in the summary (the agreed format's limit).
TIMELINE_POINTS = 2000

# KEDA, https://keda.sh/docs/latest/reference/scaledjob-spec/ : "pollingInterval ... Default: 30 seconds",
# "maxReplicaCount ... default 100"; scalingStrategy.strategy "default": jobs to create =
# maxScale - runningJobCount, with maxScale = min(maxReplicaCount, ceil(queueLength / target)).
KEDA_POLLING_SECONDS = 30.0
KEDA_MAX_REPLICAS = 100
# https://keda.sh/docs/2.0/scalers/rabbitmq-queue/ : "queueLength: '20' # Optional. Queue length target for
# HPA. Default: 20 messages" (since 2.2 `mode: QueueLength` + `value`, no other default documented).
KEDA_TARGET_QUEUE_LENGTH = 20


@dataclass(frozen=True)
class Assumptions:
    """What the model takes as given; printed in every report."""

    backend: str = "local"
    worker_start_seconds: float = LOCAL_WORKER_START_SECONDS
    worker_stop_seconds: float = LOCAL_WORKER_STOP_SECONDS
    row_overhead_seconds: float = ROW_OVERHEAD_SECONDS
    tick_seconds: float = DEFAULT_TICK_SECONDS
    wake_ups: bool = True
    budget: Budget = field(default_factory=Budget)
    drain_limit_seconds: float = DEFAULT_DRAIN_LIMIT_SECONDS
    keda_polling_seconds: float = KEDA_POLLING_SECONDS
    keda_target_queue_length: int = KEDA_TARGET_QUEUE_LENGTH
    keda_max_replicas: int = KEDA_MAX_REPLICAS

    @classmethod
    def for_backend(cls, backend: str, **overrides: object) -> Assumptions:
        if backend not in ("local", "kubernetes"):
            raise ValueError(f"--backend must be local or kubernetes, got {backend!r}")
        start, stop = (
            (LOCAL_WORKER_START_SECONDS, LOCAL_WORKER_STOP_SECONDS)
            if backend == "local"
            else (KUBERNETES_WORKER_START_SECONDS, KUBERNETES_WORKER_STOP_SECONDS)
        )
        values: dict[str, object] = {"worker_start_seconds": start, "worker_stop_seconds": stop}
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(backend=backend, **values)  # type: ignore[arg-type]


class Worker:
    """One worker: when it was asked for, when it consumes, its slots (when each is free, rows it holds)."""

    __slots__ = ("id", "requested", "running", "stopping", "free", "held", "_views")

    def __init__(self, worker_id: str, requested: float) -> None:
        self.id = worker_id
        self.requested = requested
        self.running = False
        self.stopping = False
        self.free: list[float] = []
        self.held: list[int] = []
        self._views: dict[tuple[bool, bool], WorkerView] = {}

    def busy(self, now: float) -> bool:
        return bool(self.free) and max(self.free) > now

    def view(self, now: float) -> WorkerView:
        """What the policy sees of it (cached: a worker has at most four distinct views)."""
        key = (self.running, self.running and max(self.free) > now)
        view = self._views.get(key)
        if view is None:
            state = WorkerState.RUNNING if self.running else WorkerState.STARTING
            view = WorkerView(self.id, state, self.requested, busy=key[1], consumed=self.running)
            self._views[key] = view
        return view


@dataclass
class Totals:
    """What one type (or all) cost and saw."""

    worker_seconds: float = 0.0
    busy_seconds: float = 0.0
    starts: int = 0
    peak_workers: int = 0
    rows: int = 0
    uploads: int = 0
    unfinished_rows: int = 0


class Lane:
    """One job type: its queue of uploads (FIFO segments: arrival, rows left, seconds a row) and its workers."""

    def __init__(self, index: int, job: JobType, waits: Sketch, completions: Sketch, overhead: float = 0.0) -> None:
        self.index = index
        self.overhead = overhead
        self.job = job
        self.waits = waits
        self.completions = completions
        self.queue: deque[list[float]] = deque()
        self.queued = 0
        self.live: dict[str, Worker] = {}
        self.running: list[Worker] = []
        self.stopped: set[str] = set()
        self.stopping_until: list[tuple[float, int]] = []
        self.memory = TypeMemory()
        self.totals = Totals()
        self.requests = worker_requests(job.resources)
        self.tail_since: float | None = None
        self.last_tick = -1.0

    # the work --------------------------------------------------------------------------------
    def arrive(self, at: float, rows: int, row_seconds: float) -> None:
        self.advance(at)
        self.queue.append([at, rows, row_seconds + self.overhead])
        self.queued += rows
        self.totals.rows += rows
        self.totals.uploads += 1

    def advance(self, now: float) -> None:
        """Start every row a free slot takes before `now`, in FIFO order, slot by earliest free time."""
        workers = self.running
        if not self.queue or not workers:
            return
        free = [f for w in workers for f in w.free]
        held = [h for w in workers for h in w.held]
        batch = self.job.batch_size
        while self.queue:
            segment = self.queue[0]
            arrival, left, seconds = segment[0], int(segment[1]), segment[2]
            step = batch * seconds
            ready = [f if f > arrival else arrival for f in free]
            counts = [math.ceil((now - r) / step) if r < now else 0 for r in ready]
            possible = sum(counts)
            groups = -(-left // batch)
            if possible == 0:
                break
            if possible < groups:
                self._start(segment, ready, counts, possible * batch, free, held, step, last_rows=batch)
                break
            counts = water_fill(ready, groups, step)
            self._start(segment, ready, counts, left, free, held, step, last_rows=left - (groups - 1) * batch)
            self.queue.popleft()
        at = 0
        for worker in workers:
            size = len(worker.free)
            worker.free, worker.held = free[at : at + size], held[at : at + size]
            at += size

    def _start(
        self,
        segment: list[float],
        ready: list[float],
        counts: list[int],
        rows: int,
        free: list[float],
        held: list[int],
        step: float,
        last_rows: int,
    ) -> None:
        """Slots take `counts[j]` groups each; the last group (of the latest slot) has `last_rows` rows."""
        arrival, seconds = segment[0], segment[2]
        taking = [j for j, count in enumerate(counts) if count]
        last = max(taking, key=lambda j: ready[j] + (counts[j] - 1) * step)
        batch = self.job.batch_size
        for j in taking:
            free[j] = ready[j] + counts[j] * step
            held[j] = batch
        free[last] = ready[last] + (counts[last] - 1) * step + last_rows * seconds
        held[last] = last_rows
        first_start = min(ready[j] for j in taking)
        last_start = ready[last] + (counts[last] - 1) * step
        self.waits.add(self.index, first_start - arrival, last_start - arrival, rows)
        segment[1] -= rows
        self.queued -= rows
        self.totals.busy_seconds += rows * seconds
        if segment[1] <= 0:
            self.completions.add(self.index, free[last] - arrival, free[last] - arrival, 1)

    def stats(self, now: float) -> QueueStats:
        """Ready and unacked as the broker counts them: each running worker holds up to its read-ahead."""
        in_service = 0
        for worker in self.running:
            for free, held in zip(worker.free, worker.held, strict=True):
                if free > now:
                    in_service += held
        for until, rows in self.stopping_until:
            if until > now:
                in_service += rows
        prefetched = min(self.queued, len(self.running) * self.job.read_ahead)
        return QueueStats(ready=self.queued - prefetched, unacked=in_service + prefetched)

    def last_finish(self) -> float:
        return max((f for w in self.running for f in w.free), default=0.0)

    # the workers -----------------------------------------------------------------------------
    def add_worker(self, worker: Worker) -> None:
        self.live[worker.id] = worker
        self.totals.starts += 1
        self.totals.peak_workers = max(self.totals.peak_workers, len(self.live))

    def make_running(self, worker: Worker, now: float) -> None:
        self.advance(now)
        worker.running = True
        worker.free = [now] * self.job.concurrency
        worker.held = [0] * self.job.concurrency
        self.running.append(worker)

    def stop(self, worker: Worker, now: float, stop_seconds: float) -> float:
        """Ask `worker` to stop: it takes no new row, finishes the rows in hand (at most `stop_grace_seconds`);
        returns when it is gone."""
        worker.stopping = True
        self.stopped.add(worker.id)
        if not worker.running:
            return now + stop_seconds
        self.running.remove(worker)
        busy_until = min(max(worker.free, default=now), now + self.job.stop_grace_seconds)
        in_hand = sum(h for f, h in zip(worker.free, worker.held, strict=True) if f > now)
        if in_hand:
            self.stopping_until.append((busy_until, in_hand))
        return max(busy_until, now) + stop_seconds

    def exit(self, worker: Worker, now: float) -> None:
        self.live.pop(worker.id, None)
        self.stopped.discard(worker.id)
        self.totals.worker_seconds += now - worker.requested
        self.stopping_until = [(until, rows) for until, rows in self.stopping_until if until > now]


def water_fill(ready: list[float], groups: int, step: float) -> list[int]:
    """How many of `groups` groups each slot starts when every group goes to the slot free first (slot j is
    free at ready[j], a group takes `step`): the level L with sum((L - ready[j]) / step) = groups, rounded
    to whole groups by largest remainder."""
    order = sorted(range(len(ready)), key=ready.__getitem__)
    total = 0.0
    level = ready[order[0]]
    for m, j in enumerate(order, start=1):
        total += ready[j]
        level = (groups * step + total) / m
        if m == len(order) or level <= ready[order[m]]:
            break
    shares = [max((level - r) / step, 0.0) for r in ready]
    counts = [int(share) for share in shares]
    missing = groups - sum(counts)
    if missing > 0:
        for j in sorted(range(len(ready)), key=lambda j: (counts[j] - shares[j], ready[j]))[:missing]:
            counts[j] += 1
    elif missing < 0:
        for j in sorted(range(len(ready)), key=lambda j: -ready[j]):
            take = min(counts[j], -missing)
            counts[j] -= take
            missing += take
            if not missing:
                break
    return counts


@dataclass
class Outcome:
    """A finished run of one controller."""

    policy: str
    lanes: list[Lane]
    waits: Sketch
    completions: Sketch
    end: float
    timeline: dict[str, list[float]]
    events: int


Progress = Callable[[float], None]


class Simulation:
    """The event loop shared by the controllers: arrivals, worker starts and exits, ticks, timeline samples."""

    ARRIVE, READY, EXIT, TICK, POLL, JOBS = range(6)

    def __init__(
        self,
        trace: Trace,
        config: dict[str, JobType],
        assumptions: Assumptions,
        progress: Progress | None = None,
    ) -> None:
        self.trace = trace
        self.assumptions = assumptions
        names = trace.job_types
        self.waits = Sketch(len(names))
        self.completions = Sketch(len(names))
        self.lanes = [
            Lane(i, config[name], self.waits, self.completions, assumptions.row_overhead_seconds)
            for i, name in enumerate(names)
        ]
        self.by_name = {lane.job.name: lane for lane in self.lanes}
        self.heap: list[tuple[float, int, int, int, object]] = []
        self.sequence = 0
        self.now = 0.0
        self.live = 0
        self.events = 0
        self.worker_ids = 0
        self.progress = progress
        self.window = trace.duration
        self.sample_every = max(self.window / TIMELINE_POINTS, assumptions.tick_seconds, 1.0)
        self.next_sample = 0.0
        self.timeline: dict[str, list[float]] = {"t": [], "workers": [], "backlog": []}
        for upload in trace.uploads:
            self.push(upload.at, self.ARRIVE, self.by_name[upload.job_type].index, upload)

    def push(self, at: float, kind: int, lane: int, payload: object = None) -> None:
        self.sequence += 1
        heapq.heappush(self.heap, (at, kind, self.sequence, lane, payload))

    def new_worker(self, lane: Lane, now: float) -> Worker:
        self.worker_ids += 1
        worker = Worker(f"{lane.job.name}-{self.worker_ids}", now)
        lane.add_worker(worker)
        self.live += 1
        return worker

    def exit_worker(self, lane: Lane, worker: Worker, now: float) -> None:
        if worker.id in lane.live:
            lane.exit(worker, now)
            self.live -= 1

    def sample_until(self, now: float) -> None:
        while self.next_sample <= now:
            at = self.next_sample
            for lane in self.lanes:
                if lane.queued:
                    lane.advance(at)
            self.timeline["t"].append(round(at, 3))
            self.timeline["workers"].append(self.live)
            self.timeline["backlog"].append(sum(lane.queued for lane in self.lanes))
            self.next_sample += self.sample_every
            if self.progress is not None:
                self.progress(min(at / max(self.window, 1e-9), 1.0))

    def cap(self) -> float:
        return self.window + self.assumptions.drain_limit_seconds

    def pop_events(self) -> Iterator[tuple[float, int, Lane, object]]:
        """Every event in time order up to the drain limit, with the timeline sampled up to it."""
        cap = self.cap()
        while self.heap:
            at, kind, _, index, payload = heapq.heappop(self.heap)
            if at > cap:
                return
            self.sample_until(at)
            self.events += 1
            self.now = max(self.now, at)
            yield at, kind, self.lanes[index], payload

    def finish(self, policy: str, end: float) -> Outcome:
        """Close the books at `end`: live workers are paid up to it, rows still queued are unfinished."""
        end = max(end, self.window)
        self.sample_until(end)
        for lane in self.lanes:
            lane.advance(end)
            for worker in list(lane.live.values()):
                self.exit_worker(lane, worker, end)
            for arrival, left, _ in lane.queue:
                lane.waits.add(lane.index, end - arrival, end - arrival, left)
                lane.totals.unfinished_rows += int(left)
        if self.progress is not None:
            self.progress(1.0)
        return Outcome(policy, self.lanes, self.waits, self.completions, end, self.timeline, self.events)


class ProjectPolicy:
    """The project's scaler: `decide` per type and `allocate` across types, ticked as `scaler.schedule` says."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.assumptions = sim.assumptions
        self.active: set[int] = set()

    def run(self) -> Outcome:
        sim, tick = self.sim, self.assumptions.tick_seconds
        next_grid = 0.0
        cap = sim.cap()
        while sim.heap or self.active:
            at = sim.heap[0][0] if sim.heap else math.inf
            if self.active and next_grid <= at:
                if next_grid > cap:
                    break
                sim.sample_until(next_grid)
                self.tick(next_grid, sorted(self.active))
                next_grid += tick
                continue
            if at > cap:
                break
            at, kind, _, index, payload = heapq.heappop(sim.heap)
            if not self.active:  # the loop's interval grid resumes at the first tick after the quiet spell
                next_grid = max(next_grid, math.ceil(at / tick) * tick if tick > 0 else at)
            sim.sample_until(at)
            sim.events += 1
            self.handle(at, kind, sim.lanes[index], payload)
        return sim.finish("project", min(max(sim.now, sim.window), cap))

    def handle(self, at: float, kind: int, lane: Lane, payload: object) -> None:
        sim = self.sim
        sim.now = max(sim.now, at)
        if kind == Simulation.ARRIVE:
            lane.arrive(at, payload.rows, payload.row_seconds)  # type: ignore[attr-defined]
            self.active.add(lane.index)
            if self.assumptions.wake_ups:
                self.tick(at, [lane.index])
        elif kind == Simulation.READY:
            worker = payload
            if not worker.stopping:  # type: ignore[attr-defined]
                lane.make_running(worker, at)  # type: ignore[arg-type]
        elif kind == Simulation.EXIT:
            sim.exit_worker(lane, payload, at)  # type: ignore[arg-type]
        elif kind == Simulation.TICK:
            if lane.last_tick < at:
                self.tick(at, [lane.index])

    def tick(self, now: float, indexes: list[int]) -> None:
        """One tick for the given types (every type holding or wanting workers when a budget is set)."""
        sim = self.sim
        sim.now = max(sim.now, now)
        budget = self.assumptions.budget
        if budget.limited:
            indexes = sorted(set(indexes) | {lane.index for lane in sim.lanes if lane.live or lane.queued})
        claims, stats = [], {}
        for index in indexes:
            lane = sim.lanes[index]
            lane.last_tick = now
            lane.advance(now)
            observed = lane.stats(now)
            stats[index] = observed
            views = [w.view(now) for w in lane.live.values() if not w.stopping]
            decision = decide(lane.job, observed, views, lane.memory, now)
            lane.memory = decision.memory
            claims.append(
                Claim(
                    lane.job.name,
                    decision,
                    active=views,
                    stopping=len(lane.live) - len(views),
                    priority=lane.job.priority,
                    weight=lane.job.weight,
                    min_workers=lane.job.min_workers,
                    requests=lane.requests,
                )
            )
        decisions = allocate(claims, budget).decisions
        for index in indexes:
            lane = sim.lanes[index]
            self.act(lane, decisions[lane.job.name], now)
            self.schedule(lane, stats[index], now)

    def act(self, lane: Lane, decision: Decision, now: float) -> None:
        sim = self.sim
        for _ in range(decision.start):
            worker = sim.new_worker(lane, now)
            sim.push(now + self.assumptions.worker_start_seconds, Simulation.READY, lane.index, worker)
        for worker_id in decision.stop:
            worker = lane.live.get(worker_id)
            if worker is not None and not worker.stopping:
                gone = lane.stop(worker, now, self.assumptions.worker_stop_seconds)
                sim.push(gone, Simulation.EXIT, lane.index, worker)

    def schedule(self, lane: Lane, observed: QueueStats, now: float) -> None:
        """Which ticks this type needs next: the grid while it has work or starting workers, the end of its
        idle period, the tail ticks while its last rows are in hand."""
        if observed.idle and len(lane.running) + len(lane.stopped) >= len(lane.live):
            self.active.discard(lane.index)
        else:
            self.active.add(lane.index)
        idle_since = lane.memory.idle_since
        if idle_since is not None and len(lane.live) > lane.job.min_workers:
            deadline = idle_since + lane.job.idle_seconds + IDLE_DEADLINE_MARGIN_SECONDS
            if deadline > now:
                self.sim.push(deadline, Simulation.TICK, lane.index)
        if observed.ready == 0 and observed.unacked > 0:
            lane.tail_since = now if lane.tail_since is None else lane.tail_since
            finish = lane.last_finish()
            if finish - lane.tail_since < TAIL_WATCH_SECONDS:
                steps = max(math.ceil((finish - lane.tail_since) / TAIL_TICK_SECONDS), 1)
                at = lane.tail_since + steps * TAIL_TICK_SECONDS
                self.sim.push(at if at > now else now + TAIL_TICK_SECONDS, Simulation.TICK, lane.index)
        else:
            lane.tail_since = None


class KedaModel:
    """KEDA ScaledJob + RabbitMQ scaler at its defaults, as its documentation describes them.

    Reading of https://keda.sh/docs/latest/concepts/scaling-jobs/ : "for each detected event a single
    Kubernetes Job is scheduled. That job will initialize, pull a single event from the message source, and
    process to completion and terminate": one row per Job, every Job a cold start. Every
    `pollingInterval` (30 s) the scaler reads the queue length (AMQP: ready messages only) and the default
    scaling strategy creates maxScale - runningJobCount Jobs, maxScale = min(maxReplicaCount (100),
    ceil(queueLength / 20)). A Job counts as running from its creation to its end; one that finds the queue
    empty when its pod is up ends at once."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.assumptions = sim.assumptions
        self.polling: set[int] = set()
        self.running = [0] * len(sim.lanes)

    def run(self) -> Outcome:
        sim = self.sim
        for at, kind, lane, payload in sim.pop_events():
            if kind == Simulation.ARRIVE:
                lane.arrive(at, payload.rows, payload.row_seconds)  # type: ignore[attr-defined]
                self.schedule_poll(lane, at)
            elif kind == Simulation.POLL:
                self.poll(lane, at)
            elif kind == Simulation.JOBS:
                self.jobs_up(lane, at, payload)  # type: ignore[arg-type]
            elif kind == Simulation.EXIT:
                workers, count = payload  # type: ignore[misc]
                for worker in workers:
                    sim.exit_worker(lane, worker, at)
                self.running[lane.index] -= count
        return sim.finish("keda", min(max(sim.now, sim.window), sim.cap()))

    def schedule_poll(self, lane: Lane, now: float) -> None:
        if lane.index not in self.polling:
            self.polling.add(lane.index)
            interval = self.assumptions.keda_polling_seconds
            self.sim.push(math.floor(now / interval + 1) * interval, Simulation.POLL, lane.index)

    def poll(self, lane: Lane, now: float) -> None:
        self.polling.discard(lane.index)
        a = self.assumptions
        scale = min(a.keda_max_replicas, math.ceil(lane.queued / a.keda_target_queue_length))
        create = max(scale - self.running[lane.index], 0)
        if create:
            workers = [self.sim.new_worker(lane, now) for _ in range(create)]
            self.running[lane.index] += create
            self.sim.push(now + a.worker_start_seconds, Simulation.JOBS, lane.index, workers)
        if lane.queued or self.running[lane.index]:
            self.schedule_poll(lane, now)

    def jobs_up(self, lane: Lane, now: float, workers: list[Worker]) -> None:
        """Pods up: each takes one row (FIFO) and ends after it; the ones that find nothing end at once."""
        stop = self.assumptions.worker_stop_seconds
        at = 0
        while lane.queue and at < len(workers):
            segment = lane.queue[0]
            arrival, left, seconds = segment[0], int(segment[1]), segment[2]
            take = min(left, len(workers) - at)
            lane.waits.add(lane.index, now - arrival, now - arrival, take)
            lane.totals.busy_seconds += take * seconds
            segment[1] -= take
            lane.queued -= take
            if segment[1] <= 0:
                lane.completions.add(lane.index, now + seconds - arrival, now + seconds - arrival, 1)
                lane.queue.popleft()
            self.sim.push(now + seconds + stop, Simulation.EXIT, lane.index, (workers[at : at + take], take))
            at += take
        if at < len(workers):
            rest = workers[at:]
            self.sim.push(now + stop, Simulation.EXIT, lane.index, (rest, len(rest)))


class FixedPool:
    """N always-on workers per type, consuming from the first second (warm, no start latency)."""

    def __init__(self, sim: Simulation, size: int) -> None:
        self.sim = sim
        self.size = size

    def run(self) -> Outcome:
        sim, cap = self.sim, self.sim.cap()
        for lane in sim.lanes:
            for _ in range(self.size):
                lane.make_running(sim.new_worker(lane, 0.0), 0.0)
        for at, _, lane, payload in sim.pop_events():
            lane.arrive(at, payload.rows, payload.row_seconds)  # type: ignore[attr-defined]
        end = sim.window
        for lane in sim.lanes:
            lane.advance(cap)
            end = max(end, min(max((f for w in lane.running for f in w.free), default=0.0), cap))
        return sim.finish(f"fixed:{self.size}", end)


def run_policy(
    policy: str,
    trace: Trace,
    config: dict[str, JobType],
    assumptions: Assumptions,
    progress: Progress | None = None,
) -> Outcome:
    """Replay `trace` under one policy: `project`, `keda` or `fixed:N`."""
    sim = Simulation(trace, config, assumptions, progress)
    if policy == "project":
        return ProjectPolicy(sim).run()
    if policy == "keda":
        return KedaModel(sim).run()
    if policy.startswith("fixed:"):
        return FixedPool(sim, parse_fixed(policy)).run()
    raise ValueError(f"unknown policy {policy!r}; use project, keda or fixed:N")


def parse_fixed(policy: str) -> int:
    try:
        size = int(policy.partition(":")[2])
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"{policy!r}: a fixed pool needs a whole number of workers of at least 1, e.g. fixed:4")
    return size
