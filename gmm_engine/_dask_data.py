"""Training data held in a dask array: where each pass runs, and what it ships.

:class:`DaskData` runs ``fn`` inside the task that loads each chunk (see
:mod:`gmm_engine._dask_plan` for the graphs) and decides, per pass, where:

* the default threaded scheduler, with chunks that load on their own
  (NumPy, Zarr, ...): a local thread pool, no scheduler at all;
* a ``distributed.Client``: the grouped graph on the cluster.  Chunks
  whose data is inline in the array's graph (``da.from_array`` of an
  in-memory array) are scattered to the workers once and referred to by
  every pass; persisted (or scattered) chunks are bundled per worker once,
  so a pass sends one task per bundle;
* any other scheduler: the grouped graph, handed to it.

Only ``args`` (small parameters) enter the graph, once per pass.  Row
weights are planned like the rows (one weights source per chunk, next to
its rows' source); in-memory weights are scattered with in-memory rows.
"""

from __future__ import annotations

import copy
import itertools
import logging

import numpy as np

from ._chunked import ChunkedData, apply_chunk, as_block, merge_all, n_threads, run_blocks
from ._dask_compat import TaskRef
from ._dask_plan import ChunkPlan, bundle, bundle_graph, evaluate, parts, source_dependencies
from ._scheduler import compute, scheduler_of

logger = logging.getLogger(__name__)

#: scatter in-memory chunks to the cluster in batches of about this many bytes
SCATTER_BATCH_BYTES = 256 * 2**20


def _client_of(get):
    """The distributed client whose ``get`` this is, or None."""
    client = getattr(get, "__self__", None)
    return client if hasattr(client, "who_has") and hasattr(client, "nthreads") else None


class DaskData(ChunkedData):
    """A dask array of shape (n, D) with one chunk along the features.

    Parameters
    ----------
    X : dask.array.Array
    persist : bool
        Keep the chunks in (cluster) memory between passes instead of
        reading them from their store on every pass.
    weights : dask array of shape (n,), float64, optional
        Row weights, rechunked here to X's row chunks if they differ.
    """

    def __init__(self, X, persist: bool = False, weights=None):
        import dask

        if X.numblocks[1] != 1:
            X = X.rechunk({1: -1})
        if weights is not None and tuple(weights.chunks[0]) != tuple(X.chunks[0]):
            weights = weights.rechunk((X.chunks[0],))
        if persist:
            X, weights = (X.persist(), None) if weights is None else dask.persist(X, weights)
        self.X = X
        self.weights = weights
        self.n_samples, self.n_features = (int(s) for s in X.shape)
        self.dtype = X.dtype
        self._plan = None
        self._client_plan = None  # (client, plan with in-memory chunks scattered, their futures)
        self._bundles = None  # (client, [(future, starts)]) for persisted or scattered chunks

    @property
    def plan(self) -> ChunkPlan:
        if self._plan is None:
            self._plan = ChunkPlan(self.X, self.weights)
        return self._plan

    def map_reduce(self, fn, *args):
        import dask
        import dask.threaded

        plan = self.plan
        get = scheduler_of(self.X)
        if get is dask.threaded.get and plan.local:
            # What the threaded scheduler would do, without its per-task
            # bookkeeping: load each chunk and apply fn on a thread pool.
            def run(i):
                return apply_chunk(fn, as_block(plan.block(i)), plan.starts[i], args)

            return merge_all(run_blocks(run, len(plan.starts)))
        client = _client_of(get)
        if client is not None:
            try:
                return self._map_reduce_on(client, get, fn, args)
            except Exception:
                # Scattered chunks have no lineage: a worker that died took its
                # chunks with it.  Send them again from here, once.
                if not self._scattered_lost():
                    raise
                logger.warning("in-memory chunks were lost with a worker; scattering them again")
                self._client_plan = self._bundles = None
                return self._map_reduce_on(client, get, fn, args)
        if get is dask.threaded.get:
            groups = [[i] for i in range(len(plan.sources))]  # upstream tasks: one per chunk
        else:
            groups = plan.groups(n_threads())
        dsk, keys = plan.graph(fn, args, groups)
        return merge_all(get(dsk, keys))

    def _map_reduce_on(self, client, get, fn, args):
        plan = self._plan_for(client)
        bundles = self._persisted_bundles(client, plan)
        if bundles:
            dsk, keys = bundle_graph(fn, args, bundles)
        else:
            threads = max(1, sum(client.nthreads().values()))
            groups = plan.groups(threads, self._locations(client, plan))
            dsk, keys = plan.graph(fn, args, groups)
        return merge_all(get(dsk, keys))

    def _scattered_lost(self) -> bool:
        if self._client_plan is None:
            return False
        return any(f.status != "finished" for f in self._client_plan[2])

    def _plan_for(self, client) -> ChunkPlan:
        """The plan with chunks whose data is inline in the graph scattered to ``client`` once.

        ``da.from_array(X)`` of an in-memory X carries the chunks in its
        graph; every pass would ship all of them to the cluster again.
        They are sent once instead, in runs of consecutive chunks to each
        worker (in proportion to its threads), and every pass refers to
        them where they are, as to persisted chunks.  Chunks that load from
        a store are left alone: they are read where they are used.
        """
        if self._client_plan is not None and self._client_plan[0] is client:
            return self._client_plan[1]
        plan = self.plan
        # (chunk, part) of every in-memory source: a chunk's rows, or its weights
        n_parts = len(parts(plan.sources[0])) if plan.sources else 1
        inline = [(i, p) for i in range(len(plan.sources)) for p in range(n_parts)
                  if plan.inline_data(i, p if n_parts > 1 else None)]
        futures = []
        if inline:
            futures = self._scatter(client, plan, inline)
            scattered = copy.copy(plan)
            scattered.sources = [list(parts(src)) for src in plan.sources]
            scattered.shared = dict(plan.shared)
            scattered.local = False
            for (i, p), future in zip(inline, futures):
                scattered.sources[i][p] = TaskRef(future.key)
                scattered.shared[future.key] = future
            scattered.sources = [tuple(src) if n_parts > 1 else src[0] for src in scattered.sources]
            scattered.groupable = [scattered._groupable(src) for src in scattered.sources]
            logger.debug("scattered %d in-memory chunks to the cluster", len(inline))
            plan = scattered
        self._client_plan = (client, plan, futures)
        return plan

    @staticmethod
    def _scatter(client, plan, chunks):
        """Futures of the given ``(chunk, part)`` sources, in order, sent to the workers in consecutive runs.

        A chunk's rows and its weights land on the same worker (the share of
        a part is decided by its chunk's middle byte).
        """
        nthreads = client.nthreads()
        workers = sorted(nthreads)
        total = sum(plan.chunk_bytes[i] for i in {i for i, _ in chunks}) or 1
        capacity = sum(nthreads.values()) or 1
        # worker j takes the chunks whose middle byte falls in its share
        bounds = list(itertools.accumulate(nthreads[w] / capacity * total for w in workers))
        futures, batch = [], []
        state = {"worker": None, "bytes": 0}

        def flush():
            if batch:
                futures.extend(client.scatter(list(batch), workers=[state["worker"]], hash=False))
                batch.clear()

        offset, before = 0, {}  # chunk -> bytes of the chunks before it
        for i, part in chunks:
            if i not in before:
                before[i] = offset
                offset += plan.chunk_bytes[i]
            mid = before[i] + plan.chunk_bytes[i] / 2
            worker = workers[next((j for j, b in enumerate(bounds) if mid < b), len(workers) - 1)]
            if worker != state["worker"] or state["bytes"] >= SCATTER_BATCH_BYTES:
                flush()
                state.update(worker=worker, bytes=0)
            src = plan.sources[i] if part is None else parts(plan.sources[i])[part]
            batch.append(np.asarray(evaluate(src, {})))
            state["bytes"] += plan.part_bytes(i, part)
        flush()
        return futures

    def _persisted_bundles(self, client, plan=None):
        """For chunks persisted (or scattered) on the cluster: one future per group of chunks on a worker.

        A pass over 1,000 persisted chunks would otherwise send 1,000
        dependency edges to the scheduler every iteration (~0.2 s here);
        the bundles (tuples referencing the chunks where they are, no copy)
        are made once and reused by every pass.
        """
        from distributed import Future

        plan = self.plan if plan is None else plan
        if not plan.sources or not all(
            isinstance(p, TaskRef) and isinstance(plan.shared.get(p.key), Future)
            for s in plan.sources for p in parts(s)
        ):
            return None
        if self._bundles is not None and self._bundles[0] is client:
            return self._bundles[1]
        threads = max(1, sum(client.nthreads().values()))
        # Chunks held by a worker are computed there whatever the split, so a
        # second task per thread balances nothing and costs a scheduler round
        # trip (a pass of 4 empty tasks takes ~28 ms on 2 workers here, of 2 ~20).
        groups = plan.groups(threads, self._locations(client, plan), per_thread=1, threads_at=client.nthreads())
        bundles = []
        def held(src):  # a chunk's future, or the pair of its rows' and weights' (resolved where bundled)
            if isinstance(src, tuple):
                return tuple(plan.shared[p.key] for p in src)
            return plan.shared[src.key]

        for run in groups:
            futures = [held(plan.sources[i]) for i in run]
            future = client.submit(bundle, *futures, pure=False)
            bundles.append((future, tuple(plan.starts[i] for i in run)))
        self._bundles = (client, bundles)
        return bundles

    def _locations(self, client, plan=None):
        """Per chunk, the worker holding the persisted data it loads from (None if none)."""
        from distributed import Future

        plan = self.plan if plan is None else plan
        shared = plan.shared
        deps = {}
        for i, src in enumerate(plan.sources):
            # where the rows are: a chunk's weights are small and follow them
            keys = sorted(source_dependencies(parts(src)[0]), key=str)
            keys = [k for k in keys if isinstance(shared.get(k), Future)]
            if keys:
                deps[i] = keys[0]
        if not deps:
            return None
        who = client.who_has([shared[k] for k in set(deps.values())])
        return [min(who.get(deps[i], ()) or ("",)) if i in deps else None for i in range(len(plan.sources))]

    def take(self, indices):
        indices = np.asarray(indices, dtype=np.intp)
        order = np.argsort(indices, kind="stable")
        (rows,) = compute(self.X[indices[order]])
        out = np.empty((len(indices), self.n_features))
        out[order] = rows
        return out
