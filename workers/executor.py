"""Executors: the threads that run a job type's handler, away from the connection's thread.

The consumer `submit`s deliveries; `concurrency` threads take them (one row,
or a batch of up to `batch_size` gathered for at most `batch_wait_ms`), run
the hooks' `before_handle` and the handler, and put the outcomes on
`finished`. The connection's thread is woken once per group of outcomes, not
once per row: while it is busy acking, outcomes pile up and are taken
together, which is what lets acks coalesce.

A batch that raises is split in halves, each handed to the handler again,
down to single rows, so only the rows that fail on their own are retried.

A call that runs past `timeout_seconds` is given up (`overdue`): its rows are
failed by the consumer and, if the thread ever comes back, what it returns is
dropped and the thread ends.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from common.config import JobType
from workers.context import BatchContext, Context
from workers.delivery import Delivery, Outcome, Status
from workers.handlers import Handler
from workers.hooks import Hooks

#: (delivery, parsed row, its context)
Work = tuple[Delivery, dict[str, Any], Context]


class Executor:
    def __init__(self, job_type: JobType, handler: Handler, hooks: Hooks, worker_id: str) -> None:
        self.job_type = job_type
        self.handler = handler
        self.hooks = hooks
        self.worker_id = worker_id
        self.jobs: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self.finished: deque[Outcome] = deque()
        #: thread ident -> (monotonic start, deliveries) of every handler call in progress
        self.running: dict[int, tuple[float, list[Delivery]]] = {}
        self.given_up: set[int] = set()
        self.stopping = False
        self.wake: Callable[[], None] = lambda: None
        self._wake_pending = False
        self._batch_wait = job_type.batch_wait_ms / 1000
        self._logger = logging.getLogger("handler")
        self._threads = [
            threading.Thread(target=self._loop, name=f"handler-{n}", daemon=True) for n in range(job_type.concurrency)
        ]

    # called on the connection's thread -------------------------------------------------
    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, delivery: Delivery) -> None:
        self.jobs.put(delivery)

    def take_finished(self) -> list[Outcome]:
        self._wake_pending = False  # before draining: an outcome added after the drain wakes us again
        taken = []
        while self.finished:
            taken.append(self.finished.popleft())
        return taken

    def take_unstarted(self) -> list[Delivery]:
        """Every submitted delivery no thread has taken yet (a stopping worker gives them back)."""
        taken = []
        while True:
            try:
                delivery = self.jobs.get_nowait()
            except queue.Empty:
                return taken
            if delivery is None:
                self.jobs.put(None)
                return taken
            taken.append(delivery)

    def overdue(self, limit: float) -> list[Delivery]:
        """Deliveries of calls running longer than `limit` s; those calls are given up."""
        now = time.monotonic()
        late: list[Delivery] = []
        for ident, (started, deliveries) in list(self.running.items()):
            if now - started > limit and ident not in self.given_up:
                self.given_up.add(ident)
                late.extend(deliveries)
        return late

    def current_message(self) -> str | None:
        """The message id of one row in progress, for the status heartbeat."""
        running = next(iter(list(self.running.values())), None)
        return running[1][0].message_id if running else None

    def close(self) -> None:
        """One end marker per thread."""
        for _ in self._threads:
            self.jobs.put(None)

    # on the executor threads --------------------------------------------------------------
    def _loop(self) -> None:
        ident = threading.get_ident()
        while (first := self.jobs.get()) is not None:
            self._run(self._gather(first), ident)
            if ident in self.given_up:
                return  # the consumer has failed these rows and is replacing this worker

    def _gather(self, first: Delivery) -> list[Delivery]:
        batch = [first]
        deadline = time.monotonic() + self._batch_wait
        while len(batch) < self.job_type.batch_size:
            try:
                delivery = self.jobs.get(timeout=max(deadline - time.monotonic(), 0.0001))
            except queue.Empty:
                break
            if delivery is None:
                self.jobs.put(None)
                break
            batch.append(delivery)
        return batch

    def _run(self, batch: list[Delivery], ident: int) -> None:
        early: list[Outcome] = []
        work: list[Work] = []
        for delivery in batch:
            try:
                outcome = self._before(delivery) or self._prepare(delivery, work)
            except Exception as error:  # noqa: BLE001 - a message no hook can read must not kill the thread
                outcome = Outcome(delivery, Status.FAILED, f"cannot be handled: {_describe(error)}", hopeless=True)
            if outcome is not None:
                early.append(outcome)
        if early:
            self._post(early)
        if work:
            self.running[ident] = (time.monotonic(), [item[0] for item in work])
            outcomes = self._call(work)
            del self.running[ident]
            if ident not in self.given_up:
                self._post(outcomes)

    def _before(self, delivery: Delivery) -> Outcome | None:
        if self.stopping:
            return Outcome(delivery, Status.RETURNED)
        return self.hooks.before_handle(delivery)

    def _prepare(self, delivery: Delivery, work: list[Work]) -> Outcome | None:
        """Parse the body; an unreadable one fails for good, a readable one joins `work`."""
        try:
            row = json.loads(delivery.body)
            if not isinstance(row, dict):
                raise ValueError("the body is JSON but not an object")
        except ValueError as error:
            return Outcome(delivery, Status.FAILED, f"unreadable body: {error}", hopeless=True)
        work.append((delivery, row, self._context(delivery)))
        return None

    def _context(self, delivery: Delivery) -> Context:
        message_id = delivery.message_id
        return Context(
            message_id=message_id,
            upload_id=str(delivery.headers.get("upload_id", "")),
            attempt=delivery.attempt,
            job_type=self.job_type.name,
            worker_id=self.worker_id,
            logger=logging.LoggerAdapter(self._logger, {"message_id": message_id}),
            redelivered=delivery.redelivered,
        )

    def _call(self, work: list[Work]) -> list[Outcome]:
        if self.handler.handle_batch is not None:
            return self._call_batch(work)
        return [self._call_row(item) for item in work]

    def _call_row(self, item: Work) -> Outcome:
        delivery, row, context = item
        started = time.perf_counter()
        try:
            self.handler.handle(row, context)  # type: ignore[misc]
        except Exception as error:  # noqa: BLE001 - any handler failure is retried, then parked
            return Outcome(delivery, Status.FAILED, _describe(error), time.perf_counter() - started)
        return Outcome(delivery, Status.SUCCEEDED, None, time.perf_counter() - started)

    def _call_batch(self, work: list[Work]) -> list[Outcome]:
        """One call for the whole batch; on failure, halves until the failing rows stand alone."""
        started = time.perf_counter()
        context = BatchContext([item[2] for item in work], self.job_type.name, self.worker_id, self._logger)
        try:
            self.handler.handle_batch([item[1] for item in work], context)  # type: ignore[misc]
        except Exception as error:  # noqa: BLE001 - split and retried below, then parked
            if len(work) == 1:
                return [Outcome(work[0][0], Status.FAILED, _describe(error), time.perf_counter() - started)]
            middle = len(work) // 2
            return self._call_batch(work[:middle]) + self._call_batch(work[middle:])
        seconds = time.perf_counter() - started
        return [Outcome(item[0], Status.SUCCEEDED, None, seconds) for item in work]

    def _post(self, outcomes: list[Outcome]) -> None:
        self.finished.extend(outcomes)
        if not self._wake_pending:
            self._wake_pending = True
            self.wake()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
