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

A caller's ``summary`` (a function of a chunk's per-row columns returning a
vector, summed over the chunks) runs in the same chunk task, while the
chunk's rows are at hand: the counts of the drift tests cost their
arithmetic, not another task per chunk reading the rows again.
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


def row_columns(rows, observed=False):
    """The per-row outputs of kernel rows (n, 3) or (n, 4): log-likelihood, component, responsibility[, n_observed]."""
    columns = (rows[:, LOG_LIKELIHOOD], rows[:, COMPONENT].astype(np.int64), rows[:, RESPONSIBILITY])
    return columns + ((rows[:, N_OBSERVED].astype(np.int64),) if observed else ())


def _summary(summary, rows, observed):
    """``summary`` of the rows' columns as a float64 vector."""
    return np.asarray(summary(*row_columns(rows, observed)), dtype=np.float64)


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


def rows_and_stats_numpy(X, kp, observed=False, summary=None):
    """(rows (n, 3), or (n, 4) with ``observed``, SufficientStatistics[, summary vector]) of an in-memory, checked X."""
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

    stats = merge_all(run_blocks(run, len(starts)))
    return (out, stats) if summary is None else (out, stats, _summary(summary, out, observed))


# ---------------------------------------------------------------------------
# what the lazy tasks run (top level: they travel to workers by reference)


def _rows_and_stats_chunk(block, kp, start, observed=False, summary=None):
    """One chunk: checked for NaN and inf (its first sight), then one E-step kernel call.

    Returns ``(rows, stats)``, and the chunk's ``summary`` vector third when given.
    """
    block = np.asarray(block)
    check_block_finite(block, start, missing=kp.marginal is not None)
    rows, stats = _rows_and_stats(block, kp, observed)
    return (rows, stats) if summary is None else (rows, stats, _summary(summary, rows, observed))


def _column(pair, column, dtype):
    return pair[0][:, column].astype(dtype)


def _merge_pairs(*pairs):
    return merge_all(pair[1] for pair in pairs)


def _sum_summaries(*triples):
    return _sum_vectors(*(triple[2] for triple in triples))


def _sum_vectors(*vectors):
    total = vectors[0].copy()
    for v in vectors[1:]:
        total += v
    return total


class LazyValue:
    """One value of a lazy scoring pass as a dask collection (its key in the graph of the pass).

    ``compute()`` (or ``dask.compute(..., value)``) gives the value;
    computed together with the per-row arrays of the same ``score_rows``
    call, each chunk runs once.
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
        return type(self)(dsk, key, self._layer)

    def compute(self, **kwargs):
        import dask

        return dask.compute(self, **kwargs)[0]

    def __repr__(self):
        return f"{type(self).__name__}<{self._key}>"


class LazyStatistics(LazyValue):
    """The merged statistics of a lazy scoring pass: a dask collection of one SufficientStatistics."""


class LazySummary(LazyValue):
    """The summed ``summary`` vectors of a lazy scoring pass's chunks: a dask collection of one ndarray."""


def _first(results):
    return results[0]


def rows_and_stats_lazy(X, kp, observed=False, summary=None):
    """The three per-row dask arrays and the :class:`LazyStatistics` of one pass over X.

    Parameters
    ----------
    X : dask array of shape (n, D), one chunk along the features, validated
    kp : KernelParams
    observed : bool
        Also a fourth per-row array, the count of observed features.
    summary : callable, optional
        ``summary(*columns) -> (w,) vector`` of a chunk's per-row columns
        (:func:`row_columns`), run in the chunk's task; the vectors are
        summed in a tree (:class:`LazySummary`).

    Returns
    -------
    (log_likelihood, component, responsibility[, n_observed], stats[, summary])
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    token = uuid.uuid4().hex
    pairs, kp_key, fn_key = f"gmm-rows-stats-{token}", f"gmm-kp-{token}", f"gmm-summary-fn-{token}"
    chunk_keys = [k[0] for k in X.__dask_keys__()]
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(int)
    # the parameters and the summary (which may hold a reference sample) travel once, not per task
    layer = {kp_key: DataNode(kp_key, kp)}
    if summary is not None:
        layer[fn_key] = DataNode(fn_key, summary)
    extra = () if summary is None else (TaskRef(fn_key),)
    for i, (key, start) in enumerate(zip(chunk_keys, starts)):
        layer[(pairs, i)] = Task((pairs, i), _rows_and_stats_chunk, TaskRef(key), TaskRef(kp_key), int(start),
                                 bool(observed), *extra)
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
    leaves = [(pairs, i) for i in range(len(chunk_keys))]
    name = f"gmm-stats-{token}"
    tasks, key = _tree(name, leaves, _merge_pairs, merge_values)
    values = [LazyStatistics(graph_with(name, tasks), key, name)]
    if summary is not None:
        name = f"gmm-summary-{token}"
        tasks, key = _tree(name, leaves, _sum_summaries, _sum_vectors)
        values.append(LazySummary(graph_with(name, tasks), key, name))
    return (*arrays, *values)


def _tree(name, leaves, first, then):
    """Tasks reducing the chunk tasks ``leaves`` in a tree (``first`` on them, ``then`` above); (tasks, root key)."""
    tasks, level, depth, fn = {}, leaves, 0, first
    while True:
        nxt = []
        for j in range(0, len(level), SPLIT_EVERY):
            key = (f"{name}-{depth}", j // SPLIT_EVERY)
            tasks[key] = Task(key, fn, *(TaskRef(k) for k in level[j : j + SPLIT_EVERY]))
            nxt.append(key)
        level, depth, fn = nxt, depth + 1, then
        if len(level) == 1:
            return tasks, level[0]
