"""Tuning: replay a grid of settings, keep the Pareto front of cost against p95 wait, recommend per type.

`--sweep threshold=1,10,100 idle_seconds=5,30` replays the project's policy
once per combination (the values apply to every job type of the trace). The
Pareto front is the combinations no other one beats on both cost and p95 row
wait. `--target-p95-wait S` then picks, for every job type on its own, the
cheapest combination whose p95 wait for that type is at most S (or, when none
is, the one with the lowest p95), prints those entries as a jobs.config.json
fragment and replays them once more to show what they cost together. Choosing
per type is sound because without a shared budget types do not interact;
with one (`--max-total-workers`) the final replay is what counts.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.config import JobType

#: Settings a sweep may vary (the ones the policy reads), and how their values are parsed.
TUNABLE: dict[str, Callable[[str], Any]] = {
    "threshold": int,
    "burst_threshold": int,
    "burst_size": int,
    "max_workers": int,
    "min_workers": int,
    "idle_seconds": float,
    "prefetch": int,
    "concurrency": int,
    "batch_size": int,
}
#: The grid `--target-p95-wait` searches when no `--sweep` is given.
DEFAULT_GRID = {"threshold": [1, 5, 20], "idle_seconds": [2.0, 10.0, 60.0], "max_workers": [10, 50]}


class SweepError(ValueError):
    """A --sweep argument names no tunable setting or has a value that is not a number."""


def parse_sweep(arguments: Sequence[str]) -> dict[str, list[Any]]:
    """`["threshold=1,10", "idle_seconds=5,30"]` -> {"threshold": [1, 10], "idle_seconds": [5.0, 30.0]}."""
    grid: dict[str, list[Any]] = {}
    for argument in arguments:
        name, sep, values = argument.partition("=")
        name = name.strip()
        if not sep or name not in TUNABLE:
            raise SweepError(f"--sweep {argument!r}: expected NAME=V1,V2,... with NAME one of {sorted(TUNABLE)}")
        try:
            grid[name] = [TUNABLE[name](value) for value in values.split(",") if value.strip()]
        except ValueError:
            raise SweepError(f"--sweep {argument!r}: every value of {name} must be a number") from None
        if not grid[name]:
            raise SweepError(f"--sweep {argument!r}: no values")
    return grid


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]


@dataclass
class Point:
    """One combination replayed: its settings, its total figures and each type's."""

    params: dict[str, Any]
    worker_seconds: float
    wait_p95: float
    job_types: dict[str, dict[str, Any]]

    def document(self) -> dict[str, Any]:
        return {"params": self.params, "worker_seconds": self.worker_seconds, "wait_p95": self.wait_p95}


def pareto(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both cost and p95 wait, cheapest first."""
    front: list[Point] = []
    for point in sorted(points, key=lambda p: (p.worker_seconds, p.wait_p95)):
        if not front or point.wait_p95 < front[-1].wait_p95:
            front.append(point)
    return front


def recommend(points: Sequence[Point], target: float) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per type, the cheapest settings meeting `target` (p95 wait, s); returns them and the types that miss it."""
    chosen: dict[str, dict[str, Any]] = {}
    missed: list[str] = []
    for name in points[0].job_types:
        meeting = [p for p in points if p.job_types[name]["wait_seconds"]["p95"] <= target]
        if meeting:
            best = min(
                meeting, key=lambda p: (p.job_types[name]["worker_seconds"], p.job_types[name]["wait_seconds"]["p95"])
            )
        else:
            missed.append(name)
            best = min(
                points, key=lambda p: (p.job_types[name]["wait_seconds"]["p95"], p.job_types[name]["worker_seconds"])
            )
        chosen[name] = dict(best.params)
    return chosen, missed


def fragment(chosen: dict[str, dict[str, Any]], config: dict[str, JobType]) -> dict[str, dict[str, Any]]:
    """A jobs.config.json fragment: each type's queue (as configured) and its recommended settings."""
    return {name: {"queue": config[name].queue, **params} for name, params in sorted(chosen.items())}


def fragment_text(document: dict[str, dict[str, Any]], limit: int = 20) -> str:
    """The fragment as JSON, one type per line; at most `limit` types (the file has all of them)."""
    items = list(document.items())
    lines = [f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in items[:limit]]
    text = "{\n" + ",\n".join(lines) + "\n}"
    if len(items) > limit:
        text += f"\n(and {len(items) - limit} more types, see recommended.config.json)"
    return text
