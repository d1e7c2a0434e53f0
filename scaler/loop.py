"""The control loop: observe everything once, decide per job type, share the budget, act, publish.

One tick makes one management API call (all queues), one backend call (all
workers) and reads the heartbeats already received; then the pure policy
decides what every type wants (`scaler.policy.decide`), the pure budget step
shares the budget across types (`scaler.budget.allocate`), and the loop
carries the result out. Each step is its own module, and this one only puts
them in order: when to tick (`scaler.schedule`), observe and decide
(`scaler.observe`), act (`scaler.act`), publish the status and metrics
(`scaler.publish`). Any failure inside a tick is logged and the next tick runs
as usual: the loop never dies, and without queue data it makes no decision at
all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from common.config import JobType
from common.config_watch import ConfigWatcher
from scaler.act import Actor
from scaler.backends.base import Backend
from scaler.budget import allocate
from scaler.observe import Observer
from scaler.operator_controls import Controls
from scaler.publish import StatusPublisher
from scaler.queue_stats import QueueStatsSource
from scaler.schedule import TickSchedule, idle_deadline
from scaler.settings import ScalerSettings
from scaler.status import StatusBoard
from scaler.worker_channel import WorkerChannel

log = logging.getLogger("scaler")


class Scaler:
    """The four parts of a tick wired together, and the thread-safe `wake` and `stop` the web app and signals use."""

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
        #: The collaborators, as handed in: the web app, the health check and the tests reach them here.
        self.watcher, self.backend, self.channel, self.is_leader = watcher, backend, channel, is_leader
        self.controls = controls or Controls()
        self.clock = clock
        self.schedule = TickSchedule(tick_seconds if tick_seconds is not None else self.settings.tick_seconds)
        self.board = StatusBoard(self.settings.history)
        self.actor = Actor(backend, channel, self.board, clock)
        self.observer = Observer(
            watcher, backend, stats, channel, is_leader, clock, self.settings, self.controls, self.actor.stop_requested
        )
        self.publisher = StatusPublisher(self.settings, self.board, self.schedule.tick_seconds)
        self._in_tail = False

    @property
    def known(self) -> dict[str, JobType]:
        """Every type the loop still decides for: those in the config, and removed ones with live workers."""
        return self.observer.known

    @property
    def tick_seconds(self) -> float:
        return self.schedule.tick_seconds

    @property
    def last_at(self) -> float:
        """When the last tick ended (wall clock; 0 before the first): the health check's staleness."""
        return self.publisher.last_at

    # running ---------------------------------------------------------------------
    def run(self) -> None:
        """Tick on the schedule (`scaler.schedule`) until `stop()`. A failing tick is logged, never fatal."""
        log.info("control loop running every %.2f s with the %s backend", self.tick_seconds, self.backend.name)
        while not self.schedule.stopping:
            self.schedule.starting_tick()
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive anything one tick meets
                log.exception("tick failed; carrying on")
            ended = time.monotonic()
            idle_at = idle_deadline(self.observer.memory, self.known, self.clock(), ended)
            self.schedule.wait(ended, self.schedule.next_wake(ended, self._in_tail, idle_at))

    def wake(self, job_type: str = "") -> None:
        """Tick as soon as possible: work arrived for `job_type`. Safe from any thread."""
        log.debug("woken up by new work for %s", job_type or "a job type")
        self.schedule.wake()

    def stop(self) -> None:
        self.schedule.stop()

    # one tick -----------------------------------------------------------------------
    def tick(self) -> None:
        started = time.perf_counter()
        seen = self.observer.observe()
        self.actor.escalate_stops(seen.infos, seen.now, self.known)
        facts, claims = self.observer.decide(seen)
        allocation = allocate(claims, self.settings.budget)
        workers = {info.worker_id: info for info in seen.infos}
        self.actor.act(facts, claims, allocation, workers if seen.leader else None)
        self.publisher.export_types(facts, allocation)
        self._in_tail = any(fact.in_tail for fact in facts.values())
        self.publisher.tick_done(time.perf_counter() - started)
        self.publisher.export_budget(allocation)
        self.publisher.publish(seen, facts, allocation, self.observer, self.actor.stop_requested)
