"""Row-chunked training data with a single primitive: map over chunks, reduce.

Every algorithm in the engine (EM, k-means||, k-means++, scans) is written
against :meth:`ChunkedData.map_reduce`.  ``fn(block, start, *args)``
receives one chunk as a NumPy array and the global index of its first
row, and returns a value with an associative ``merge``.

* :class:`NumpyData` runs the chunks on a local thread pool (the kernels
  release the GIL).  In-memory input never goes to a cluster.
* :class:`DaskData` runs ``fn`` inside the task that loads each chunk, and
  merges with a tree of fan-in :data:`SPLIT_EVERY`.  The per-chunk loading
  tasks are taken once from the array's optimised graph; each pass only
  adds one small task per chunk and the merge tree, so an iteration over
  1,000 chunks costs milliseconds of graph building instead of dask's
  generic optimisation passes.  With the default threaded scheduler and
  chunks that load on their own (NumPy, Zarr, ...), the chunks run on a
  local thread pool without a scheduler; with a ``distributed.Client``
  (or any other configured scheduler) the graph goes to that scheduler.
  Only ``args`` (small parameters) enter the graph, once per pass: chunks
  whose data is inline in the array's graph (``da.from_array`` of an
  in-memory array) are scattered to the workers once and referred to by
  every pass, like persisted chunks.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np

logger = logging.getLogger(__name__)

#: at most this many rows per block when chunking an in-memory array ...
NUMPY_BLOCK_ROWS = 65_536
#: ... and at least this many blocks per thread (if blocks keep >= 4,096 rows),
#: so that the last blocks do not leave a thread idle
NUMPY_BLOCKS_PER_THREAD = 8
#: fan-in of the tree reduction
SPLIT_EVERY = 16
#: target bytes per Dask chunk when we choose the chunking (Zarr input)
TARGET_CHUNK_BYTES = 64 * 2**20


def n_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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


def _run_blocks(run, n_blocks):
    """``[run(i) for i in range(n_blocks)]`` on up to ``n_threads()`` threads."""
    workers = min(n_threads(), n_blocks)
    if workers <= 1:
        return [run(i) for i in range(n_blocks)]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(n_blocks)))


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
        n = self.n_samples
        rows = block_rows or NUMPY_BLOCK_ROWS
        n_blocks = max(-(-n // rows), min(NUMPY_BLOCKS_PER_THREAD * n_threads(), n // 4096), 1)
        rows = max(1, -(-n // n_blocks))
        self.starts = list(range(0, n, rows)) or [0]
        self.stops = self.starts[1:] + [n]

    def map_reduce(self, fn, *args):
        def run(i):
            return fn(self.X[self.starts[i] : self.stops[i]], self.starts[i], *args)

        return merge_all(_run_blocks(run, len(self.starts)))

    def take(self, indices):
        return np.asarray(self.X[np.asarray(indices, dtype=np.intp)], dtype=np.float64)


# ---------------------------------------------------------------------------
# Dask

#: a task of a scheduled graph covers chunks up to at least this many bytes ...
MIN_TASK_BYTES = 16 * 2**20
#: ... and there are at most this many tasks per worker thread: fewer, longer
#: tasks cost the scheduler less and let a task read its next chunk while it
#: computes on the current one
MAX_TASKS_PER_THREAD = 2


class _Deferred:
    """Chunk sources carried through a graph without being executed by the scheduler.

    A task evaluates graph nodes in its arguments before it runs, which for
    a group of chunks would hold all of them in memory at once; wrapped
    here, they are evaluated one at a time inside :func:`_apply_group`.
    """

    __slots__ = ("sources", "handles")

    def __init__(self, sources, handles=None):
        self.sources = sources
        self.handles = handles or {}

    def __reduce__(self):
        return _Deferred, (self.sources, self.handles)


def _evaluate(source, values):
    from dask._task_spec import GraphNode, TaskRef

    if isinstance(source, GraphNode):
        return source({k: values[k] for k in source.dependencies})
    if isinstance(source, TaskRef):
        return values[source.key]
    return source  # a chunk's data


def _apply_group(fn_args, deferred, starts, dep_keys, *dep_values):
    """Apply fn to each chunk of a group, reading the next chunk while fn runs.

    Loading a chunk (reading and decompressing a Zarr chunk) and the
    kernels both release the GIL, so a single-threaded worker overlaps them
    with one reader thread; at most two chunks are in memory at a time.
    """
    fn, args = fn_args
    values = dict(deferred.handles)
    values.update(zip(dep_keys, dep_values))
    sources = deferred.sources

    def load(i):
        return np.asarray(_evaluate(sources[i], values))

    out = None
    if len(sources) == 1:
        return fn(load(0), starts[0], *args)
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(load, 0)
        for i in range(len(sources)):
            block = pending.result()
            if i + 1 < len(sources):
                pending = reader.submit(load, i + 1)
            value = fn(block, starts[i], *args)
            del block
            out = value if out is None else out.merge(value)
    return out


def _bundle(*blocks):
    return blocks


def _apply_bundle(fn_args, starts, blocks):
    fn, args = fn_args
    out = None
    for block, start in zip(blocks, starts):
        value = fn(np.asarray(block), start, *args)
        out = value if out is None else out.merge(value)
    return out


def _merge_many(*values):
    out = values[0]
    for v in values[1:]:
        out = out.merge(v)
    return out


class _ChunkPlan:
    """How to load each row chunk of a dask array, taken once from its graph.

    Attributes
    ----------
    sources : list
        Per row chunk, what produces its block: the chunk's own task from
        the optimised graph (run inside the task that uses the block, so a
        chunk is loaded where it is used and never stored), the chunk's
        data, or a reference to a key of ``shared`` (a persisted future or
        an upstream task).
    shared : dict
        The rest of the graph the sources depend on (a Zarr array object,
        persisted futures, upstream tasks), culled to what they need.
    groupable : list of bool
        The source loads from ``shared`` data or futures only, so several
        chunks can share one task without holding upstream results.
    starts : list of int
        Global index of each chunk's first row.
    local : bool
        Every source loads from data nodes alone: the threaded scheduler
        can be replaced by a plain thread pool.
    """

    def __init__(self, X):
        from dask._task_spec import Alias, DataNode, GraphNode, Task, TaskRef

        keys = [k[0] for k in X.__dask_keys__()]
        raw = dict(X.__dask_graph__())
        # Optimisation drops what is not a task (persisted futures): keep those.
        dsk = {k: v for k, v in raw.items() if not isinstance(v, GraphNode)}
        dsk.update(X.__dask_optimize__(X.__dask_graph__(), keys))
        refcount = {}
        for node in dsk.values():
            if isinstance(node, GraphNode):
                for d in node.dependencies:
                    refcount[d] = refcount.get(d, 0) + 1
        sources, roots = [], set()
        for k in keys:
            node, key = dsk.get(k), k
            # follow aliases that nothing else uses to the node that makes the chunk
            while isinstance(node, Alias) and refcount.get(node.target, 0) == 1 and node.target in dsk:
                key = node.target
                node = dsk[key]
            private = refcount.get(key, 0) <= (0 if key == k else 1)
            if isinstance(node, Task) and private:
                sources.append(node)  # inlined: its key disappears from the graph
                roots.update(node.dependencies)
            elif isinstance(node, DataNode) and private:
                sources.append(node.value)
            else:
                sources.append(TaskRef(k))
                roots.add(k)
        self.shared = _cull(dsk, roots)
        # Small data nodes the chunk tasks read through (the Zarr array
        # object): carried by each task, not as a shared dependency, which the
        # scheduler computes on one worker per pass and then sends every task
        # to, leaving the other workers to steal work a second later.
        self.handles = {
            k: node.value for k, node in self.shared.items()
            if isinstance(node, DataNode) and _is_store_handle(node.value)
        }

        def is_data(key):
            node = self.shared.get(key)
            return isinstance(node, DataNode) or (node is not None and not isinstance(node, GraphNode))

        self.sources = sources
        self.groupable = []
        for src in sources:
            if isinstance(src, Task):
                self.groupable.append(all(is_data(d) for d in src.dependencies))
            elif isinstance(src, TaskRef):
                self.groupable.append(is_data(src.key))
            else:
                self.groupable.append(True)
        self.local = all(
            not isinstance(src, TaskRef) and ok and all(isinstance(v, DataNode) for v in self.shared.values())
            for src, ok in zip(sources, self.groupable)
        )
        self.starts = [0, *itertools.accumulate(int(c) for c in X.chunks[0])][:-1]
        self.chunk_bytes = [int(c) * X.shape[1] * X.dtype.itemsize for c in X.chunks[0]]

    def block(self, i):
        """Evaluate chunk i in this process (``local`` plans only)."""
        src = self.sources[i]
        deps = getattr(src, "dependencies", ())
        return _evaluate(src, {k: self.shared[k].value for k in deps})

    def groups(self, n_workers_threads, location=None, per_thread=MAX_TASKS_PER_THREAD, threads_at=None):
        """Sets of chunks that share a task, each in increasing chunk order.

        A set covers about :data:`MIN_TASK_BYTES` (one scheduler round trip
        costs ~1-3 ms here, as much work as 10,000 rows) and there are at
        most ``per_thread`` sets per worker thread (the scheduler's cost
        grows with tasks, not bytes), but that many when the chunks allow.  A task holds at most two of its
        chunks at a time (the one it computes on and the next, being read).  Chunks
        that load from their store are grouped in runs of consecutive
        chunks, so the reduction, and its rounding, does not depend on
        where tasks run; persisted chunks are grouped by the worker that
        holds them (``location[i]``), so no chunk moves; with ``threads_at``
        (worker -> threads) each worker's chunks are split by its own threads.
        """
        n = len(self.sources)
        mean_bytes = max(1, sum(self.chunk_bytes) // max(n, 1))
        min_run = -(-MIN_TASK_BYTES // mean_bytes)

        def run_size(count, tasks):  # chunks per task: count chunks over at most `tasks` tasks
            return max(1, min(max(min_run, -(-count // tasks)), count // tasks))

        size = run_size(n, per_thread * max(1, n_workers_threads))
        buckets = {}
        for i in range(n):
            where = None if location is None else location[i]
            buckets.setdefault(where, []).append(i)
        out = []
        for where, members in buckets.items():
            limit = size
            if threads_at is not None and where in threads_at:
                limit = run_size(len(members), per_thread * max(1, threads_at[where]))
            run = []
            for i in members:
                if run and (len(run) >= limit or not self.groupable[i] or not self.groupable[run[-1]]):
                    out.append(run)
                    run = []
                run.append(i)
            if run:
                out.append(run)
        out.sort(key=lambda r: r[0])
        return out

    def graph(self, fn, args, groups):
        """Graph of ``fn`` over all chunks; returns (dsk, keys to compute and merge)."""
        from dask._task_spec import GraphNode, Task, TaskRef

        token = uuid.uuid4().hex
        pkey = f"gmm-args-{token}"
        name = f"gmm-{getattr(fn, '__name__', 'chunk')}-{token}"
        needed = set()
        for node in self.shared.values():
            needed.update(getattr(node, "dependencies", ()) or ())
        dsk = {k: v for k, v in self.shared.items() if k not in self.handles or k in needed}
        fn_args = _args_node(dsk, pkey, fn, args, len(groups))
        level = []
        for g, run in enumerate(groups):
            deps = set()
            for i in run:
                src = self.sources[i]
                if isinstance(src, GraphNode):
                    deps.update(src.dependencies)
                elif isinstance(src, TaskRef):
                    deps.add(src.key)
            handles = {k: self.handles[k] for k in deps if k in self.handles}
            dep_keys = tuple(k for k in deps if k not in handles)
            key = (name, g)
            dsk[key] = Task(
                key, _apply_group, fn_args,
                _Deferred(tuple(self.sources[i] for i in run), handles),
                tuple(self.starts[i] for i in run),
                dep_keys,
                *(TaskRef(k) for k in dep_keys),
            )
            level.append(key)
        return dsk, _merge_tree(dsk, level, name)


def _is_store_handle(value) -> bool:
    """``value`` is a handle on data held in a store (a Zarr array on disk or remote), not data itself.

    Such a node can travel inside every task that reads through it; any
    other node (an in-memory array, a Zarr array in a MemoryStore, an
    unknown object) stays one shared node of the graph.
    """
    from ._zarr_io import ZarrRows

    z = value.z if isinstance(value, ZarrRows) else value
    try:
        import zarr
        from zarr.storage import MemoryStore
    except ImportError:  # pragma: no cover - zarr is a dependency
        return False
    return isinstance(z, zarr.Array) and not isinstance(z.store, MemoryStore)


def _cull(dsk, roots):
    out = {}
    stack = list(roots)
    while stack:
        k = stack.pop()
        if k in out or k not in dsk:
            continue
        node = out[k] = dsk[k]
        stack.extend(getattr(node, "dependencies", ()) or ())
    return out


#: a pass's parameters go inline into each task while all copies together stay below this
INLINE_ARGS_BYTES = 8 * 2**20


def _nbytes(obj, depth=0) -> int:
    """Bytes of the arrays in ``obj`` (nested tuples, lists, dicts and dataclasses)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if depth > 20:
        return 0
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o, depth + 1) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o, depth + 1) for o in obj.values())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(_nbytes(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj))
    return 0


def _args_node(dsk, pkey, fn, args, n_tasks):
    """What the tasks of a pass take as ``(fn, args)``: the value itself, or a reference to one node.

    Inline, each task carries its own copy and starts as soon as it reaches
    a worker.  As one shared node, it is made on one worker and fetched by
    the others, a worker-to-worker round trip before their first chunk
    (~10 ms, a tenth of an iteration at a million rows on two workers); that
    is worth it only when the copies would weigh more than the round trip.
    """
    from dask._task_spec import DataNode, TaskRef

    if n_tasks * _nbytes(args) <= INLINE_ARGS_BYTES:
        return (fn, args)
    dsk[pkey] = DataNode(pkey, (fn, args))
    return TaskRef(pkey)


def _bundle_graph(fn, args, bundles):
    """Graph of ``fn`` over persisted bundles of chunks; returns (dsk, keys to compute and merge)."""
    from dask._task_spec import Task, TaskRef

    token = uuid.uuid4().hex
    pkey = f"gmm-args-{token}"
    name = f"gmm-{getattr(fn, '__name__', 'chunk')}-{token}"
    dsk = {}
    fn_args = _args_node(dsk, pkey, fn, args, len(bundles))
    level = []
    for g, (future, starts) in enumerate(bundles):
        dsk[future.key] = future
        key = (name, g)
        dsk[key] = Task(key, _apply_bundle, fn_args, starts, TaskRef(future.key))
        level.append(key)
    return dsk, _merge_tree(dsk, level, name)


def _merge_tree(dsk, level, name):
    """Add merge tasks of fan-in SPLIT_EVERY until at most SPLIT_EVERY keys remain; return them.

    The last few partial results come back to the caller, which merges them
    in order: one scheduler round trip less than a single root task.
    """
    from dask._task_spec import Task, TaskRef

    depth = 0
    while len(level) > SPLIT_EVERY:
        nxt = []
        for j in range(0, len(level), SPLIT_EVERY):
            key = (f"{name}-merge-{depth}", j // SPLIT_EVERY)
            dsk[key] = Task(key, _merge_many, *(TaskRef(k) for k in level[j : j + SPLIT_EVERY]))
            nxt.append(key)
        level = nxt
        depth += 1
    return level


#: scatter in-memory chunks to the cluster in batches of about this many bytes
SCATTER_BATCH_BYTES = 256 * 2**20


def _embedded_bytes(obj, depth=0) -> int:
    """Bytes of the ndarrays a task spec carries inline (its arguments, nested)."""
    from dask._task_spec import DataNode, GraphNode

    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if depth > 50:  # pragma: no cover - pathological nesting
        return 0
    if isinstance(obj, DataNode):
        return _embedded_bytes(obj.value, depth + 1)
    if isinstance(obj, (list, tuple)):
        return sum(_embedded_bytes(o, depth + 1) for o in obj)
    if isinstance(obj, dict):
        return sum(_embedded_bytes(o, depth + 1) for o in obj.values())
    if isinstance(obj, GraphNode):
        args = getattr(obj, "args", ()) or ()
        kwargs = getattr(obj, "kwargs", {}) or {}
        return sum(_embedded_bytes(o, depth + 1) for o in (*args, *kwargs.values()))
    return 0


def _inline_data(plan, i) -> bool:
    """Chunk i's data travels inside the graph: an in-memory array, or a task holding one.

    Such a chunk would be shipped to the cluster with every pass.  Tasks
    that read from a store (Zarr) depend on a shared node and are not
    inline; tasks that make their data (``da.random``) embed none.
    """
    from dask._task_spec import GraphNode, Task, TaskRef

    src = plan.sources[i]
    if isinstance(src, TaskRef):
        return False
    if isinstance(src, Task):
        if src.dependencies:
            return False
        embedded = _embedded_bytes(src)
        return embedded > 0 and embedded >= plan.chunk_bytes[i] // 2
    return not isinstance(src, GraphNode)  # the chunk's data itself


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
    """

    def __init__(self, X, persist: bool = False):
        if X.numblocks[1] != 1:
            X = X.rechunk({1: -1})
        if persist:
            X = X.persist()
        self.X = X
        self.n_samples, self.n_features = (int(s) for s in X.shape)
        self.dtype = X.dtype
        self._plan = None
        self._client_plan = None  # (client, plan with in-memory chunks scattered, their futures)
        self._bundles = None  # (client, [(future, starts)]) for persisted or scattered chunks

    @property
    def plan(self) -> _ChunkPlan:
        if self._plan is None:
            self._plan = _ChunkPlan(self.X)
        return self._plan

    def map_reduce(self, fn, *args):
        import dask
        import dask.threaded

        plan = self.plan
        get = dask.base.get_scheduler(collections=[self.X])
        if get is dask.threaded.get and plan.local:
            # What the threaded scheduler would do, without its per-task
            # bookkeeping: load each chunk and apply fn on a thread pool.
            def run(i):
                return fn(np.asarray(plan.block(i)), plan.starts[i], *args)

            return merge_all(_run_blocks(run, len(plan.starts)))
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
            dsk, keys = _bundle_graph(fn, args, bundles)
        else:
            threads = max(1, sum(client.nthreads().values()))
            groups = plan.groups(threads, self._locations(client, plan))
            dsk, keys = plan.graph(fn, args, groups)
        return merge_all(get(dsk, keys))

    def _scattered_lost(self) -> bool:
        if self._client_plan is None:
            return False
        return any(f.status != "finished" for f in self._client_plan[2])

    def _plan_for(self, client) -> _ChunkPlan:
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
        from dask._task_spec import TaskRef

        plan = self.plan
        inline = [i for i in range(len(plan.sources)) if _inline_data(plan, i)]
        futures = []
        if inline:
            futures = self._scatter(client, plan, inline)
            scattered = copy.copy(plan)
            scattered.sources = list(plan.sources)
            scattered.shared = dict(plan.shared)
            scattered.groupable = list(plan.groupable)
            scattered.local = False
            for i, future in zip(inline, futures):
                scattered.sources[i] = TaskRef(future.key)
                scattered.shared[future.key] = future
                scattered.groupable[i] = True
            logger.debug("scattered %d in-memory chunks to the cluster", len(inline))
            plan = scattered
        self._client_plan = (client, plan, futures)
        return plan

    @staticmethod
    def _scatter(client, plan, chunks):
        """Futures of the given chunks, in order, sent to the workers in consecutive runs."""
        nthreads = client.nthreads()
        workers = sorted(nthreads)
        total = sum(plan.chunk_bytes[i] for i in chunks) or 1
        capacity = sum(nthreads.values()) or 1
        # worker j takes the chunks whose middle byte falls in its share
        bounds = list(itertools.accumulate(nthreads[w] / capacity * total for w in workers))
        futures, batch = [], []
        state = {"worker": None, "bytes": 0}

        def flush():
            if batch:
                futures.extend(client.scatter(list(batch), workers=[state["worker"]], hash=False))
                batch.clear()

        done = 0
        for i in chunks:
            mid = done + plan.chunk_bytes[i] / 2
            worker = workers[next((j for j, b in enumerate(bounds) if mid < b), len(workers) - 1)]
            if worker != state["worker"] or state["bytes"] >= SCATTER_BATCH_BYTES:
                flush()
                state.update(worker=worker, bytes=0)
            batch.append(np.asarray(_evaluate(plan.sources[i], {})))
            state["bytes"] += plan.chunk_bytes[i]
            done += plan.chunk_bytes[i]
        flush()
        return futures

    def _persisted_bundles(self, client, plan=None):
        """For chunks persisted (or scattered) on the cluster: one future per group of chunks on a worker.

        A pass over 1,000 persisted chunks would otherwise send 1,000
        dependency edges to the scheduler every iteration (~0.2 s here);
        the bundles (tuples referencing the chunks where they are, no copy)
        are made once and reused by every pass.
        """
        from dask._task_spec import TaskRef

        from distributed import Future

        plan = self.plan if plan is None else plan
        if not plan.sources or not all(
            isinstance(s, TaskRef) and isinstance(plan.shared.get(s.key), Future) for s in plan.sources
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
        for run in groups:
            futures = [plan.shared[plan.sources[i].key] for i in run]
            bundle = client.submit(_bundle, *futures, pure=False)
            bundles.append((bundle, tuple(plan.starts[i] for i in run)))
        self._bundles = (client, bundles)
        return bundles

    def _locations(self, client, plan=None):
        """Per chunk, the worker holding the persisted data it loads from (None if none)."""
        from dask._task_spec import GraphNode, TaskRef
        from distributed import Future

        plan = self.plan if plan is None else plan
        shared = plan.shared
        deps = {}
        for i, src in enumerate(plan.sources):
            if isinstance(src, TaskRef):
                keys = [src.key]
            elif isinstance(src, GraphNode):
                keys = sorted(src.dependencies, key=str)
            else:
                keys = []
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
        rows = self.X[indices[order]].compute()
        out = np.empty((len(indices), self.n_features))
        out[order] = rows
        return out


# ---------------------------------------------------------------------------
# Reproducible randomness per row, independent of the chunking.

#: rows per block of the row-indexed random stream
RNG_BLOCK_ROWS = 65_536
#: 64-bit outputs per step of Philox-4x64's counter (``Philox.advance`` steps)
_PHILOX_WORDS = 4


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
        bitgen = np.random.Philox(key=[int(key) & (2**64 - 1), (int(stream) << 40) | b])
        # Skip the draws of the block's rows before lo instead of generating
        # them: every double takes one 64-bit output, and one step of
        # Philox's counter makes four.
        skip = (lo - b * RNG_BLOCK_ROWS) * ncols
        bitgen.advance(skip // _PHILOX_WORDS)
        gen = np.random.Generator(bitgen)
        if skip % _PHILOX_WORDS:
            gen.random(skip % _PHILOX_WORDS)
        out[lo - start : hi - start] = gen.random((hi - lo, ncols))
    return out
