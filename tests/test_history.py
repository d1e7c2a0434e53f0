"""The charts' history (scaler.history): six hours in bounded memory, downsampled without losing peaks or cost."""

from __future__ import annotations

import tracemalloc

import pytest

from common.control_messages import Heartbeat
from scaler.history import History, HistorySettings, Sample, UnknownWindow

HOURS_6 = 6 * 3600
START = 1_699_999_200.0  # a whole hour, so every tier's buckets line up with the run
#: The bound the README states: the history of one job type, whatever the tick rate and however long it runs.
MAX_BYTES_PER_TYPE = 80_000


def beat(worker_id: str, job_type: str, processed: int, started_at: float = START + 1, failed: int = 0) -> Heartbeat:
    return Heartbeat(worker_id, job_type, "busy", processed=processed, failed=failed, started_at=started_at)


def run(history: History, seconds: float, tick: float, types: list[str], workers: int = 2, rate: float = 3.0) -> float:
    """`seconds` of ticks every `tick`: `workers` per type, each handling `rate` rows/s, the backlog a sawtooth."""
    steps = round(seconds / tick)
    for i in range(steps):
        now = START + i * tick
        samples = {name: Sample(i % 500, 1, workers, workers) for name in types}
        beats = {
            f"{name}-{w}": beat(f"{name}-{w}", name, int(i * tick * rate)) for name in types for w in range(workers)
        }
        history.record(now, samples, beats)
    return START + (steps - 1) * tick


def test_six_hours_stay_within_the_stated_bound_per_type() -> None:
    types = ["a"]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        history = History(HistorySettings())
        now = run(history, HOURS_6, 1.0, types)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    print(f"history of 6 h at a 1 s tick: {used / len(types) / 1000:.1f} kB per job type")
    assert used / len(types) < MAX_BYTES_PER_TYPE
    for window, step, points in ((300, 1.0, 300), (3600, 10.0, 360), (HOURS_6, 60.0, 360)):
        answer = history.window(window, now)
        assert answer["step"] == step
        for name in types:
            assert len(answer["job_types"][name]["series"]["t"]) <= points + 1


def test_the_bound_does_not_depend_on_the_tick_rate() -> None:
    history = History(HistorySettings())
    run(history, 600, 0.2, ["fast"])  # five ticks a second, the tail-watch rate
    cells = [len(tier.cells) for tier in history._types["fast"].tiers]
    slow = History(HistorySettings())
    run(slow, 600, 5.0, ["slow"])
    assert cells == [len(tier.cells) for tier in slow._types["slow"].tiers]
    assert history.window(300, START + 599.8)["job_types"]["fast"]["series"]["t"][-1] == START + 599


def test_downsampled_windows_keep_cost_rates_and_peaks() -> None:
    history = History(HistorySettings())
    spike_at = START + 2 * 3600 + 17
    for i in range(HOURS_6):
        now = START + i
        ready = 5000 if now == spike_at else 3
        history.record(now, {"t": Sample(ready, 0, 2, 4)}, {"a": beat("a", "t", 3 * i), "b": beat("b", "t", 2 * i)})
    now = START + HOURS_6 - 1
    six_hours = history.window(HOURS_6, now)["job_types"]["t"]
    # Two live workers for every second after the first tick: the integral, exact at 60 s buckets.
    assert six_hours["totals"]["worker_seconds"] == pytest.approx(2 * (HOURS_6 - 1))
    assert six_hours["totals"]["rows"] == 5 * (HOURS_6 - 1)
    series = six_hours["series"]
    assert max(series["ready"]) == 5000, "a one-tick backlog peak survives a 60-second bucket"
    assert series["t"][series["ready"].index(5000)] == spike_at - (spike_at % 60)
    assert set(series["rows_per_second"][1:]) == {5.0}
    assert set(series["desired"]) == {4}
    hour = history.window(3600, now)["job_types"]["t"]
    assert hour["totals"]["worker_seconds"] == pytest.approx(2 * 3600, abs=2 * 10)
    assert 5000 not in hour["series"]["ready"], "the spike is older than the hour"
    five = history.window(300, now)["job_types"]["t"]["series"]
    assert len(five["t"]) == 300 and five["t"][-1] == now


def test_old_buckets_are_overwritten_not_kept() -> None:
    history = History(HistorySettings(seconds=600, points=60))
    assert history.windows == (300, 600)
    history.record(START, {"t": Sample(999, 0, 1, 1)}, {})
    history.record(START + 700, {"t": Sample(1, 0, 1, 1)}, {})
    series = history.window(600, START + 700)["job_types"]["t"]["series"]
    assert series["ready"] == [1]
    assert series["worker_seconds"] == [700.0], "the worker lived all along, even with no tick in between"


def test_heartbeat_counters_count_rows_once() -> None:
    history = History(HistorySettings())
    old = beat("old", "t", 10_000, started_at=START - 60)  # running before the scaler: no spike of its past
    history.record(START, {"t": Sample(0, 0, 2, 2)}, {"old": old})
    history.record(START + 1, {"t": Sample(0, 0, 2, 2)}, {"old": beat("old", "t", 10_004, START - 60)})
    new = beat("new", "t", 7, started_at=START + 1.5, failed=1)  # started since: all its rows count
    history.record(START + 2, {"t": Sample(0, 0, 2, 2)}, {"new": new})  # "old" gone from the heartbeats
    history.record(START + 3, {"t": Sample(0, 0, 2, 2)}, {"new": beat("new", "t", 2, START + 1.5)})  # reset
    series = history.window(300, START + 3)["job_types"]["t"]["series"]
    assert series["rows"] == [0, 4, 8, 2]
    assert series["rows_per_second"] == [0.0, 4.0, 8.0, 2.0]


def test_unknown_broker_counts_are_gaps_and_types_that_leave_are_forgotten() -> None:
    history = History(HistorySettings())
    history.record(START, {"a": Sample(None, None, 0, 0), "b": Sample(1, 1, 0, 0)}, {})
    assert history.window(300, START)["job_types"]["a"]["series"]["ready"] == [None]
    history.record(START + 1, {"b": Sample(1, 1, 0, 0)}, {})
    assert set(history.window(300, START + 1)["job_types"]) == {"b"}


def test_events_are_bounded_cut_and_filtered_by_window() -> None:
    history = History(HistorySettings(max_events=4))
    for i in range(6):  # at START, +100, ..., +500
        history.event(START + i * 100, "t", "up", f"burst +{i}: ready 99 > 10\nsecond line")
    assert len(history._events) == 4
    events = history.window(300, START + 500)["events"]
    assert [event["reason"] for event in events] == [f"burst +{i}: ready 99 > 10" for i in (2, 3, 4, 5)]
    events = history.window(300, START + 350)["events"]
    assert [event["ts"] for event in events] == [START + 200, START + 300]


def test_a_window_must_be_one_offered() -> None:
    history = History(HistorySettings())
    assert history.parse_window(None) == 300
    assert history.parse_window("21600") == HOURS_6
    for text in ("60", "abc", "-300", "300.5"):
        with pytest.raises(UnknownWindow, match="window must be one of 300, 3600, 21600"):
            history.parse_window(text)
