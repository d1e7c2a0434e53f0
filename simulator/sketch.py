"""Mergeable distributions of waits: many rows recorded at the cost of one piece, quantiles within 1 %.

The simulator never looks at rows one by one: a worker slot starts a run of
rows whose waits are spread evenly between two values, so a run is one
*piece* (`lo`, `hi`, `weight`), and a single row (or an upload's completion) a
piece with `lo == hi`. Pieces are buffered and folded, with numpy, into
per-job-type sums over fixed, geometrically spaced edges (1 % apart, from
1 ms to about 116 days). The cumulative count at every edge is then exact
(an even spread is a difference of two ramps, and a ramp's sum at an edge only
needs the sums of slopes and of slope x start below it); a quantile is
interpolated between the two edges around it, so it is within 1 % (or 1 ms)
of the exact one. Per-type sums add up to the total: the sketch merges.
"""

from __future__ import annotations

from array import array

import numpy as np

#: Edges of the fixed grid: 0, then 1 ms growing by 1 % (about 2,300 edges up to 1e7 s).
EDGES = np.concatenate(([0.0], 1e-3 * 1.01 ** np.arange(0, int(np.log(1e10) / np.log(1.01)) + 2)))
#: Pieces buffered before they are folded in with numpy.
FLUSH_PIECES = 200_000


class Sketch:
    """Distributions of one quantity for `types` job types (index 0..types-1)."""

    def __init__(self, types: int) -> None:
        self.types = types
        size = types * (len(EDGES) + 1)
        # slope, slope*start at starts; slope, slope*end at ends; point masses.
        self._sums = np.zeros((5, size))
        self.weights = np.zeros(types)
        self._buffer = array("d")

    def add(self, job_type: int, lo: float, hi: float, weight: float) -> None:
        """`weight` values spread evenly over [lo, hi] (a single value when lo == hi)."""
        self._buffer.extend((job_type, lo, hi, weight))
        if len(self._buffer) >= 4 * FLUSH_PIECES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        data = np.frombuffer(self._buffer, dtype=float).reshape(-1, 4)
        kind, lo, hi, weight = data[:, 0].astype(int), data[:, 1], data[:, 2], data[:, 3]
        self.weights += np.bincount(kind, weights=weight, minlength=self.types)
        stride = len(EDGES) + 1
        point = hi - lo <= 1e-12
        ramp = ~point
        slope = weight[ramp] / (hi[ramp] - lo[ramp])
        at_lo = kind[ramp] * stride + np.searchsorted(EDGES, lo[ramp], side="right")
        at_hi = kind[ramp] * stride + np.searchsorted(EDGES, hi[ramp], side="right")
        at_point = kind[point] * stride + np.searchsorted(EDGES, lo[point], side="right")
        size = self._sums.shape[1]
        for row, (index, values) in enumerate(
            (
                (at_lo, slope),
                (at_lo, slope * lo[ramp]),
                (at_hi, slope),
                (at_hi, slope * hi[ramp]),
                (at_point, weight[point]),
            )
        ):
            self._sums[row] += np.bincount(index, weights=values, minlength=size)
        self._buffer = array("d")

    def cdf(self, job_type: int | None = None) -> tuple[np.ndarray, float]:
        """(count at or below every edge, total weight) of one type, or of all types together."""
        self._flush()
        stride = len(EDGES) + 1
        sums = self._sums.reshape(5, self.types, stride)
        if job_type is None:
            part, total = sums.sum(axis=1), float(self.weights.sum())
        else:
            part, total = sums[:, job_type, :], float(self.weights[job_type])
        c = np.cumsum(part, axis=1)[:, : len(EDGES)]
        counts = EDGES * c[0] - c[1] - EDGES * c[2] + c[3] + c[4]
        return np.maximum.accumulate(np.clip(counts, 0, None)), total

    def quantiles(self, qs: tuple[float, ...], job_type: int | None = None) -> list[float]:
        counts, total = self.cdf(job_type)
        if total <= 0:
            return [0.0 for _ in qs]
        return [_inverse(counts, q * total) for q in qs]

    def histogram(self, edges: list[float], job_type: int | None = None) -> list[float]:
        """Counts between consecutive `edges` (the last bin takes everything above its lower edge)."""
        counts, total = self.cdf(job_type)
        at = [float(np.interp(edge, EDGES, counts)) for edge in edges[:-1]] + [total]
        return [max(at[i + 1] - at[i], 0.0) for i in range(len(edges) - 1)]


def _inverse(counts: np.ndarray, target: float) -> float:
    """The value below which `target` of the weight lies, linear between the two edges around it."""
    k = int(np.searchsorted(counts, target, side="left"))
    if k <= 0:
        return 0.0
    if k >= len(EDGES):
        return float(EDGES[-1])
    low, high = counts[k - 1], counts[k]
    fraction = (target - low) / (high - low) if high > low else 1.0
    return float(EDGES[k - 1] + fraction * (EDGES[k] - EDGES[k - 1]))
