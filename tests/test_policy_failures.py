"""The policy's failure memory (failed starts, probes, backoff) and the operator's controls (pause, drain)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config import JobType
from scaler.backends.base import WorkerState
from scaler.policy import Backoff, Code, Control, QueueStats, State, TypeMemory, WorkerView, decide

JOB = JobType(name="new-job", queue="queue_new", threshold=10, burst_size=5, max_workers=8, idle_seconds=30)
BACKLOG = QueueStats(100, 0)


def failed(worker_id: str, started_at: float = 0.0, reason: str | None = "no handler module workers.new_job.handler"):
    return WorkerView(worker_id, WorkerState.FAILED, started_at, exit_code=2, failure_reason=reason)


def probe(worker_id: str = "p", started_at: float = 50.0, consumed: bool = False, state=WorkerState.STARTING):
    return WorkerView(worker_id, state, started_at, consumed=consumed)


@pytest.mark.parametrize(
    ("backoff", "failures", "delay"),
    [
        (Backoff(), 1, 5),
        (Backoff(), 2, 10),
        (Backoff(), 4, 40),
        (Backoff(), 7, 300),
        (Backoff(), 30, 300),
        (Backoff(1, 8), 5, 8),
    ],
)
def test_backoff_doubles_up_to_its_maximum(backoff: Backoff, failures: int, delay: float) -> None:
    assert backoff.delay(failures) == delay


def test_a_burst_that_fails_turns_the_type_failing_with_the_workers_own_error() -> None:
    exits = [failed(f"w{i}", started_at=i) for i in range(5)]
    decision = decide(JOB, BACKLOG, [], TypeMemory(), now=100.0, finished=exits)
    assert (decision.state, decision.code, decision.start) == (State.FAILING, Code.BACKOFF, 0)
    assert decision.new_failures == 5, "every failed start is counted for the metric"
    assert decision.memory.failures == 1, "one backoff step per tick that saw failures"
    assert decision.memory.retry_at == 105.0
    assert "no handler module workers.new_job.handler" in decision.reason

    # The same exits are listed again on the next ticks: not counted twice.
    again = decide(JOB, BACKLOG, [], decision.memory, now=101.0, finished=exits)
    assert again.new_failures == 0 and again.memory.failures == 1 and again.start == 0


@pytest.mark.parametrize(
    ("memory", "workers", "now", "start", "code"),
    [
        (TypeMemory(failures=1, retry_at=105.0, failure_reason="boom"), [], 104.0, 0, Code.BACKOFF),
        (TypeMemory(failures=1, retry_at=105.0, failure_reason="boom"), [], 105.0, 1, Code.PROBE),
        (TypeMemory(failures=3, retry_at=105.0, failure_reason="boom"), [probe()], 200.0, 0, Code.PROBING),
        (TypeMemory(failures=3, retry_at=105.0, failure_reason="boom"), [], 200.0, 1, Code.PROBE),
    ],
)
def test_one_probe_at_a_time_after_the_backoff(memory, workers, now, start, code) -> None:
    decision = decide(JOB, BACKLOG, workers, memory, now=now)
    assert (decision.state, decision.code, decision.start) == (State.FAILING, code, start)
    assert "boom" in decision.reason


def test_a_failed_probe_doubles_the_backoff() -> None:
    memory = TypeMemory(failures=2, retry_at=100.0, failure_reason="boom", counted=frozenset({"w0"}))
    decision = decide(JOB, BACKLOG, [], memory, now=130.0, finished=[failed("w0"), failed("p", started_at=120.0)])
    assert decision.memory.failures == 3 and decision.memory.retry_at == 130.0 + 20.0
    assert decision.memory.failed_started_at == 120.0


def test_a_probe_that_consumes_clears_the_failure_and_scaling_resumes() -> None:
    memory = TypeMemory(failures=3, retry_at=0.0, failure_reason="boom", failed_started_at=40.0)
    running = probe(consumed=True, state=WorkerState.RUNNING)
    decision = decide(JOB, BACKLOG, [running], memory, now=200.0)
    assert decision.memory.failures == 0 and decision.memory.failure_reason is None
    assert (decision.state, decision.code, decision.start) == (State.BURST, Code.BURST, 5)


def test_an_old_worker_that_consumed_before_the_failures_does_not_clear_them() -> None:
    memory = TypeMemory(failures=1, retry_at=500.0, failure_reason="ErrImagePull", failed_started_at=40.0)
    veteran = WorkerView("old", WorkerState.RUNNING, 1.0, consumed=True)
    decision = decide(JOB, BACKLOG, [veteran], memory, now=200.0)
    assert decision.state is State.FAILING and decision.memory.failures == 1


@pytest.mark.parametrize(
    "exit_view",
    [
        WorkerView("a", WorkerState.FAILED, 0.0, consumed=True, exit_code=1),  # crashed after consuming: a crash
        WorkerView("b", WorkerState.FAILED, 0.0, stop_requested=True, exit_code=-15),  # we stopped it
        WorkerView("c", WorkerState.SUCCEEDED, 0.0, exit_code=0),
        WorkerView("d", WorkerState.FAILED, 0.0, exit_code=-9),  # kill -9 by someone else while it started
        WorkerView("e", WorkerState.FAILED, 0.0),  # adopted after a restart: how it ended is unknown
    ],
)
def test_exits_that_are_not_failed_starts(exit_view: WorkerView) -> None:
    decision = decide(JOB, BACKLOG, [], TypeMemory(), now=10.0, finished=[exit_view])
    assert decision.memory.failures == 0 and decision.state is State.BURST


def test_a_platform_reason_without_an_exit_code_is_a_failed_start() -> None:
    pulled = WorkerView("k", WorkerState.FAILED, 0.0, failure_reason="ImagePullBackOff: worker-new:latest not found")
    decision = decide(JOB, BACKLOG, [], TypeMemory(), now=10.0, finished=[pulled])
    assert decision.state is State.FAILING and "ImagePullBackOff" in decision.reason


def test_without_the_workers_words_the_reason_is_the_exit_code() -> None:
    decision = decide(JOB, BACKLOG, [], TypeMemory(), now=10.0, finished=[failed("a", reason=None)])
    assert "exit 2" in decision.reason


def test_a_type_the_backend_finds_unusable_starts_nothing() -> None:
    reason = "no handler module workers.new_job.handler"
    decision = decide(JOB, BACKLOG, [], TypeMemory(), now=0.0, check=reason)
    assert (decision.state, decision.code, decision.start) == (State.FAILING, Code.CHECK_FAILED, 0)
    assert reason in decision.reason


def test_retry_forgets_the_failures() -> None:
    memory = TypeMemory(failures=5, retry_at=1000.0, failure_reason="boom").retried()
    assert decide(JOB, BACKLOG, [], memory, now=10.0).start == 5


def test_pause_stops_every_worker_busy_ones_after_their_row_and_keeps_rows() -> None:
    workers = [WorkerView("a", WorkerState.RUNNING, 1.0, busy=True), WorkerView("b", WorkerState.STARTING, 2.0)]
    decision = decide(JOB, BACKLOG, workers, TypeMemory(), now=0.0, control=Control.PAUSED)
    assert (decision.state, decision.code, decision.start) == (State.PAUSED, Code.PAUSED, 0)
    assert set(decision.stop) == {"a", "b"} and decision.desired == 0
    assert "ready 100 kept in the queue" in decision.reason
    held = decide(JOB, BACKLOG, [], decision.memory, now=1.0, control=Control.PAUSED)
    assert (held.start, held.stop, held.state) == (0, (), State.PAUSED)


def test_pause_beats_failing_and_check() -> None:
    memory = TypeMemory(failures=1, retry_at=0.0, failure_reason="boom")
    decision = decide(JOB, BACKLOG, [], memory, now=10.0, control=Control.PAUSED, check="broken")
    assert decision.state is State.PAUSED and decision.start == 0


def test_drain_works_off_the_backlog_then_holds_at_zero() -> None:
    job = JOB.model_copy(update={"min_workers": 1})
    busy = decide(job, BACKLOG, [], TypeMemory(), now=0.0, control=Control.DRAIN)
    assert (busy.state, busy.code, busy.start) == (State.DRAINING, Code.BURST, 5)
    workers = [WorkerView(f"w{i}", WorkerState.RUNNING, i) for i in range(2)]
    done = decide(job, QueueStats(0, 0), workers, busy.memory, now=10.0, control=Control.DRAIN)
    assert set(done.stop) == {"w0", "w1"}, "no idle_seconds wait and no warm pool while draining"
    held = decide(job, QueueStats(0, 0), [], done.memory, now=11.0, control=Control.DRAIN)
    assert (held.state, held.code, held.start) == (State.PAUSED, Code.DRAINED, 0) and held.memory.drained
    later = decide(job, QueueStats(50, 0), [], held.memory, now=12.0, control=Control.DRAIN)
    assert later.start == 0 and later.code is Code.DRAINED, "a drained type holds at zero until resumed"
    resumed = decide(job, QueueStats(50, 0), [], later.memory, now=13.0)
    assert (resumed.code, resumed.start) == (Code.WARM_POOL, 1) and not resumed.memory.drained


stories = st.lists(
    st.tuples(
        st.integers(0, 3), st.booleans(), st.floats(0, 20)
    ),  # failed exits this tick, a probe consumed, time step
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(stories)
def test_never_more_than_one_probe_in_flight_while_failing(story) -> None:
    """Replay a story of exits: while failing, at most one worker is ever starting or started per backoff."""
    memory, now, workers, finished, serial = TypeMemory(), 0.0, [], [], 0
    for exits, consumes, step in story:
        now += step
        for _ in range(exits):
            serial += 1
            finished.append(failed(f"f{serial}", started_at=now))
        if consumes and workers:
            workers = [probe(w.worker_id, w.started_at, consumed=True, state=WorkerState.RUNNING) for w in workers]
        was_failing = memory.failures > 0
        decision = decide(JOB, BACKLOG, workers, memory, now, finished=finished[-20:])
        if decision.state is State.FAILING:
            assert decision.start <= 1
            assert decision.start == 0 or not any(w.state is WorkerState.STARTING for w in workers)
            assert decision.start == 0 or now >= (decision.memory.retry_at or 0)
        if was_failing and decision.memory.failures == 0:
            assert any(w.consumed for w in workers), "only a consuming worker clears the failure"
        memory = decision.memory
        serial += 1
        workers = workers + [probe(f"n{serial}", now) for _ in range(decision.start)]
