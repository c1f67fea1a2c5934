"""Row-chunked training data with a single primitive: map over chunks, reduce.

Every algorithm in the engine (EM, k-means||, k-means++, scans) is written
against :meth:`ChunkedData.map_reduce`.  ``fn(block, start, *args)``
receives one chunk as a NumPy array and the global index of its first
row, and returns a value with an associative ``merge``; the per-chunk
values are folded by :func:`merge_all`, the one fold of the engine (the
Dask tasks that merge several chunks use it too), so the reduction has
the same shape wherever it runs.

Data with row weights (``sample_weight``) hands every chunk function its
rows' weights with the block: ``fn(block, start, *args, weights=w)``,
``w`` float64 of shape (n,).  Unweighted data calls ``fn(block, start,
*args)`` exactly as before, so a chunk function that knows nothing of
weights still runs on it, and fails loudly on weighted data.  Inside the
Dask tasks a weighted chunk travels as the pair ``(rows, weights)``
(:func:`as_block`, :func:`apply_chunk`).

* :class:`NumpyData` (here) runs the chunks on a local thread pool (the
  kernels release the GIL).  In-memory input never goes to a cluster.
* :class:`~gmm_engine._dask_data.DaskData` runs them on Dask; see
  :mod:`gmm_engine._dask_plan` for the graphs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: at most this many rows per block when chunking an in-memory array ...
NUMPY_BLOCK_ROWS = 65_536
#: ... and at least this many blocks per thread (if blocks keep >= 4,096 rows),
#: so that the last blocks do not leave a thread idle
NUMPY_BLOCKS_PER_THREAD = 8


def n_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def merge_all(values):
    """Merge mergeable values in order, as a balanced binary tree.

    Adjacent values are merged pairwise, level by level, an odd last value
    waiting for the next level.  The values are consumed as they come (a
    generator is fine): at most one partial result per level is held, so a
    task folding its chunks one after the other keeps O(log n) values.

    Raises
    ------
    ValueError
        No values.
    """
    stack = []  # (leaves, value), leaves strictly decreasing powers of two
    for value in values:
        leaves = 1
        while stack and stack[-1][0] == leaves:
            value = stack.pop()[1].merge(value)
            leaves *= 2
        stack.append((leaves, value))
    if not stack:
        raise ValueError("nothing to merge")
    out = stack.pop()[1]
    while stack:  # the complete subtrees, right to left
        out = stack.pop()[1].merge(out)
    return out


def as_block(value):
    """A loaded chunk as chunk functions take it: an ndarray, or ``(rows, weights)`` for weighted data."""
    if isinstance(value, tuple):
        rows, weights = value
        return np.asarray(rows), np.asarray(weights, dtype=np.float64)
    return np.asarray(value)


def apply_chunk(fn, block, start, args):
    """``fn(block, start, *args)``, with ``weights=`` when ``block`` is a ``(rows, weights)`` pair."""
    if isinstance(block, tuple):
        rows, weights = block
        return fn(rows, start, *args, weights=weights)
    return fn(block, start, *args)


def run_blocks(run, n_blocks):
    """``[run(i) for i in range(n_blocks)]`` on up to ``n_threads()`` threads."""
    workers = min(n_threads(), n_blocks)
    if workers <= 1:
        return [run(i) for i in range(n_blocks)]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(n_blocks)))


class ChunkedData:
    """Interface shared by in-memory and Dask-backed data.

    Attributes
    ----------
    n_samples, n_features : int
    dtype : numpy dtype
        float32 or float64.
    weights : ndarray or dask array of shape (n_samples,), or None
        Row weights handed to every chunk function with its block (see
        the module docstring); None for unweighted data.  Validated
        before the data is built, except the values of lazy weights,
        which the first scan checks.
    values_checked : bool
        The rows and weights were checked for NaN, inf and invalid
        weights when the data was built (in memory); otherwise a scan, or
        the first pass itself, checks them.
    missing : bool
        Rows may hold NaN entries, which the passes marginalise
        (``GaussianMixture(missing='marginalize')``, :mod:`gmm_engine._missing`);
        the checks then refuse only infinities and rows with every feature NaN.
    """

    n_samples: int
    n_features: int
    dtype: np.dtype
    weights = None
    values_checked = False
    missing = False

    @property
    def weighted(self) -> bool:
        return self.weights is not None

    def map_reduce(self, fn, *args):  # pragma: no cover - interface
        raise NotImplementedError

    def take(self, indices) -> np.ndarray:  # pragma: no cover - interface
        """Rows at the given global indices, in the given order, as float64."""
        raise NotImplementedError


class NumpyData(ChunkedData):
    """An in-memory (n, D) array processed in row blocks on local threads.

    Its rows and weights are checked when they are validated
    (``values_checked``).

    Parameters
    ----------
    X : ndarray of shape (n, D), float32 or float64, C-contiguous
    block_rows : int, optional
    weights : ndarray of shape (n,), float64, optional
        Validated row weights.
    """

    values_checked = True

    def __init__(self, X: np.ndarray, block_rows: int | None = None, weights: np.ndarray | None = None):
        self.X = X
        self.weights = weights
        self.n_samples, self.n_features = X.shape
        self.dtype = X.dtype
        n = self.n_samples
        rows = block_rows or NUMPY_BLOCK_ROWS
        n_blocks = max(-(-n // rows), min(NUMPY_BLOCKS_PER_THREAD * n_threads(), n // 4096), 1)
        rows = max(1, -(-n // n_blocks))
        self.starts = list(range(0, n, rows)) or [0]
        self.stops = self.starts[1:] + [n]

    def map_reduce(self, fn, *args):
        def run(i):
            lo, hi = self.starts[i], self.stops[i]
            if self.weights is None:
                return fn(self.X[lo:hi], lo, *args)
            return fn(self.X[lo:hi], lo, *args, weights=self.weights[lo:hi])

        return merge_all(run_blocks(run, len(self.starts)))

    def take(self, indices):
        return np.asarray(self.X[np.asarray(indices, dtype=np.intp)], dtype=np.float64)
