"""Load: five concurrent 100,000-row uploads to two job types, counted exactly, memory flat, scaler on time."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from harness.broker import Broker
from harness.stack import Stack
from tests.support import fault_report

pytestmark = pytest.mark.fault
ROWS = 100_000
PLAN = ["alpha", "beta", "alpha", "beta", "alpha"]


def test_five_concurrent_large_uploads(broker: Broker, tmp_path: Path) -> None:
    # max_workers 0: nothing consumes, so every confirmed row must still be in its queue at the end.
    stack = Stack(
        broker,
        tmp_path,
        {"alpha": {"handler": "sleep", "max_workers": 0}, "beta": {"handler": "sleep", "max_workers": 0}},
        tick_seconds=1.0,
    )
    stack.start()
    body = b"Date,Item Description,Quantity,Amount\n" + b"".join(
        b"2024-01-01,Item %d,%d,%d.50\n" % (i, i % 9 + 1, i) for i in range(ROWS)
    )
    process = psutil.Process(stack.producer.pid)
    idle_rss = process.memory_info().rss
    peak = [idle_rss]
    answers: list[httpx.Response] = []
    ticks: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            tick = stack.status()["tick"]
            ticks.append((tick["last_at"], tick["last_duration_ms"]))
            time.sleep(0.2)

    def upload(job_type: str) -> None:
        answers.append(stack.upload(body, job_type, timeout=600))

    try:
        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        threads = [threading.Thread(target=upload, args=(job_type,)) for job_type in PLAN]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()

        assert [a.status_code for a in answers] == [200] * len(PLAN), [a.text[:200] for a in answers]
        assert all(a.json()["rows"] == ROWS for a in answers)
        queued = {job_type: broker.queue_depth(stack.queue_of(job_type)) for job_type in ("alpha", "beta")}
        assert queued == {job_type: PLAN.count(job_type) * ROWS for job_type in queued}
        durations = sorted({at: ms for at, ms in ticks}.values())
        gaps = sorted(
            b - a for a, b in zip(sorted({at for at, _ in ticks}), sorted({at for at, _ in ticks})[1:], strict=False)
        )
        p50, p99 = statistics.median(durations), durations[int(0.99 * (len(durations) - 1))]
        mib = 1024 * 1024
        print(
            f"\nload: {len(PLAN)} x {ROWS:,} rows in {elapsed:.1f} s ({len(PLAN) * ROWS / elapsed:,.0f} rows/s); "
            f"producer RSS idle {idle_rss / mib:.0f} MiB, peak {peak[0] / mib:.0f} MiB; "
            f"scaler tick p50 {p50:.1f} ms, p99 {p99:.1f} ms, longest gap between ticks {max(gaps):.2f} s"
        )
        fault_report.record(
            fault_report.FaultRow(
                f"load: 5 concurrent 100k uploads, no workers (producer peak {peak[0] / mib:.0f} MiB; tick p50 {p50:.0f} ms, p99 {p99:.0f} ms)",
                len(PLAN) * ROWS,
                sum(queued.values()),
                0,
                len(PLAN) * ROWS - sum(queued.values()),
                None,
                fault_report.Counted.QUEUED,
            )
        )
        assert peak[0] < idle_rss + 150 * mib, "the producer's memory stays flat under concurrent large uploads"
        assert max(gaps) < 3.0, "the scaler keeps ticking under load"
    finally:
        done.set()
        stack.stop()
        for job_type in ("alpha", "beta"):
            with broker.channel() as channel:
                channel.queue_purge(stack.queue_of(job_type))
