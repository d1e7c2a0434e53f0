"""Share one worker budget across job types: the second pure step of a tick, after `decide`.

`decide` says what each type wants on its own; `allocate(claims, budget)`
turns those wants into what may happen when every type draws on the same
budget: at most `max_workers` live workers of all types together and, per
resource name (`nvidia.com/gpu`, `cpu`, ...), at most the budgeted sum of their
requests. Workers that are starting or stopping hold their slots until they
have exited, so the budget is never exceeded by live workers.

The share is computed from scratch from the same snapshot every tick:
`min_workers` first, then higher `priority` first, and within one priority
slot by slot to the type with the lowest share per `weight`. A type holding
more than its share is preempted by graceful stops (starting workers first,
then idle, then busy ones, which finish the row in hand); a type below its
share starts workers only into slots that are free now. Because the share
depends only on what the types want, a type that gave up slots does not take
them back while a higher one still wants them: no flapping. No I/O, no clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from kubernetes.utils.quantity import parse_quantity

from common.config import Resources
from scaler.backends.base import WorkerState
from scaler.policy import Code, Decision, State, WorkerView


@dataclass(frozen=True)
class Budget:
    """The limits every type shares; `None` and an empty mapping mean no limit."""

    max_workers: int | None = None
    resources: Mapping[str, float] = field(default_factory=dict)

    @property
    def limited(self) -> bool:
        return self.max_workers is not None or bool(self.resources)


@dataclass(frozen=True)
class Claim:
    """One type at the budget: its decision, its rank, the workers it holds and what one worker costs."""

    name: str
    decision: Decision
    active: Sequence[WorkerView] = ()
    stopping: int = 0
    priority: int = 0
    weight: float = 1.0
    min_workers: int = 0
    requests: Mapping[str, float] = field(default_factory=dict)

    @property
    def held(self) -> int:
        return len(self.active) + self.stopping


@dataclass(frozen=True)
class Allocation:
    decisions: dict[str, Decision]
    #: Workers each type may keep (its share); absent when nothing is limited.
    shares: dict[str, int]
    used: int
    held: dict[str, int]
    resources_used: dict[str, float]


def allocate(claims: Sequence[Claim], budget: Budget) -> Allocation:
    """The decisions of every type once they share `budget` (see the module's docstring)."""
    held = {claim.name: claim.held for claim in claims}
    used = _usage(claims, held)
    if not budget.limited:
        decisions = {claim.name: claim.decision for claim in claims}
        return Allocation(decisions, {}, sum(held.values()), held, used)
    shares = _shares(claims, budget)
    free = _free(budget, sum(held.values()), used)
    decisions = {}
    for claim in _ranked(claims):
        decision, free = _apply(claim, shares, free, claims, budget)
        decisions[claim.name] = decision
    return Allocation(decisions, shares, sum(held.values()), held, used)


def _ranked(claims: Sequence[Claim]) -> list[Claim]:
    return sorted(claims, key=lambda claim: (-claim.priority, claim.name))


def _usage(claims: Sequence[Claim], counts: Mapping[str, int]) -> dict[str, float]:
    used: dict[str, float] = {}
    for claim in claims:
        for resource, amount in claim.requests.items():
            used[resource] = used.get(resource, 0.0) + amount * counts.get(claim.name, 0)
    return used


def _free(budget: Budget, workers: int, used: Mapping[str, float]) -> dict[str, float]:
    """What is left of every limit ("" stands for the worker count)."""
    free = {resource: total - used.get(resource, 0.0) for resource, total in budget.resources.items()}
    if budget.max_workers is not None:
        free[""] = budget.max_workers - workers
    return free


def _cost(claim: Claim, budget: Budget) -> dict[str, float]:
    cost = {resource: claim.requests.get(resource, 0.0) for resource in budget.resources}
    if budget.max_workers is not None:
        cost[""] = 1.0
    return cost


def _fits(cost: Mapping[str, float], free: Mapping[str, float], count: int = 1) -> bool:
    return all(free[key] - amount * count >= -1e-9 for key, amount in cost.items())


def _take(cost: Mapping[str, float], free: Mapping[str, float], count: int) -> dict[str, float]:
    return {key: value - cost.get(key, 0.0) * count for key, value in free.items()}


def _shares(claims: Sequence[Claim], budget: Budget) -> dict[str, int]:
    """How many workers each type may keep: min_workers first, then by priority, then by weight."""
    share = {claim.name: 0 for claim in claims}
    free = _free(budget, 0, {})
    costs = {claim.name: _cost(claim, budget) for claim in claims}
    for claim in _ranked(claims):
        while share[claim.name] < min(claim.min_workers, claim.decision.desired) and _fits(costs[claim.name], free):
            share[claim.name] += 1
            free = _take(costs[claim.name], free, 1)
    for priority in sorted({claim.priority for claim in claims}, reverse=True):
        tier = [claim for claim in claims if claim.priority == priority]
        wanted = {c.name: max(c.decision.desired - share[c.name], 0) for c in tier}
        total = {key: sum(costs[c.name][key] * wanted[c.name] for c in tier) for key in free}
        if _fits(total, free):  # the whole tier fits: no need to share it slot by slot
            for c in tier:
                share[c.name] += wanted[c.name]
            free = _take(total, free, 1)
            continue
        free = _fair_share(tier, share, costs, free)
    return share


def _fair_share(
    tier: Sequence[Claim], share: dict[str, int], costs: Mapping[str, Mapping[str, float]], free: dict[str, float]
) -> dict[str, float]:
    """Slot by slot to the type of the tier with the lowest share per weight (a heap: a type that does not fit
    now never fits later, as `free` only shrinks). Fills `share`; returns what is left free."""
    heap = [((share[c.name] + 1) / c.weight, c.name, c) for c in tier if share[c.name] < c.decision.desired]
    heapq.heapify(heap)
    while heap:
        _, name, claim = heapq.heappop(heap)
        if not _fits(costs[name], free):
            continue
        share[name] += 1
        free = _take(costs[name], free, 1)
        if share[name] < claim.decision.desired:
            heapq.heappush(heap, ((share[name] + 1) / claim.weight, name, claim))
    return free


def _apply(
    claim: Claim, shares: Mapping[str, int], free: dict[str, float], claims: Sequence[Claim], budget: Budget
) -> tuple[Decision, dict[str, float]]:
    """One type's decision within its share and what is free now; returns it and what is left free."""
    decision = claim.decision
    share = shares[claim.name]
    active = len(claim.active)
    if active > share and active - len(decision.stop) > share:
        return _preempt(claim, active - share, claims), free
    if not decision.start:
        return decision, free
    cost = _cost(claim, budget)
    allowed = min(decision.start, max(share - active, 0))
    while allowed and not _fits(cost, free, allowed):
        allowed -= 1
    free = _take(cost, free, allowed)
    if allowed == decision.start:
        return decision, free
    if allowed:
        return replace(decision, start=allowed, reason=f"{decision.reason} (budget allows +{allowed})"), free
    reason = waiting_reason(claim, claims, budget)
    return replace(decision, start=0, state=State.WAITING_FOR_BUDGET, code=Code.BUDGET, reason=reason), free


def _preempt(claim: Claim, excess: int, claims: Sequence[Claim]) -> Decision:
    """Give slots back by graceful stops: starting workers first, then idle, then busy (after their row)."""
    chosen = set(claim.decision.stop)
    order = sorted(
        (w for w in claim.active if w.worker_id not in chosen),
        key=lambda w: (w.state is not WorkerState.STARTING, w.busy, -w.started_at),
    )
    extra = tuple(w.worker_id for w in order[: excess - len(chosen)])
    ahead = _ahead_of(claim, claims)
    return replace(
        claim.decision,
        start=0,
        stop=claim.decision.stop + extra,
        state=State.SCALING_DOWN,
        code=Code.PREEMPTED,
        reason=f"preempted -{excess}: the budget goes to {ahead} first",
    )


def waiting_reason(claim: Claim, claims: Sequence[Claim], budget: Budget) -> str:
    """`waiting for budget: 4/4 held by bulk (priority 0), urgent (priority 10) first`."""
    holders = sorted((c for c in claims if c.held), key=lambda c: (-c.held, c.name))
    names = ", ".join(_label(c) for c in holders) or "workers still stopping"
    return f"waiting for budget: {_limit_text(claims, budget)} held by {names}, {_ahead_of(claim, claims)} first"


def _ahead_of(claim: Claim, claims: Sequence[Claim]) -> str:
    """The types the budget serves before `claim`'s spare wants: higher priorities, or itself if none."""
    higher = [c for c in _ranked(claims) if c.priority > claim.priority and c.decision.desired]
    return ", ".join(_label(c) for c in higher) if higher else _label(claim)


def _label(claim: Claim) -> str:
    return f"{claim.name} (priority {claim.priority})"


def _limit_text(claims: Sequence[Claim], budget: Budget) -> str:
    """The budget that is exhausted, as used/total: the worker count, else the fullest resource."""
    workers = sum(c.held for c in claims)
    if budget.max_workers is not None and workers >= budget.max_workers:
        return f"{workers}/{budget.max_workers}"
    used = _usage(claims, {c.name: c.held for c in claims})
    if budget.resources:
        resource = max(
            budget.resources, key=lambda r: used.get(r, 0.0) / budget.resources[r] if budget.resources[r] else 1
        )
        return f"{resource} {_number(used.get(resource, 0.0))}/{_number(budget.resources[resource])}"
    return f"{workers}/{budget.max_workers}"


def _number(value: float) -> str:
    return f"{value:g}"


def worker_requests(resources: Resources) -> dict[str, float]:
    """What one worker counts against resource budgets: its requests, else its limits (as Kubernetes
    defaults a missing request to the limit)."""
    amounts = {**resources.limits, **resources.requests}
    return {name: float(parse_quantity(amount)) for name, amount in amounts.items()}
