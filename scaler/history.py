"""Six hours of every job type's backlog, workers, throughput and cost, in memory that does not grow.

The dashboard's charts read this (`/api/history?window=300|3600|21600`). Each window has its own tier
of fixed-width buckets, and every tick's sample goes into the current bucket of every tier: the last
5 minutes in 1-second buckets (every tick at the default 1 s interval), the last hour in 10-second
buckets, the whole retention (`SCALER_HISTORY_SECONDS`, 6 hours) in 60-second ones; a bucket is never
narrower than a second, and no tier holds more than `SCALER_HISTORY_POINTS` (360) of them per type.
A tier is a ring of numbers indexed by bucket number, so memory is a fixed amount per job type
whatever the tick rate (wake-ups and tail ticks can tick five times a second) and however long the
scaler runs: nothing is appended, a slot whose bucket is over is overwritten by a new one.

Within a bucket the gauges keep their peak (ready, unacked, live workers, desired workers: a backlog
or a burst is never averaged away) and the flows their sum (rows handled, worker-seconds, seconds
covered), so a window's cost is the same at every resolution. Rows handled come from the workers'
heartbeat counters (processed + failed), as each worker's increase since the tick before; cost is the
integral of live workers (starting, running and stopping: what a backend bills) over time. Scaling
events are kept beside the buckets, the newest `SCALER_HISTORY_MAX_EVENTS`, as markers for the charts.
"""

from __future__ import annotations

import math
import os
import threading
from array import array
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.control_messages import Heartbeat
from common.env import env_int
from common.errors import AutoscalerError

#: The longest window, and how long anything is kept (6 hours).
DEFAULT_HISTORY_SECONDS = 6 * 3600
#: Buckets per window per job type: the resolution of every chart (60-second buckets over 6 hours).
DEFAULT_HISTORY_POINTS = 360
#: Scaling events kept for the charts' markers (all types together).
DEFAULT_HISTORY_MAX_EVENTS = 2000
#: The shorter windows the dashboard offers, in seconds, when the retention is longer than they are.
SHORT_WINDOWS = (300, 3600)
#: Narrowest bucket: ticks closer together than this share one.
MIN_BUCKET_SECONDS = 1.0
#: An event's reason is cut to its first line and this many characters for a marker.
MAX_EVENT_REASON = 200

# A bucket's numbers, in this order, in a tier's flat array.
_NUMBER, _READY, _UNACKED, _WORKERS, _DESIRED, _ROWS, _COST, _COVERED = range(8)
_WIDTH = 8
_EMPTY = -1.0


class UnknownWindow(AutoscalerError):
    status = 400


@dataclass(frozen=True)
class HistorySettings:
    seconds: int = DEFAULT_HISTORY_SECONDS
    points: int = DEFAULT_HISTORY_POINTS
    max_events: int = DEFAULT_HISTORY_MAX_EVENTS

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> HistorySettings:
        return cls(
            seconds=env_int(
                "SCALER_HISTORY_SECONDS", DEFAULT_HISTORY_SECONDS, minimum=SHORT_WINDOWS[0], environ=environ
            ),
            points=env_int("SCALER_HISTORY_POINTS", DEFAULT_HISTORY_POINTS, minimum=10, environ=environ),
            max_events=env_int("SCALER_HISTORY_MAX_EVENTS", DEFAULT_HISTORY_MAX_EVENTS, minimum=0, environ=environ),
        )

    def windows(self) -> tuple[int, ...]:
        """The windows one can ask for: the short ones within the retention, and the retention itself."""
        return tuple(sorted({window for window in SHORT_WINDOWS if window < self.seconds} | {self.seconds}))


@dataclass(frozen=True)
class Sample:
    """One type at one tick. `ready` and `unacked` are None while the broker cannot be read."""

    ready: int | None
    unacked: int | None
    workers: int
    desired: int


def bucket_seconds(window: int, points: int) -> float:
    """The width of a window's buckets: `points` of them, but none narrower than a second."""
    return max(window / points, MIN_BUCKET_SECONDS)


class Tier:
    """One window's buckets of one type: a ring of `size` slots, slot = bucket number modulo size."""

    __slots__ = ("step", "size", "cells")

    def __init__(self, window: int, points: int) -> None:
        self.step = bucket_seconds(window, points)
        self.size = math.ceil(window / self.step) + 1
        self.cells = array("d", [_EMPTY]) * (self.size * _WIDTH)

    def add(self, now: float, sample: Sample, rows: int, cost: float, covered: float) -> None:
        number = math.floor(now / self.step)
        at = (number % self.size) * _WIDTH
        cells = self.cells
        if cells[at + _NUMBER] != number:  # this slot's bucket is over: it becomes the new one
            cells[at : at + _WIDTH] = array("d", (number, *_gauges(sample), rows, cost, covered))
            return
        for offset, value in enumerate(_gauges(sample), start=_READY):
            cells[at + offset] = _peak(cells[at + offset], value)
        cells[at + _ROWS] += rows
        cells[at + _COST] += cost
        cells[at + _COVERED] += covered

    def columns(self, since: float, now: float) -> dict[str, list[Any]]:
        """The buckets that start after `since` and by `now`, oldest first, one list per field."""
        out: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        last = math.floor(now / self.step)
        first = max(math.floor(since / self.step) + 1, last - self.size + 1)
        for number in range(first, last + 1):
            at = (number % self.size) * _WIDTH
            cells = self.cells[at : at + _WIDTH]
            if cells[_NUMBER] != number:
                continue  # no tick in that bucket
            covered = cells[_COVERED]
            out["t"].append(round(number * self.step, 3))
            for name, offset in (("ready", _READY), ("unacked", _UNACKED), ("workers", _WORKERS)):
                out[name].append(_whole(cells[offset]))
            out["desired"].append(_whole(cells[_DESIRED]))
            out["rows"].append(int(cells[_ROWS]))
            out["rows_per_second"].append(round(cells[_ROWS] / covered, 3) if covered > 0 else 0.0)
            out["worker_seconds"].append(round(cells[_COST], 3))
        return out


#: The fields of a window's answer, per job type (`t` is the bucket's start, seconds since the epoch).
COLUMNS = ("t", "ready", "unacked", "workers", "desired", "rows", "rows_per_second", "worker_seconds")


def _gauges(sample: Sample) -> tuple[float, float, float, float]:
    unknown = math.nan
    return (
        unknown if sample.ready is None else sample.ready,
        unknown if sample.unacked is None else sample.unacked,
        sample.workers,
        sample.desired,
    )


def _peak(kept: float, new: float) -> float:
    """The larger of two gauge values, where NaN (not known) loses to any number."""
    if math.isnan(kept):
        return new
    return kept if math.isnan(new) else max(kept, new)


def _whole(value: float) -> int | None:
    return None if math.isnan(value) else int(value)


@dataclass
class _TypeHistory:
    tiers: list[Tier]
    last_at: float | None = None
    last_workers: int = 0


class History:
    """The bounded store the control loop writes once a tick and the web threads read."""

    def __init__(self, settings: HistorySettings | None = None) -> None:
        self.settings = settings or HistorySettings()
        self.windows = self.settings.windows()
        self._lock = threading.Lock()
        self._types: dict[str, _TypeHistory] = {}
        #: Rows handled (processed + failed) by each worker at its last heartbeat seen.
        self._handled: dict[str, int] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=self.settings.max_events)
        self._began: float | None = None

    def record(self, now: float, samples: Mapping[str, Sample], heartbeats: Mapping[str, Heartbeat]) -> None:
        """Add one tick: a sample per type, and the heartbeats for the rows handled since the last tick.

        A type missing from `samples` is forgotten (it left the config and has no worker left).
        """
        with self._lock:
            if self._began is None:
                self._began = now
            rows = self._rows_handled(heartbeats)
            for name, sample in samples.items():
                series = self._types.get(name)
                if series is None:
                    series = self._types[name] = _TypeHistory([Tier(w, self.settings.points) for w in self.windows])
                covered = now - series.last_at if series.last_at is not None and now > series.last_at else 0.0
                for tier in series.tiers:
                    tier.add(now, sample, rows.get(name, 0), series.last_workers * covered, covered)
                series.last_at, series.last_workers = now, sample.workers
            for name in set(self._types) - set(samples):
                del self._types[name]

    def _rows_handled(self, heartbeats: Mapping[str, Heartbeat]) -> dict[str, int]:
        """Rows each type's workers handled since the last tick, from their heartbeat counters.

        A worker first seen now counts from zero if it started after this history began, and from its
        current count otherwise (its earlier rows belong to before the scaler was watching). A counter
        that went down is a new worker under an old id: it counts from zero.
        """
        handled: dict[str, int] = {}
        by_type: dict[str, int] = {}
        for worker_id, beat in heartbeats.items():
            total = beat.processed + beat.failed
            before = self._handled.get(worker_id)
            if before is None:
                before = 0 if self._began is None or beat.started_at >= self._began else total
            by_type[beat.job_type] = by_type.get(beat.job_type, 0) + (total - before if total >= before else total)
            handled[worker_id] = total
        self._handled = handled
        return by_type

    def event(self, ts: float, job_type: str, direction: str, reason: str) -> None:
        """Keep a scaling event (or a state change, or an error) as a marker for the charts."""
        first_line = reason.split("\n", 1)[0][:MAX_EVENT_REASON]
        with self._lock:
            self._events.append({"ts": ts, "job_type": job_type, "direction": direction, "reason": first_line})

    def parse_window(self, text: str | None) -> int:
        """The window (seconds) a query parameter asks for; the shortest when it asks for none."""
        if text is None:
            return self.windows[0]
        if not text.strip().isdigit() or int(text) not in self.windows:
            allowed = ", ".join(str(window) for window in self.windows)
            raise UnknownWindow(f"window must be one of {allowed} (seconds), got {text[:40]!r}")
        return int(text)

    def window(self, seconds: int, now: float) -> dict[str, Any]:
        """The last `seconds` of every type, at the resolution of that window's tier, and its events."""
        tier_index = self.windows.index(seconds)
        since = now - seconds
        with self._lock:
            job_types = {}
            for name, series in self._types.items():
                columns = series.tiers[tier_index].columns(since, now)
                totals = {"rows": sum(columns["rows"]), "worker_seconds": round(sum(columns["worker_seconds"]), 3)}
                job_types[name] = {"series": columns, "totals": totals}
            events = [event for event in self._events if since <= event["ts"] <= now]
        return {
            "window": seconds,
            "windows": list(self.windows),
            "step": bucket_seconds(seconds, self.settings.points),
            "now": now,
            "job_types": job_types,
            "events": events,
        }
