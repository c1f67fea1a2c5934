"""Rows placed among the sorted reference sample of the drift tests, in one pass.

The two-sample test needs, per scored partition, how many rows fall
between consecutive values of the reference sample (m ~ 20,000 training
scores): exactly ``bincount(searchsorted(sample, ll, side))`` for both
sides.  A binary search per row is ~100 ns (branch misses), which made
the drift counts cost a third of scoring itself.  :class:`SampleBins`
instead indexes the sample once with a uniform grid of ~8 buckets per
value over its range; a row finds its bucket by arithmetic and compares
itself with the bucket's values: without a branch when the bucket holds
at most :data:`FEW` of them (~96% of the values of a training sample),
by a binary search otherwise.  The counts stay exact, ties included.

The tables (grid, sample, counts: ~1 MB) do not stay in cache while the
scoring kernels stream a chunk through it, and rows in arrival order read
them at random.  So the rows are first grouped by runs of
``2**GROUP_SHIFT`` buckets (a counting sort on the bucket number, two
sequential passes) and then placed group by group, each group reading a
small stretch of the tables: ~16 ns per row against ~29 ns placed in
arrival order, with an 8 MB chunk streamed through the cache between calls
as scoring does (one measurement on a 2-vCPU AMD EPYC; ~10-12 ns after the
changes below).

The same compiled pass sums the chunk's log-likelihoods and counts its
components, reading the scoring rows' columns where they lie (strided,
float): the copies, casts and ``bincount`` that did this before cost as
much again as the placement itself in the scoring pass's chunk tasks
(summary CPU per 16 chunks of 62,500 rows: ~21-36 ms -> ~20 ms).  The
rows go through in blocks of :data:`BLOCK`, whose scratch arrays stay in
cache: a scoring partition is often one chunk of 250,000 rows or more, where
whole-chunk grouping cost ~19 ns per row and blocks ~15 (median of 25, with
the cache flushed between calls).

A separate module so that numba loads only when counts are taken (the
CLI commands that only read drift verdicts never compile it).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: grid buckets per reference value
BUCKETS_PER_VALUE = 8
#: buckets holding at most this many values are searched without a branch
FEW = 2
#: rows are placed in groups of 2**GROUP_SHIFT consecutive buckets
GROUP_SHIFT = 5
#: rows grouped and placed this many at a time, so the grouping's scratch arrays stay in cache
BLOCK = 16_384


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
        # FEW values past the end, above every row, so a bucket's fixed comparisons stay in bounds
        self.padded = np.concatenate([self.sample, np.full(FEW, np.inf)])
        m = self.sample.size
        self.lo, hi = float(self.sample[0]), float(self.sample[-1])
        n_buckets = max(1, BUCKETS_PER_VALUE * m)
        self.scale = n_buckets / (hi - self.lo) if hi > self.lo else 0.0
        # each value's bucket by the very arithmetic the rows use (monotone in the value), so
        # a row's bucket b holds exactly the candidates: values before starts[b] have smaller
        # buckets (so are below the row), values from starts[b + 1] larger ones (above it)
        buckets = np.minimum(((self.sample - self.lo) * self.scale).astype(np.int64), n_buckets)
        # int32: half the cache lines of the lookup that every row makes
        self.starts = np.searchsorted(buckets, np.arange(n_buckets + 2), side="left").astype(np.int32)

    def count_into(self, ll, component, occupancy, right, left) -> float:
        """Add one chunk's rows to float64 counts in place; return the sum of ``ll``.

        Parameters
        ----------
        ll : ndarray of shape (n,), float64, any stride (a column of the scoring rows)
        component : ndarray of shape (n,), integer or integral float
            Each row's component; ``occupancy[c]`` (K,) gains one per row of
            component c (components outside [0, K) are not counted).
        occupancy : ndarray of shape (K,), float64
        right, left : ndarray of shape (m + 1,), float64
            Gain one at ``#(sample <= x)``, resp. ``#(sample < x)``, per row x
            (NaN rows at m, as ``searchsorted`` places them).

        The chunk's rows are read in place: no copy, one pass for the sum,
        the occupancy and the buckets, then the placement.
        """
        if np.shape(component) != np.shape(ll):
            raise ValueError(f"component has shape {np.shape(component)} but the log-likelihoods {np.shape(ll)}: "
                             "pass one component per scored row")
        return _place(ll, component, self.padded, self.sample.size, self.starts, self.lo, self.scale,
                      occupancy, right, left)


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
def _place(ll, component, padded, m, starts, lo, scale, occupancy, right, left):
    hi = padded[m - 1]
    n = ll.shape[0]
    K = occupancy.shape[0]
    n_buckets = starts.shape[0] - 2
    n_groups = (n_buckets >> GROUP_SHIFT) + 2
    group_end = np.empty(n_groups, np.int64)
    bucket = np.empty(min(n, BLOCK), np.int32)
    xs = np.empty(min(n, BLOCK))
    bs = np.empty(min(n, BLOCK), np.int32)
    total = 0.0
    for s0 in range(0, n, BLOCK):
        s1 = min(n, s0 + BLOCK)
        # one pass: the sum, the occupancy, and the rows below or above the sample (or NaN,
        # placed last as searchsorted does) at once; the others counted by group of buckets,
        # then their values and buckets laid out in group order
        group_end[:] = 0
        below_all = 0
        above_all = 0
        for i in range(s0, s1):
            x = ll[i]
            total += x
            c = int(component[i])
            if 0 <= c < K:
                occupancy[c] += 1.0
            if x < lo:
                bucket[i - s0] = -1
                below_all += 1
            elif not x <= hi:
                bucket[i - s0] = -1
                above_all += 1
            else:
                b = min(int((x - lo) * scale), n_buckets)
                bucket[i - s0] = b
                group_end[(b >> GROUP_SHIFT) + 1] += 1
        right[0] += below_all
        left[0] += below_all
        right[m] += above_all
        left[m] += above_all
        for g in range(n_groups - 1):
            group_end[g + 1] += group_end[g]
        for i in range(s0, s1):
            b = bucket[i - s0]
            if b >= 0:
                g = b >> GROUP_SHIFT
                at = group_end[g]
                group_end[g] = at + 1
                xs[at] = ll[i]
                bs[at] = b
        for r in range(s1 - s0 - below_all - above_all):
            x = xs[r]
            b = bs[r]
            a, z = starts[b], starts[b + 1]
            if z - a <= FEW:
                # values before a are below x and values from z above it (their buckets are
                # lower and higher), so counting the FEW values from a places x exactly
                below = 0
                upto = 0
                for u in range(FEW):
                    v = padded[a + u]
                    below += v < x
                    upto += v <= x
                left[a + below] += 1.0
                right[a + upto] += 1.0
                continue
            j = _bound(padded, x, a, z)
            left[j] += 1.0
            while j < m and padded[j] == x:  # ties with sample values: 'right' counts them as below
                j += 1
            right[j] += 1.0
    return total
