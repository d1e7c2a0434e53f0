"""Sharing the worker budget across job types (`scaler.budget.allocate`): tables for the rules, properties for
the invariants (never over budget, never a busy worker stopped while an idle one could go)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config import Resources
from scaler.backends.base import WorkerState
from scaler.budget import Budget, Claim, allocate, worker_requests
from scaler.policy import Code, Decision, State, WorkerView


def workers(prefix: str, count: int, busy: int = 0, starting: int = 0) -> tuple[WorkerView, ...]:
    """`count` workers: the first `busy` busy, the last `starting` still starting."""
    return tuple(
        WorkerView(
            f"{prefix}{i}",
            WorkerState.STARTING if i >= count - starting else WorkerState.RUNNING,
            float(i),
            busy=i < busy,
        )
        for i in range(count)
    )


def claim(name: str, active: int, start: int = 0, priority: int = 0, busy: int = 0, **extra) -> Claim:
    held = workers(name[0], active, busy=busy)
    decision = Decision(start=start, state=State.SCALING_UP if start else State.BUSY, desired=active + start)
    return Claim(name, decision, active=held, priority=priority, **extra)


def test_no_budget_changes_nothing() -> None:
    claims = [claim("bulk", 6, start=5), claim("urgent", 0, start=5, priority=10)]
    result = allocate(claims, Budget())
    assert {name: d.start for name, d in result.decisions.items()} == {"bulk": 5, "urgent": 5}
    assert result.used == 6 and result.shares == {}


def test_contention_preempts_the_lower_priority_gracefully_idle_first() -> None:
    bulk = claim("bulk", 4, start=1, busy=2)
    urgent = claim("urgent", 0, start=2, priority=10)
    result = allocate([bulk, urgent], Budget(max_workers=4))
    assert result.shares == {"bulk": 2, "urgent": 2}
    cut = result.decisions["bulk"]
    assert (cut.state, cut.code, cut.start) == (State.SCALING_DOWN, Code.PREEMPTED, 0)
    assert set(cut.stop) == {"b2", "b3"}, "the idle workers go first"
    waiting = result.decisions["urgent"]
    assert (waiting.state, waiting.code, waiting.start) == (State.WAITING_FOR_BUDGET, Code.BUDGET, 0)
    assert waiting.reason == "waiting for budget: 4/4 held by bulk (priority 0), urgent (priority 10) first"


def test_busy_workers_are_asked_to_stop_when_no_idle_one_is_left() -> None:
    result = allocate([claim("bulk", 4, busy=4), claim("urgent", 0, start=3, priority=10)], Budget(max_workers=4))
    assert len(result.decisions["bulk"].stop) == 3


def test_freed_slots_go_to_the_higher_priority_and_are_not_taken_back() -> None:
    # bulk's two stopped workers have exited; bulk still has a backlog and wants more.
    bulk = claim("bulk", 2, start=1)
    urgent = claim("urgent", 0, start=2, priority=10)
    result = allocate([bulk, urgent], Budget(max_workers=4))
    assert result.decisions["urgent"].start == 2
    held_back = result.decisions["bulk"]
    assert (held_back.start, held_back.code) == (0, Code.BUDGET)
    assert "urgent (priority 10) first" in held_back.reason
    # Next tick: urgent's workers are starting (it wants no more); bulk still does not take their slots.
    again = allocate(
        [bulk, Claim("urgent", Decision(desired=2), active=workers("u", 2, starting=2), priority=10)],
        Budget(max_workers=4),
    )
    assert again.decisions["bulk"].start == 0 and again.decisions["bulk"].stop == ()


def test_stopping_workers_hold_their_slots_until_they_exit() -> None:
    bulk = Claim("bulk", Decision(desired=2), active=workers("b", 2), stopping=2)
    urgent = claim("urgent", 0, start=2, priority=10)
    result = allocate([bulk, urgent], Budget(max_workers=4))
    assert result.decisions["urgent"].start == 0 and result.used == 4
    assert result.decisions["bulk"].stop == ()


@pytest.mark.parametrize(
    ("weights", "shares"),
    [((1, 1), (3, 3)), ((2, 1), (4, 2)), ((1, 2), (2, 4)), ((5, 1), (5, 1))],
)
def test_equal_priorities_share_by_weight(weights, shares) -> None:
    claims = [claim("a", 0, start=6, weight=weights[0]), claim("b", 0, start=6, weight=weights[1])]
    result = allocate(claims, Budget(max_workers=6))
    assert (result.shares["a"], result.shares["b"]) == shares
    assert (result.decisions["a"].start, result.decisions["b"].start) == shares


def test_min_workers_first_even_for_the_lowest_priority() -> None:
    low = Claim("low", Decision(start=2, desired=2), min_workers=2)
    high = claim("high", 0, start=5, priority=10)
    result = allocate([low, high], Budget(max_workers=5))
    assert result.shares == {"low": 2, "high": 3}
    assert (result.decisions["low"].start, result.decisions["high"].start) == (2, 3)


def test_a_smaller_budget_stops_the_surplus_and_a_larger_one_lets_it_grow() -> None:
    claims = [claim("a", 4, start=2), claim("b", 4, priority=1)]
    smaller = allocate(claims, Budget(max_workers=6))
    assert len(smaller.decisions["a"].stop) == 2 and smaller.decisions["b"].stop == ()
    larger = allocate(claims, Budget(max_workers=10))
    assert larger.decisions["a"].start == 2


def test_a_removed_type_keeps_its_slots_until_its_workers_exit() -> None:
    removed = Claim("gone", Decision(state=State.DRAINING, desired=3), active=workers("g", 3, busy=3))
    new = claim("new", 0, start=3)
    result = allocate([removed, new], Budget(max_workers=4))
    assert result.decisions["new"].start == 1
    assert result.decisions["gone"].stop == () or len(result.decisions["gone"].stop) <= 2


def test_a_gpu_budget_counts_requests_not_workers() -> None:
    gpu = {"nvidia.com/gpu": 1.0}
    render = claim("render", 3, start=3, requests=gpu)
    cpu_only = claim("thumbs", 0, start=5, requests={"cpu": 0.5})
    result = allocate([render, cpu_only], Budget(resources={"nvidia.com/gpu": 4}))
    assert result.decisions["render"].start == 1
    assert result.decisions["thumbs"].start == 5, "types that need no GPU are not held back by the GPU budget"
    full = allocate([claim("render", 4, start=1, requests=gpu)], Budget(resources={"nvidia.com/gpu": 4}))
    assert full.decisions["render"].reason.startswith("waiting for budget: nvidia.com/gpu 4/4 held by render")
    assert full.resources_used == {"nvidia.com/gpu": 4.0}


def test_partial_grant_says_so() -> None:
    result = allocate([claim("a", 1, start=5)], Budget(max_workers=3))
    assert result.decisions["a"].start == 2 and "(budget allows +2)" in result.decisions["a"].reason


names = st.sampled_from(["a", "b", "c", "d"])
claims_strategy = st.lists(
    st.builds(
        lambda name, active, busy, starting, stopping, start, stop_own, priority, weight, minimum: Claim(
            name,  # like decide: a decision starts or stops, never both
            Decision(
                start=start,
                stop=tuple(f"{name}{i}" for i in range(0 if start else min(stop_own, active))),
                desired=active + start - (0 if start else min(stop_own, active)),
            ),
            active=workers(name, active, busy=min(busy, active), starting=min(starting, active)),
            stopping=stopping,
            priority=priority,
            weight=weight,
            min_workers=minimum,
            requests={"gpu": 1.0} if name in "ab" else {},
        ),
        names,
        st.integers(0, 6),
        st.integers(0, 6),
        st.integers(0, 2),
        st.integers(0, 3),
        st.integers(0, 5),
        st.integers(0, 1),
        st.integers(0, 3),
        st.sampled_from([0.5, 1.0, 2.0]),
        st.integers(0, 2),
    ),
    max_size=4,
    unique_by=lambda c: c.name,
)


@settings(max_examples=400, deadline=None)
@given(claims_strategy, st.one_of(st.none(), st.integers(0, 12)), st.one_of(st.none(), st.integers(0, 6)))
def test_invariants(claims, max_workers, gpus) -> None:
    budget = Budget(max_workers=max_workers, resources={"gpu": gpus} if gpus is not None else {})
    result = allocate(claims, budget)
    held = sum(c.held for c in claims)
    starts = sum(d.start for d in result.decisions.values())
    if max_workers is not None:
        assert starts == 0 or held + starts <= max_workers, "live workers never exceed the budget"
    if gpus is not None:
        gpu_held = sum(c.held for c in claims if c.name in "ab")
        gpu_starts = sum(result.decisions[c.name].start for c in claims if c.name in "ab")
        assert gpu_starts == 0 or gpu_held + gpu_starts <= gpus
    for c in claims:
        decision = result.decisions[c.name]
        assert decision.start <= c.decision.start, "the budget never adds workers a type did not want"
        assert not (decision.start and decision.stop)
        ids = {w.worker_id: w for w in c.active}
        assert set(c.decision.stop) <= set(decision.stop) <= set(ids)
        stopped_busy = [i for i in decision.stop if ids[i].busy and i not in c.decision.stop]
        kept_idle = [w for w in c.active if not w.busy and w.worker_id not in decision.stop]
        assert not (stopped_busy and kept_idle), "idle workers are preempted before busy ones"


def test_a_worker_costs_its_requests_or_else_its_limits() -> None:
    resources = Resources(requests={"cpu": "500m", "memory": "64Mi"}, limits={"cpu": 1, "nvidia.com/gpu": 1})
    assert worker_requests(resources) == {"cpu": 0.5, "memory": 64 * 2**20, "nvidia.com/gpu": 1.0}


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(0, 8),
    st.integers(1, 8),
    st.lists(st.booleans(), min_size=5, max_size=25),
)
def test_no_flapping_over_ticks(budget_size, bulk_start, urgent_want, exits) -> None:
    """Replay ticks: stopped workers exit when `exits` says so, started ones run at once. Bulk (which always
    wants more) never starts a worker while urgent still waits for a slot of its share, grows only within its
    own share, and live workers never exceed the budget."""
    budget = Budget(max_workers=budget_size)
    bulk = [WorkerView(f"b{i}", WorkerState.RUNNING, float(i)) for i in range(min(bulk_start, budget_size))]
    urgent: list[WorkerView] = []
    stopping: list[str] = []
    serial = 100
    for exit_now in exits:
        if exit_now:
            stopping = []
        claims = [
            Claim(
                "bulk",
                Decision(start=2, desired=8, state=State.SCALING_UP),
                active=tuple(bulk),
                stopping=len(stopping),
            ),
            Claim(
                "urgent",
                Decision(start=max(urgent_want - len(urgent), 0), desired=urgent_want, state=State.BURST),
                active=tuple(urgent),
                priority=10,
            ),
        ]
        result = allocate(claims, budget)
        bulk_starts, urgent_starts = result.decisions["bulk"].start, result.decisions["urgent"].start
        if len(urgent) + urgent_starts < result.shares["urgent"]:
            assert bulk_starts == 0, "bulk takes no freed slot while urgent still waits for one"
        assert bulk_starts == 0 or len(bulk) + bulk_starts <= result.shares["bulk"], "bulk grows only within its share"
        stopped = set(result.decisions["bulk"].stop)
        stopping += sorted(stopped)
        bulk = [w for w in bulk if w.worker_id not in stopped]
        for name, workers in (("bulk", bulk), ("urgent", urgent)):
            for _ in range(result.decisions[name].start):
                serial += 1
                workers.append(WorkerView(f"{name[0]}{serial}", WorkerState.RUNNING, float(serial)))
        assert len(bulk) + len(urgent) + len(stopping) <= max(budget_size, bulk_start), "never over budget"
    if exits[-1] and len(exits) > 3:
        assert len(urgent) == min(urgent_want, budget_size) or stopping
