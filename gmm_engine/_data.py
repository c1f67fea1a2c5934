"""Row-chunked training data with a single primitive: map over chunks, reduce.

Every algorithm in the engine (EM, k-means||, k-means++, scans) is written
against :meth:`ChunkedData.map_reduce`.  ``fn(block, start, *args)``
receives one chunk as a NumPy array and the global index of its first
row, and returns a value with an associative ``merge``.

* :class:`NumpyData` runs the chunks on a local thread pool (the kernels
  release the GIL).  In-memory input never goes to a cluster.
* :class:`DaskData` fuses ``fn`` into the chunk-loading tasks
  (``map_blocks``), merges with a tree reduction, and computes on the
  active ``distributed.Client`` if there is one, else on the threaded
  scheduler.  Only ``args`` (small parameters) enter the graph, once.
"""

from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

logger = logging.getLogger(__name__)

#: rows per block when chunking an in-memory array
NUMPY_BLOCK_ROWS = 65_536
#: fan-in of the tree reduction
SPLIT_EVERY = 16
#: target bytes per Dask chunk when we choose the chunking (Zarr input)
TARGET_CHUNK_BYTES = 64 * 2**20


def n_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _merge_pair(a, b):
    return a.merge(b)


def merge_all(values):
    """Merge a sequence of mergeable values in order (balanced pairwise)."""
    values = list(values)
    if not values:
        raise ValueError("nothing to merge")
    while len(values) > 1:
        nxt = [values[i].merge(values[i + 1]) for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


class ChunkedData:
    """Interface shared by in-memory and Dask-backed data."""

    n_samples: int
    n_features: int
    dtype: np.dtype

    def map_reduce(self, fn, *args):  # pragma: no cover - interface
        raise NotImplementedError

    def take(self, indices) -> np.ndarray:  # pragma: no cover - interface
        """Rows at the given global indices, in the given order, as float64."""
        raise NotImplementedError


class NumpyData(ChunkedData):
    """An in-memory (n, D) array processed in row blocks on local threads.

    Parameters
    ----------
    X : ndarray of shape (n, D), float32 or float64, C-contiguous
    block_rows : int, optional
    """

    def __init__(self, X: np.ndarray, block_rows: int | None = None):
        self.X = X
        self.n_samples, self.n_features = X.shape
        self.dtype = X.dtype
        rows = block_rows or NUMPY_BLOCK_ROWS
        self.starts = list(range(0, self.n_samples, rows)) or [0]
        self.stops = self.starts[1:] + [self.n_samples]

    def map_reduce(self, fn, *args):
        def run(i):
            return fn(self.X[self.starts[i] : self.stops[i]], self.starts[i], *args)

        n_blocks = len(self.starts)
        workers = min(n_threads(), n_blocks)
        if workers <= 1:
            results = [run(i) for i in range(n_blocks)]
        else:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(run, range(n_blocks)))
        return merge_all(results)

    def take(self, indices):
        return np.asarray(self.X[np.asarray(indices, dtype=np.intp)], dtype=np.float64)


def _apply_block(block, fn, args, block_info=None):
    start = block_info[0]["array-location"][0][0]
    out = np.empty((1, 1), dtype=object)
    out[0, 0] = fn(block, start, *args)
    return out


def _unwrap(value):
    # map_blocks hands each chunk's value over as a 1x1 object block
    return value[0, 0] if isinstance(value, np.ndarray) else value


def _merge_many(*values):
    return functools.reduce(_merge_pair, map(_unwrap, values))


class DaskData(ChunkedData):
    """A dask array of shape (n, D) with one chunk along the features.

    Parameters
    ----------
    X : dask.array.Array
    persist : bool
        Keep the chunks in (cluster) memory between passes instead of
        reading them from their store on every pass.
    """

    def __init__(self, X, persist: bool = False):
        if X.numblocks[1] != 1:
            X = X.rechunk({1: -1})
        if persist:
            X = X.persist()
        self.X = X
        self.n_samples, self.n_features = (int(s) for s in X.shape)
        self.dtype = X.dtype

    def map_reduce(self, fn, *args):
        import dask

        params = dask.delayed(args, pure=True, traverse=False)
        nb = self.X.numblocks[0]
        blocks = self.X.map_blocks(
            _apply_block,
            fn,
            params,
            dtype=object,
            chunks=((1,) * nb, (1,)),
            meta=np.empty((0, 0), dtype=object),
            token=f"gmm-{getattr(fn, '__name__', 'chunk')}",
        )
        level = [d for d in blocks.to_delayed(optimize_graph=True).ravel()]
        merge = dask.delayed(_merge_many, pure=True)
        while len(level) > 1:
            level = [merge(*level[i : i + SPLIT_EVERY]) for i in range(0, len(level), SPLIT_EVERY)]
        (result,) = dask.compute(level[0])
        return _unwrap(result)

    def take(self, indices):
        indices = np.asarray(indices, dtype=np.intp)
        order = np.argsort(indices, kind="stable")
        rows = self.X[indices[order]].compute()
        out = np.empty((len(indices), self.n_features))
        out[order] = rows
        return out


# ---------------------------------------------------------------------------
# Reproducible randomness per row, independent of the chunking.

#: rows per block of the row-indexed random stream
RNG_BLOCK_ROWS = 65_536


def row_uniforms(key: int, stream: int, start: int, stop: int, ncols: int) -> np.ndarray:
    """Uniform [0, 1) numbers for rows ``start:stop``, a function of the row index.

    Row ``i`` always receives the same ``ncols`` numbers for a given
    ``(key, stream)``, whatever the chunk that contains it: the stream is cut
    into fixed blocks of ``RNG_BLOCK_ROWS`` rows, each drawn from its own
    counter-based Philox generator.

    Parameters
    ----------
    key : int
        64-bit seed of one initialisation.
    stream : int
        Distinguishes the passes that use randomness within it.
    start, stop : int
        Global row range.
    ncols : int

    Returns
    -------
    ndarray of shape (stop - start, ncols)
    """
    out = np.empty((stop - start, ncols))
    first, last = start // RNG_BLOCK_ROWS, (stop - 1) // RNG_BLOCK_ROWS
    for b in range(first, last + 1):
        lo = max(start, b * RNG_BLOCK_ROWS)
        hi = min(stop, (b + 1) * RNG_BLOCK_ROWS)
        gen = np.random.Generator(
            np.random.Philox(key=[int(key) & (2**64 - 1), (int(stream) << 40) | b])
        )
        block = gen.random((hi - b * RNG_BLOCK_ROWS, ncols))
        out[lo - start : hi - start] = block[lo - b * RNG_BLOCK_ROWS :]
    return out
