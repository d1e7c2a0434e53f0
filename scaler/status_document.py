"""The `/api/status` document, built from one tick's observations and decisions.

The dashboard, `./manage.sh status` and the tests all read this one document;
its per-type fields (`queue`, `ready`, `unacked`, `consumers`, `workers`,
`max_workers`, `state`, `reason`, ...) are a public contract. Pure functions:
the control loop hands in what it saw and decided, nothing here does I/O.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from common.control_messages import Heartbeat
from scaler.backends.base import LIVE_STATES, WorkerInfo, WorkerState
from scaler.budget import Allocation, Budget
from scaler.policy import Decision
from scaler.policy_inputs import TypeFacts, busy, effective_state


def type_document(facts: TypeFacts, decision: Decision, share: int | None, now: float, leader: bool) -> dict[str, Any]:
    job_type, stats, live = facts.job_type, facts.stats, facts.live
    count = {state: sum(1 for _, s in live if s is state) for state in LIVE_STATES}
    stuck = next((info.unschedulable_reason for info, _ in live if info.unschedulable_reason), None)
    memory = decision.memory
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
        "desired": decision.desired,
        "share": share,
        "max_workers": job_type.max_workers,
        "min_workers": job_type.min_workers,
        "priority": job_type.priority,
        "weight": job_type.weight,
        "threshold": job_type.threshold,
        "burst_threshold": job_type.effective_burst_threshold,
        "burst_size": job_type.burst_size,
        "idle_seconds": job_type.idle_seconds,
        "idle_for": round(now - memory.idle_since, 1) if memory.idle_since is not None else None,
        "state": decision.state.value,
        "code": decision.code.value,
        "reason": decision.reason if leader else f"standby (not the leader): {decision.reason}",
        "control": facts.control.value,
        "failures": memory.failures,
        "failure_reason": memory.failure_reason,
        "next_probe_in": round(max(memory.retry_at - now, 0), 1) if memory.failures and memory.retry_at else None,
        "unschedulable": stuck,
        "removed": facts.removed,
    }


def worker_document(info: WorkerInfo, heartbeat: Heartbeat | None, stop_requested: bool) -> dict[str, Any]:
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
        "busy": busy(heartbeat),
        "unschedulable_reason": info.unschedulable_reason,
        "failure_reason": info.failure_reason,
        "details": info.details,
    }


def budget_document(budget: Budget, allocation: Allocation) -> dict[str, Any]:
    """Used / total, by type: for the dashboard's budget bar and the metrics."""
    return {
        "max_workers": budget.max_workers,
        "used": allocation.used,
        "by_type": {name: held for name, held in allocation.held.items() if held},
        "resources": {
            name: {"used": allocation.resources_used.get(name, 0.0), "total": total}
            for name, total in budget.resources.items()
        },
    }


def tick_document(interval: float, last_duration: float, durations: deque[float], last_at: float) -> dict[str, Any]:
    return {
        "interval": interval,
        "last_duration_ms": round(last_duration * 1000, 2),
        "p50_ms": _percentile(durations, 0.50),
        "p99_ms": _percentile(durations, 0.99),
        "last_at": last_at,
    }


def _percentile(values: deque[float], fraction: float) -> float | None:
    """The `fraction` percentile of the recent tick durations, in ms (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(int(fraction * len(ordered)), len(ordered) - 1)] * 1000, 2)
