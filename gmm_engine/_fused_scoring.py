"""Per-row scores and sufficient statistics from ONE E-step kernel call per chunk.

``score_rows(..., with_stats=True)`` needs, for every chunk, the rows'
log-likelihood, most likely component and its responsibility, and the
chunk's statistics under the model; the E-step kernel writes the first
while it accumulates the second (``rows=``), so one call gives both.

* In memory (:func:`rows_and_stats_numpy`): blocks on local threads, the
  rows written in place, the statistics merged by
  :func:`~gmm_engine._chunked.merge_all`.
* Lazy (:func:`rows_and_stats_lazy`): one task per chunk returns the pair
  ``(rows, stats)``; the three per-row arrays read their column of it, and
  :class:`LazyStatistics` (a dask collection) merges the statistics in a
  tree.  They share the chunk tasks, so computing them together
  (``dask.compute(ll, comp, resp, stats)``, or with any of them) runs
  each chunk once.  :class:`LazyStatistics` is optimised as dask arrays
  are (it declares their optimiser), so it joins their graph when
  computed with them: a chunk task that only one array reads would
  otherwise be fused into that array's task and run again for the
  statistics.
"""

from __future__ import annotations

import uuid

import numpy as np

from ._blocks import COMPONENT, LOG_LIKELIHOOD, N_OBSERVED, RESPONSIBILITY, check_block_finite
from ._chunked import NUMPY_BLOCK_ROWS, merge_all, run_blocks
from ._dask_compat import DataNode, Task, TaskRef
from ._dask_plan import SPLIT_EVERY, merge_values
from ._missing import observed_counts
from ._stats import SufficientStatistics

#: the per-row outputs: column of the kernel's (n, 3) rows, name, dtype
COLUMNS = (
    (LOG_LIKELIHOOD, "log-likelihood", np.float64),
    (COMPONENT, "component", np.int64),
    (RESPONSIBILITY, "responsibility", np.float64),
)
#: with ``observed``: the count of features each row has, from the same chunk task
OBSERVED_COLUMN = (N_OBSERVED, "n-observed", np.int64)


def _rows_and_stats(block, kp, observed, out=None):
    """(rows (n, 3) or (n, 4) with the observed-feature counts, SufficientStatistics) of one block.

    ``out`` (n, 3), C-contiguous, receives the rows in place when given
    (without ``observed``).
    """
    rows = np.empty((block.shape[0], 3)) if out is None else out
    stats = SufficientStatistics.from_estep(block, kp, rows=rows)
    if observed:
        rows = np.column_stack([rows, observed_counts(block)])
    return rows, stats


def rows_and_stats_numpy(X, kp, observed=False):
    """(rows (n, 3), or (n, 4) with ``observed``, SufficientStatistics) of an in-memory, checked X under ``kp``."""
    n = X.shape[0]
    out = np.empty((n, 4 if observed else 3))
    starts = list(range(0, n, NUMPY_BLOCK_ROWS))

    def run(i):
        lo = starts[i]
        hi = min(lo + NUMPY_BLOCK_ROWS, n)
        if not observed:
            return _rows_and_stats(X[lo:hi], kp, False, out=out[lo:hi])[1]
        rows, stats = _rows_and_stats(X[lo:hi], kp, True)
        out[lo:hi] = rows
        return stats

    return out, merge_all(run_blocks(run, len(starts)))


# ---------------------------------------------------------------------------
# what the lazy tasks run (top level: they travel to workers by reference)


def _rows_and_stats_chunk(block, kp, start, observed=False):
    """One chunk: checked for NaN and inf (its first sight), then one E-step kernel call."""
    block = np.asarray(block)
    check_block_finite(block, start, missing=kp.marginal is not None)
    return _rows_and_stats(block, kp, observed)


def _column(pair, column, dtype):
    return pair[0][:, column].astype(dtype)


def _merge_pairs(*pairs):
    return merge_all(pair[1] for pair in pairs)


class LazyStatistics:
    """The merged statistics of a lazy scoring pass: a dask collection of one SufficientStatistics.

    ``compute()`` (or ``dask.compute(..., stats)``) gives the
    :class:`~gmm_engine.SufficientStatistics`; computed together with the
    per-row arrays of the same ``score_rows`` call, each chunk runs once.
    """

    def __init__(self, graph, key, layer):
        self._graph, self._key, self._layer = graph, key, layer

    def __dask_graph__(self):
        return self._graph

    def __dask_keys__(self):
        return [self._key]

    def __dask_layers__(self):
        return (self._layer,)

    def __dask_tokenize__(self):
        return self._key

    @property
    def __dask_optimize__(self):
        # dask arrays' optimiser itself: dask groups collections by it, so the
        # statistics are optimised in one graph with the per-row arrays
        import dask.array as da

        return da.Array.__dask_optimize__

    @property
    def __dask_scheduler__(self):
        import dask.threaded

        return dask.threaded.get

    def __dask_postcompute__(self):
        return _first, ()

    def __dask_postpersist__(self):
        return self._rebuild, ()

    def _rebuild(self, dsk, *, rename=None):
        key = self._key if not rename else rename.get(self._key, self._key)
        return LazyStatistics(dsk, key, self._layer)

    def compute(self, **kwargs):
        import dask

        return dask.compute(self, **kwargs)[0]

    def __repr__(self):
        return f"LazyStatistics<{self._key}>"


def _first(results):
    return results[0]


def rows_and_stats_lazy(X, kp, observed=False):
    """The three per-row dask arrays and the :class:`LazyStatistics` of one pass over X.

    Parameters
    ----------
    X : dask array of shape (n, D), one chunk along the features, validated
    kp : KernelParams
    observed : bool
        Also a fourth per-row array, the count of observed features.

    Returns
    -------
    (log_likelihood, component, responsibility[, n_observed], stats)
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    token = uuid.uuid4().hex
    pairs, kp_key = f"gmm-rows-stats-{token}", f"gmm-kp-{token}"
    chunk_keys = [k[0] for k in X.__dask_keys__()]
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(int)
    layer = {kp_key: DataNode(kp_key, kp)}
    for i, (key, start) in enumerate(zip(chunk_keys, starts)):
        layer[(pairs, i)] = Task((pairs, i), _rows_and_stats_chunk, TaskRef(key), TaskRef(kp_key), int(start),
                                 bool(observed))
    base = HighLevelGraph.from_collections(pairs, layer, dependencies=[X])

    def graph_with(name, tasks):
        return HighLevelGraph({**base.layers, name: tasks}, {**base.dependencies, name: {pairs}})

    arrays = []
    for column, label, dtype in COLUMNS + ((OBSERVED_COLUMN,) if observed else ()):
        name = f"gmm-{label}-{token}"
        tasks = {(name, i): Task((name, i), _column, TaskRef((pairs, i)), column, dtype)
                 for i in range(len(chunk_keys))}
        arrays.append(da.Array(graph_with(name, tasks), name, chunks=(X.chunks[0],), dtype=dtype,
                               meta=np.empty((0,), dtype=dtype)))
    name = f"gmm-stats-{token}"
    tasks, level, depth = {}, [(pairs, i) for i in range(len(chunk_keys))], 0
    fn = _merge_pairs
    while True:
        nxt = []
        for j in range(0, len(level), SPLIT_EVERY):
            key = (f"{name}-{depth}", j // SPLIT_EVERY)
            tasks[key] = Task(key, fn, *(TaskRef(k) for k in level[j : j + SPLIT_EVERY]))
            nxt.append(key)
        level, depth, fn = nxt, depth + 1, merge_values
        if len(level) == 1:
            break
    return (*arrays, LazyStatistics(graph_with(name, tasks), level[0], name))
