"""The scaling policy, exhaustively: tables for the rules, properties for the invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config import JobType
from scaler.backends.base import WorkerState
from scaler.policy import Code, QueueStats, TypeMemory, WorkerView, decide

JOB = JobType(name="t", queue="q", threshold=20, burst_size=5, max_workers=8, idle_seconds=30)


def running(count: int, busy: bool = False, start: float = 0.0) -> list[WorkerView]:
    return [WorkerView(f"r{i}", WorkerState.RUNNING, start + i, busy=busy) for i in range(count)]


def starting(count: int) -> list[WorkerView]:
    return [WorkerView(f"s{i}", WorkerState.STARTING, 100.0 + i) for i in range(count)]


@pytest.mark.parametrize(
    ("stats", "workers", "start", "state", "reason", "code"),
    [
        (QueueStats(812, 0), [], 5, "burst", "burst +5: ready 812 > 40", Code("burst")),
        (QueueStats(41, 0), [], 5, "burst", "burst +5: ready 41 > 40", Code("burst")),
        (QueueStats(40, 0), running(1), 1, "scaling-up", "scale up +1: ready 40 > 20", Code("scale-up")),
        (QueueStats(21, 3), running(2), 1, "scaling-up", "scale up +1: ready 21 > 20", Code("scale-up")),
        (QueueStats(20, 0), running(1), 0, "busy", "ready 20, unacked 0, 1 worker", Code("busy")),
        (QueueStats(500, 0), running(6), 2, "burst", "burst +2: ready 500 > 40", Code("burst")),
        (QueueStats(500, 8), running(8), 0, "busy", "(max_workers 8)", Code("at-max")),
        (QueueStats(500, 0), starting(5), 0, "scaling-up", "waiting for 5 starting worker(s)", Code("wait-start")),
        (
            QueueStats(500, 0),
            running(2) + starting(1),
            0,
            "scaling-up",
            "waiting for 1 starting worker(s)",
            Code("wait-start"),
        ),
        (QueueStats(3, 0), [], 1, "scaling-up", "scale up +1: ready 3 and no worker", Code("no-worker")),
        (QueueStats(0, 0, retrying=50), [], 5, "burst", "burst +5: ready 50 > 40", Code("burst")),
        (QueueStats(3, 1), running(1), 0, "busy", "ready 3, unacked 1, 1 worker", Code("busy")),
    ],
)
def test_scale_up_rules(
    stats: QueueStats, workers: list[WorkerView], start: int, state: str, reason: str, code: Code
) -> None:
    decision = decide(JOB, stats, workers, TypeMemory(), now=1000.0)
    assert decision.start == start
    assert decision.stop == ()
    assert decision.state == state and decision.code is code
    growing = stats.backlog > JOB.threshold
    assert decision.desired == (JOB.max_workers if growing else len(workers) + start)
    assert reason in decision.reason


def test_broker_unreachable_decides_nothing_and_keeps_memory() -> None:
    memory = TypeMemory(idle_since=10.0)
    decision = decide(JOB, None, running(3), memory, now=1000.0)
    assert (decision.start, decision.stop, decision.state) == (0, (), "broker-unreachable")
    assert decision.memory == memory


def test_idle_clock_then_scale_down_newest_first() -> None:
    workers = running(3)
    first = decide(JOB, QueueStats(0, 0), workers, TypeMemory(), now=100.0)
    assert first.memory.idle_since == 100.0 and first.stop == () and first.reason == "idle 0/30 s"
    middle = decide(JOB, QueueStats(0, 0), workers, first.memory, now=112.0)
    assert middle.stop == () and middle.reason == "idle 12/30 s"
    last = decide(JOB, QueueStats(0, 0), workers, middle.memory, now=130.0)
    assert last.stop == ("r2", "r1", "r0")
    assert last.reason == "scale down -3: idle for 30 s" and last.state == "scaling-down"


@pytest.mark.parametrize("stats", [QueueStats(1, 0), QueueStats(0, 1), QueueStats(0, 0, retrying=1)])
def test_any_message_resets_the_idle_clock(stats: QueueStats) -> None:
    decision = decide(JOB, stats, running(2), TypeMemory(idle_since=0.0), now=1000.0)
    assert decision.memory.idle_since is None and decision.stop == ()


def test_min_workers_kept_warm_and_never_stopped() -> None:
    job = JOB.model_copy(update={"min_workers": 2})
    assert decide(job, QueueStats(0, 0), [], TypeMemory(), now=0.0).start == 2
    decision = decide(job, QueueStats(0, 0), running(3), TypeMemory(idle_since=0.0), now=100.0)
    assert decision.stop == ("r2",)


def test_busy_workers_are_never_stopped() -> None:
    decision = decide(JOB, QueueStats(0, 0), running(2, busy=True), TypeMemory(idle_since=0.0), now=100.0)
    assert decision.stop == ()


def test_unschedulable_workers_stop_further_scaling() -> None:
    stuck = [
        WorkerView(
            "p", WorkerState.STARTING, 0.0, unschedulable_reason="0/3 nodes are available: insufficient nvidia.com/gpu"
        )
    ]
    decision = decide(JOB, QueueStats(900, 0), stuck, TypeMemory(), now=100.0)
    assert decision.start == 0 and decision.state == "unschedulable"
    assert "insufficient nvidia.com/gpu" in decision.reason


def test_removed_type_drains_then_stops_without_waiting() -> None:
    busy = decide(JOB, QueueStats(5, 1), running(2), TypeMemory(), now=0.0, removed=True)
    assert busy.start == 0 and busy.stop == () and busy.state == "draining"
    idle = decide(JOB, QueueStats(0, 0), running(2), TypeMemory(), now=0.0, removed=True)
    assert set(idle.stop) == {"r0", "r1"}


counts = st.integers(min_value=0, max_value=5000)
jobs = st.builds(
    lambda threshold, extra, burst, maximum, minimum: JobType(
        name="t",
        queue="q",
        threshold=threshold,
        burst_threshold=threshold + extra,
        burst_size=burst,
        max_workers=maximum,
        min_workers=min(minimum, maximum),
        idle_seconds=30,
    ),
    st.integers(0, 100),
    st.integers(0, 100),
    st.integers(1, 10),
    st.integers(0, 20),
    st.integers(0, 3),
)
worker_lists = st.lists(
    st.builds(
        lambda i, state, busy: WorkerView(f"w{i}", state, float(i), busy=busy),
        st.integers(0, 10_000),
        st.sampled_from([WorkerState.STARTING, WorkerState.RUNNING]),
        st.booleans(),
    ),
    max_size=25,
    unique_by=lambda w: w.worker_id,
)


@settings(max_examples=400, deadline=None)
@given(jobs, counts, counts, counts, worker_lists, st.one_of(st.none(), st.floats(0, 1000)), st.floats(0, 2000))
def test_invariants(job, ready, unacked, retrying, workers, idle_since, now) -> None:
    stats = QueueStats(ready, unacked, retrying=retrying)
    memory = TypeMemory(idle_since=min(idle_since, now) if idle_since is not None else None)
    decision = decide(job, stats, workers, memory, now)
    # never above max_workers (a warm pool never exceeds it either: min <= max)
    assert decision.start == 0 or len(workers) + decision.start <= job.max_workers
    # never a scale-down while anything is ready, unacked or waiting for retry
    if ready or unacked or retrying:
        assert decision.stop == ()
        assert decision.memory.idle_since is None
    # never starts and stops at once; stops only existing, non-busy workers, and never below min_workers
    assert not (decision.start and decision.stop)
    ids = {w.worker_id: w for w in workers}
    assert all(worker_id in ids and not ids[worker_id].busy for worker_id in decision.stop)
    assert len(workers) - len(decision.stop) >= min(job.min_workers, len(workers))
    # no second scale-up while starting workers already cover a backlog
    if any(w.state is WorkerState.STARTING for w in workers) and len(workers) >= job.min_workers:
        assert decision.start == 0
    # burst size exact: never more than burst_size at once beyond the warm pool
    if decision.start and len(workers) >= job.min_workers:
        assert decision.start <= job.burst_size
        if stats.backlog > job.effective_burst_threshold and job.burst_size > 1:
            assert decision.start == min(job.burst_size, job.max_workers - len(workers))
