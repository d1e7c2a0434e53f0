"""A run's figures in the agreed `summary.json` format (docs/simulation.md), and the table printed on the terminal.

The format is shared with the dashboard's Simulate view: keys are added,
never renamed. Per policy, per job type and in total: cost (`worker_seconds`),
`busy_fraction`, row wait (arrival to handler start) and upload completion
percentiles, `peak_workers`, `starts`; plus `unfinished_rows` (rows still
queued when the drain limit ran out, counted with the wait they had by then).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.config import JobType
from simulator.engine import TIMELINE_POINTS, Assumptions, Outcome, Totals
from simulator.sketch import Sketch
from simulator.traces import Trace

QUANTILES = (0.5, 0.95, 0.99)
#: Bins of the wait histogram in the summary (seconds; the last bin holds everything above 1800 s).
WAIT_EDGES = [0.0, 0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 1e7]
#: The job-type settings a summary records (what the simulation depends on).
CONFIG_FIELDS = (
    "threshold",
    "burst_threshold",
    "burst_size",
    "max_workers",
    "min_workers",
    "idle_seconds",
    "prefetch",
    "concurrency",
    "batch_size",
    "stop_grace_seconds",
    "priority",
    "weight",
)
#: What the model assumes beyond the settings: printed in the report, kept in the summary.
MODEL_STATEMENTS = {
    "policy": "the project's policy is scaler.policy.decide and scaler.budget.allocate, imported and called per tick",
    "ticks": "a type is decided every tick_seconds while it has work or starting workers, at once on an upload "
    "(wake-up), at the end of idle_seconds and every 0.2 s while its last rows are in hand (for that type only; "
    "the real loop then ticks every type)",
    "queue_counts": "the policy sees ready and unacked as RabbitMQ counts them, with no delay (the scaler reads "
    "queue totals fresh within about 0.1 s); worker busy flags without the heartbeat's delay",
    "service": "every row of an upload takes the same handler time; a worker slot (concurrency) starts rows one "
    "after another, batch_size at a time, FIFO across uploads, each to the slot free first",
    "prefetch": "prefetch moves rows from ready to unacked in what the policy sees; prefetched rows still go to "
    "the first free slot of the type",
    "workers": "a worker costs from its start request to its exit; it consumes worker_start_seconds after the "
    "request and exits worker_stop_seconds after a stop request once its rows in hand are done (at most "
    "stop_grace_seconds)",
    "failures": "no worker fails, no row is retried, the broker is always reachable",
    "keda": "KEDA ScaledJob + RabbitMQ scaler at defaults: every pollingInterval creates min(maxReplicaCount, "
    "ceil(ready / target)) - running Jobs, each one pod that handles one row and exits (a cold start per row)",
    "fixed": "fixed:N keeps N warm workers per job type for the whole run",
}


def summary(
    trace: Trace,
    config: dict[str, JobType],
    assumptions: Assumptions,
    outcomes: list[Outcome],
    pareto: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The summary document of one run (every policy replayed over the same trace)."""
    document: dict[str, Any] = {
        "version": 1,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "trace": {
            "path": ", ".join(trace.paths),
            "format": trace.format.value,
            "attribution": trace.attribution,
            "start_seconds": trace.start_seconds,
            "hours": trace.hours if trace.hours is not None else round(trace.duration * trace.speedup / 3600, 4),
            "speedup": trace.speedup,
            "uploads": len(trace.uploads),
            "rows": trace.rows,
            "job_types": len(trace.job_types),
        },
        "config": {name: {f: getattr(job, f) for f in CONFIG_FIELDS} for name, job in sorted(config.items())},
        "assumptions": assumptions_document(trace, assumptions),
        "policies": {outcome.policy: policy_document(outcome) for outcome in outcomes},
    }
    if pareto is not None:
        document["pareto"] = pareto
    return document


def assumptions_document(trace: Trace, assumptions: Assumptions) -> dict[str, Any]:
    values = asdict(assumptions)
    budget = values.pop("budget")
    values["budget_max_workers"] = budget["max_workers"]
    values["budget_resources"] = dict(budget["resources"])
    return {**values, **{f"trace_{k}": v for k, v in trace.assumptions.items()}, **MODEL_STATEMENTS}


def policy_document(outcome: Outcome) -> dict[str, Any]:
    lanes = outcome.lanes
    total = Totals()
    for lane in lanes:
        for name, value in vars(lane.totals).items():
            setattr(total, name, getattr(total, name) + value)
    total.peak_workers = int(max(outcome.timeline["workers"], default=0))
    total.peak_workers = max(total.peak_workers, max((lane.totals.peak_workers for lane in lanes), default=0))
    return {
        "total": figures(total, outcome.waits, outcome.completions, None),
        "job_types": {
            lane.job.name: figures(lane.totals, outcome.waits, outcome.completions, lane.index) for lane in lanes
        },
        "timeline": downsample(outcome.timeline),
        "wait_histogram": {
            "edges": WAIT_EDGES,
            "counts": [round(c, 3) for c in outcome.waits.histogram(WAIT_EDGES)],
        },
        "end_seconds": round(outcome.end, 3),
        "events": outcome.events,
    }


def figures(totals: Totals, waits: Sketch, completions: Sketch, index: int | None) -> dict[str, Any]:
    wait = waits.quantiles(QUANTILES, index)
    done = completions.quantiles(QUANTILES, index)
    return {
        "worker_seconds": round(totals.worker_seconds, 3),
        "busy_fraction": round(totals.busy_seconds / totals.worker_seconds, 4) if totals.worker_seconds else 0.0,
        "wait_seconds": {f"p{round(q * 100)}": round(v, 3) for q, v in zip(QUANTILES, wait, strict=True)},
        "completion_seconds": {f"p{round(q * 100)}": round(v, 3) for q, v in zip(QUANTILES, done, strict=True)},
        "peak_workers": totals.peak_workers,
        "starts": totals.starts,
        "rows": totals.rows,
        "uploads": totals.uploads,
        "unfinished_rows": totals.unfinished_rows,
    }


def downsample(timeline: dict[str, list[float]]) -> dict[str, list[float]]:
    """At most TIMELINE_POINTS points: every k-th sample."""
    stride = max(-(-len(timeline["t"]) // TIMELINE_POINTS), 1)
    return {key: values[::stride] for key, values in timeline.items()}


def _commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def write(document: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "summary.json"
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return path


def table(document: dict[str, Any]) -> str:
    """One line per policy: cost, busy share, wait and completion percentiles, peak, cold starts."""
    head = (
        f"{'policy':<12} {'worker-s':>12} {'busy':>6} {'wait p50':>9} {'p95':>9} {'p99':>9} "
        f"{'done p95':>9} {'peak':>5} {'starts':>8} {'unfinished':>10}"
    )
    lines = [head, "-" * len(head)]
    for name, policy in document["policies"].items():
        t = policy["total"]
        w, c = t["wait_seconds"], t["completion_seconds"]
        lines.append(
            f"{name:<12} {t['worker_seconds']:>12,.0f} {t['busy_fraction']:>6.1%} {_s(w['p50'])} {_s(w['p95'])} "
            f"{_s(w['p99'])} {_s(c['p95'])} {t['peak_workers']:>5} {t['starts']:>8,} {t['unfinished_rows']:>10,}"
        )
    trace = document["trace"]
    lines.append(
        f"trace: {trace['format']}, {trace['uploads']:,} uploads, {trace['rows']:,} rows, "
        f"{trace['job_types']} job types, {trace['hours']:g} h from {trace['start_seconds']:g} s, "
        f"speedup {trace['speedup']:g}"
    )
    if trace["attribution"]:
        lines.append(f"data: {trace['attribution']}")
    return "\n".join(lines)


def _s(seconds: float) -> str:
    return f"{seconds:>8.2f}s" if seconds < 1000 else f"{seconds:>8.0f}s"
