"""Measuring what a test or a benchmark bounds: the median time of an action, the peak of Python memory."""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def median_seconds(action: Callable[[], object], times: int = 5) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


@contextmanager
def peak_memory() -> Iterator[Callable[[], int]]:
    """Python memory allocated at the peak of the block, in bytes (read it after the block).

    tracemalloc sees every Python allocation, so it is exact where RSS is noisy,
    but it slows Python down: time nothing inside the block.
    """
    peak = 0
    tracemalloc.start()
    try:
        yield lambda: peak
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
