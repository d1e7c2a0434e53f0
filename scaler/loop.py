"""The control loop: observe everything once, decide per job type, act, publish what happened.

One tick makes one management API call (all queues), one backend call (all
workers) and reads the heartbeats already received; then the pure policy
decides for every type and the loop carries the decisions out. Any failure
inside a tick is logged and the next tick runs as usual: the loop never dies,
and without queue data it makes no decision at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from jobtypes.config import JobType
from jobtypes.config_watch import ConfigWatcher
from jobtypes.control import Heartbeat
from scaler.backends.base import Backend, WorkerInfo, WorkerState
from scaler.metrics import BROKER_UP, QUEUE_DEAD, QUEUE_READY, QUEUE_UNACKED, SCALE_EVENTS, TICK_SECONDS, WORKERS
from scaler.policy import Decision, QueueStats, TypeMemory, WorkerView, decide
from scaler.queue_stats import QueueStatsSource, stats_for
from scaler.status import StatusBoard
from scaler.worker_channel import WorkerChannel

log = logging.getLogger("scaler")
RUNNING_HEARTBEATS = ("idle", "busy")
#: Shortest pause between two ticks, so a storm of wake-ups cannot keep the loop ticking back to back.
WAKE_MIN_GAP_SECONDS = 0.02
#: A tick meant for the end of an idle period runs this much after it, so the period has surely passed.
IDLE_DEADLINE_MARGIN_SECONDS = 0.01
#: While a type's last rows are in hand, tick this often (for at most TAIL_WATCH_SECONDS), to see the last ack soon.
TAIL_TICK_SECONDS = 0.2
TAIL_WATCH_SECONDS = 10.0


def effective_state(info: WorkerInfo, heartbeat: Heartbeat | None, stop_requested: bool) -> WorkerState:
    """The backend says whether a worker exists; its heartbeat says whether it consumes yet."""
    if info.state.finished:
        return info.state
    if stop_requested or info.state is WorkerState.STOPPING:
        return WorkerState.STOPPING
    if heartbeat is not None:
        if heartbeat.state in RUNNING_HEARTBEATS:
            return WorkerState.RUNNING
        if heartbeat.state in ("stopping", "stopped"):
            return WorkerState.STOPPING
    return info.state


class Scaler:
    def __init__(
        self,
        watcher: ConfigWatcher,
        backend: Backend,
        stats: QueueStatsSource,
        channel: WorkerChannel,
        tick_seconds: float = 1.0,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.watcher = watcher
        self.backend = backend
        self.stats = stats
        self.channel = channel
        self.tick_seconds = tick_seconds
        self.is_leader = is_leader
        self.clock = clock
        self.board = StatusBoard(tick_seconds)
        self.memory: dict[str, TypeMemory] = {}
        self.known: dict[str, JobType] = {}
        self.stop_requested: dict[str, float] = {}
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
        self.watcher.refresh()
        config = self.watcher.config
        queues = self.stats.fetch()
        infos = self.backend.list_workers()
        heartbeats = self.channel.snapshot()
        leader = self.is_leader()
        now = self.clock()
        BROKER_UP.set(queues is not None)

        self.known.update(config.job_types)
        by_type: dict[str, list[tuple[WorkerInfo, WorkerState]]] = {}
        for info in infos:
            state = effective_state(info, heartbeats.get(info.worker_id), info.worker_id in self.stop_requested)
            by_type.setdefault(info.job_type, []).append((info, state))
        self._escalate_stops(infos, now)

        type_documents: dict[str, Any] = {}
        samples: dict[str, tuple[int, int, int]] = {}
        for name in list(self.known):
            removed = name not in config.job_types
            workers = by_type.get(name, [])
            live = [(info, state) for info, state in workers if not state.finished]
            if removed and not live:
                del self.known[name]
                self.memory.pop(name, None)
                continue
            job_type = self.known[name]
            stats = stats_for(job_type, queues)
            views = [
                WorkerView(
                    info.worker_id,
                    state,
                    info.started_at,
                    busy=_busy(heartbeats.get(info.worker_id)),
                    unschedulable_reason=info.unschedulable_reason,
                )
                for info, state in live
                if state is not WorkerState.STOPPING
            ]
            decision = decide(job_type, stats, views, self.memory.get(name, TypeMemory()), now, removed=removed)
            self.memory[name] = decision.memory
            if leader and decision.direction:
                self._carry_out(job_type, decision, {info.worker_id: (info, state) for info, state in live})
            type_documents[name] = _type_document(job_type, stats, live, decision, now, removed, leader)
            samples[name] = (stats.ready if stats else 0, stats.unacked if stats else 0, len(live))
            _export_metrics(name, stats, live)

        self.last_duration = time.perf_counter() - started
        self.durations.append(self.last_duration)
        self.last_at = time.time()
        TICK_SECONDS.observe(self.last_duration)
        self.board.publish(self._document(type_documents, infos, heartbeats, queues is not None, leader), samples)

    def _carry_out(
        self, job_type: JobType, decision: Decision, live: dict[str, tuple[WorkerInfo, WorkerState]]
    ) -> None:
        direction = decision.direction or ""
        log.info("%s: %s", job_type.name, decision.reason)
        self.board.event(job_type.name, direction, decision.reason)
        SCALE_EVENTS.labels(job_type.name, direction).inc()
        for _ in range(decision.start):
            try:
                self.backend.start_worker(job_type)
            except Exception as error:  # noqa: BLE001 - reported, retried by the policy next tick
                log.error("%s: could not start a worker: %s", job_type.name, error)
                self.board.event(job_type.name, "error", f"could not start a worker: {error}")
                break
        for worker_id in decision.stop:
            info, state = live[worker_id]
            self.stop_requested[worker_id] = self.clock()
            if state is WorkerState.STARTING:
                self.backend.terminate(info, job_type)  # it holds no message yet and may not listen yet
            else:
                self.channel.request_stop(worker_id)

    def _escalate_stops(self, infos: list[WorkerInfo], now: float) -> None:
        """Workers that ignored their stop request past the type's grace period are terminated."""
        alive = {info.worker_id: info for info in infos if not info.state.finished}
        for worker_id, asked_at in list(self.stop_requested.items()):
            info = alive.get(worker_id)
            if info is None:
                del self.stop_requested[worker_id]
                continue
            job_type = self.known.get(info.job_type)
            grace = job_type.stop_grace_seconds if job_type else 30.0
            if now - asked_at >= grace:
                self.backend.terminate(info, job_type)

    def _document(
        self,
        types: dict[str, Any],
        infos: list[WorkerInfo],
        heartbeats: dict[str, Heartbeat],
        reachable: bool,
        leader: bool,
    ) -> dict[str, Any]:
        return {
            "job_types": types,
            "workers": [
                _worker_document(info, heartbeats.get(info.worker_id), info.worker_id in self.stop_requested)
                for info in sorted(infos, key=lambda i: i.started_at, reverse=True)
            ],
            "broker": {"reachable": reachable, "error": self.stats.error},
            "config": {
                "path": str(self.watcher.path),
                "error": self.watcher.error,
                "loaded_at": self.watcher.loaded_at,
            },
            "leader": leader,
            "backend": self.backend.name,
            "tick": {
                "interval": self.tick_seconds,
                "last_duration_ms": round(self.last_duration * 1000, 2),
                "p50_ms": _percentile(self.durations, 0.50),
                "p99_ms": _percentile(self.durations, 0.99),
                "last_at": self.last_at,
            },
        }


def _percentile(values: deque[float], fraction: float) -> float | None:
    """The `fraction` percentile of the recent tick durations, in ms (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(int(fraction * len(ordered)), len(ordered) - 1)] * 1000, 2)


def _busy(heartbeat: Heartbeat | None) -> bool:
    return heartbeat is not None and (heartbeat.state == "busy" or heartbeat.current_message is not None)


def _type_document(
    job_type: JobType,
    stats: QueueStats | None,
    live: list[tuple[WorkerInfo, WorkerState]],
    decision: Decision,
    now: float,
    removed: bool,
    leader: bool,
) -> dict[str, Any]:
    count = {
        state: sum(1 for _, s in live if s is state)
        for state in (WorkerState.STARTING, WorkerState.RUNNING, WorkerState.STOPPING)
    }
    stuck = next((info.unschedulable_reason for info, _ in live if info.unschedulable_reason), None)
    idle_since = decision.memory.idle_since
    return {
        "queue": job_type.queue,
        "ready": stats.ready if stats else None,
        "unacked": stats.unacked if stats else None,
        "consumers": count[WorkerState.RUNNING] if stats else None,
        "retrying": stats.retrying if stats else None,
        "dead": stats.dead if stats else None,
        "workers": len(live),
        "starting": count[WorkerState.STARTING],
        "running": count[WorkerState.RUNNING],
        "stopping": count[WorkerState.STOPPING],
        "max_workers": job_type.max_workers,
        "min_workers": job_type.min_workers,
        "threshold": job_type.threshold,
        "burst_threshold": job_type.effective_burst_threshold,
        "burst_size": job_type.burst_size,
        "idle_seconds": job_type.idle_seconds,
        "idle_for": round(now - idle_since, 1) if idle_since is not None else None,
        "state": decision.state,
        "reason": decision.reason if leader else f"standby (not the leader): {decision.reason}",
        "unschedulable": stuck,
        "removed": removed,
    }


def _worker_document(info: WorkerInfo, heartbeat: Heartbeat | None, stop_requested: bool) -> dict[str, Any]:
    return {
        "id": info.worker_id,
        "job_type": info.job_type,
        "state": effective_state(info, heartbeat, stop_requested).value,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "exit_code": info.exit_code,
        "processed": heartbeat.processed if heartbeat else 0,
        "failed": heartbeat.failed if heartbeat else 0,
        "retried": heartbeat.retried if heartbeat else 0,
        "dead": heartbeat.dead if heartbeat else 0,
        "current_message": heartbeat.current_message if heartbeat else None,
        "busy": _busy(heartbeat),
        "unschedulable_reason": info.unschedulable_reason,
        "details": info.details,
    }


def _export_metrics(name: str, stats: QueueStats | None, live: list[tuple[WorkerInfo, WorkerState]]) -> None:
    if stats is not None:
        QUEUE_READY.labels(name).set(stats.ready)
        QUEUE_UNACKED.labels(name).set(stats.unacked)
        QUEUE_DEAD.labels(name).set(stats.dead)
    for state in (WorkerState.STARTING, WorkerState.RUNNING, WorkerState.STOPPING):
        WORKERS.labels(name, state.value).set(sum(1 for _, s in live if s is state))
