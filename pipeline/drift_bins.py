"""Rows placed among the sorted reference sample of the drift tests, in one pass.

The two-sample test needs, per scored partition, how many rows fall
between consecutive values of the reference sample (m ~ 20,000 training
scores): exactly ``bincount(searchsorted(sample, ll, side))`` for both
sides.  A binary search per row is ~100 ns (branch misses), which made
the drift counts cost a third of scoring itself.  :class:`SampleBins`
instead indexes the sample once with a uniform grid of ~4 buckets per
value over its range; a row finds its bucket by arithmetic and finishes
with a binary search inside it (a few values), so the counts stay exact,
ties included, at ~20 ns per row.

A separate module so that numba loads only when counts are taken (the
CLI commands that only read drift verdicts never compile it).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: grid buckets per reference value
BUCKETS_PER_VALUE = 4


_RECENT: dict = {}  # id(sample) -> (sample, SampleBins): the index of the references in use


def sample_bins(sample: np.ndarray) -> "SampleBins":
    """The :class:`SampleBins` of ``sample``, built once per sample object (a few kept)."""
    held = _RECENT.get(id(sample))
    if held is not None and held[0] is sample:
        return held[1]
    if len(_RECENT) >= 8:
        _RECENT.clear()
    bins = _RECENT[id(sample)] = (sample, SampleBins(sample))
    return bins[1]


class SampleBins:
    """The bucket index of a sorted reference sample.

    Parameters
    ----------
    sample : ndarray of shape (m,), float64, sorted, finite
    """

    def __init__(self, sample: np.ndarray):
        self.sample = np.ascontiguousarray(sample, dtype=np.float64)
        m = self.sample.size
        self.lo, hi = float(self.sample[0]), float(self.sample[-1])
        n_buckets = max(1, BUCKETS_PER_VALUE * m)
        self.scale = n_buckets / (hi - self.lo) if hi > self.lo else 0.0
        # each value's bucket by the very arithmetic the rows use (monotone in the value), so
        # a row's bucket b holds exactly the candidates: values before starts[b] have smaller
        # buckets (so are below the row), values from starts[b + 1] larger ones (above it)
        buckets = np.minimum(((self.sample - self.lo) * self.scale).astype(np.int64), n_buckets)
        self.starts = np.searchsorted(buckets, np.arange(n_buckets + 2), side="left").astype(np.int64)

    def counts(self, ll) -> tuple[np.ndarray, np.ndarray]:
        """``(hist_right, hist_left)`` of the rows ``ll`` (n,): each (m + 1,) int64."""
        m = self.sample.size
        right, left = np.zeros(m + 1, np.int64), np.zeros(m + 1, np.int64)
        _place(np.ascontiguousarray(ll, dtype=np.float64), self.sample, self.starts, self.lo, self.scale,
               right, left)
        return right, left


@njit(nogil=True, cache=True)
def _bound(sample, x, lo, hi):
    """The first index in [lo, hi) whose value is >= x, else hi."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if sample[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(nogil=True, cache=True)
def _place(ll, sample, starts, lo, scale, right, left):
    m = sample.shape[0]
    hi = sample[m - 1]
    n_buckets = starts.shape[0] - 2
    for i in range(ll.shape[0]):
        x = ll[i]
        if x < lo:
            right[0] += 1
            left[0] += 1
            continue
        if not x <= hi:  # above the sample, or NaN (placed last, as searchsorted does)
            left[m] += 1
            right[m] += 1
            continue
        b = min(int((x - lo) * scale), n_buckets)
        a, z = starts[b], starts[b + 1]
        j = _bound(sample, x, a, z)
        left[j] += 1
        while j < m and sample[j] == x:  # ties with sample values: 'right' counts them as below
            j += 1
        right[j] += 1
