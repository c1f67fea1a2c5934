"""The graphs of one pass over a dask array: chunk plan, grouped tasks, merge tree.

A pass applies ``fn(block, start, *args)`` to every row chunk and merges
the results.  Built the generic way (``map_blocks`` then ``reduction``),
every pass over 1,000 chunks would rerun dask's optimisation of the whole
array graph.  Instead, :class:`ChunkPlan` reads the array's optimised
graph once and keeps, per chunk, what makes its block (its own loading
task, its data, or a reference to a shared key); each pass then only adds
one task per *group* of chunks and a merge tree (``<t>`` a fresh token
per pass, ``<d>`` the depth of a merge level):

===============================  ======================================================
``gmm-args-<t>``                 ``(fn, args)``, when too large to travel inline
``(gmm-<fn>-<t>, g)``            :func:`_apply_group` over the chunks of group ``g``
``(gmm-<fn>-<t>-merge-<d>, j)``  :func:`merge_values` of up to :data:`SPLIT_EVERY` keys
===============================  ======================================================

The last (at most :data:`SPLIT_EVERY`) partial results come back to the
caller, which folds them with :func:`~gmm_engine._chunked.merge_all`, the
same fold the tasks use.  Persisted (or scattered) chunks use bundles
instead (:func:`bundle_graph`): one future per worker holding references
to its chunks, made once and reused by every pass.

Weighted data (``sample_weight``) plans the weight vector like the rows:
each chunk's source is then the pair ``(rows source, weights source)``,
evaluated together into the ``(rows, weights)`` block that
:func:`~gmm_engine._chunked.apply_chunk` hands to ``fn``.  The weights are
data read where the rows are read, never a parameter of the pass.

Dask's task specification is private to Dask; it is reached only through
:mod:`gmm_engine._dask_compat`.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._chunked import apply_chunk, as_block, merge_all
from ._dask_compat import Alias, DataNode, GraphNode, Task, TaskRef
from ._zarr_io import ZarrRows

#: fan-in of the tree reduction
SPLIT_EVERY = 16
#: a task of a scheduled graph covers chunks up to at least this many bytes ...
MIN_TASK_BYTES = 16 * 2**20
#: ... and there are at most this many tasks per worker thread: fewer, longer
#: tasks cost the scheduler less and let a task read its next chunk while it
#: computes on the current one
MAX_TASKS_PER_THREAD = 2
#: a pass's parameters go inline into each task while all copies together stay below this
INLINE_ARGS_BYTES = 8 * 2**20


def array_bytes(obj, depth=0) -> int:
    """Bytes of the ndarrays ``obj`` holds, however nested.

    Looks into tuples, lists, dicts, dataclasses, data nodes' values and
    tasks' arguments: what a pass's parameters weigh, and what a chunk's
    task carries inline.
    """
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if depth > 50:  # pragma: no cover - pathological nesting
        return 0
    if isinstance(obj, DataNode):
        return array_bytes(obj.value, depth + 1)
    if isinstance(obj, GraphNode):
        args = getattr(obj, "args", ()) or ()
        kwargs = getattr(obj, "kwargs", {}) or {}
        return sum(array_bytes(o, depth + 1) for o in (*args, *kwargs.values()))
    if isinstance(obj, (list, tuple)):
        return sum(array_bytes(o, depth + 1) for o in obj)
    if isinstance(obj, dict):
        return sum(array_bytes(o, depth + 1) for o in obj.values())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(array_bytes(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj))
    return 0


# ---------------------------------------------------------------------------
# what the tasks run (top level: they travel to workers by reference)


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


def parts(source) -> tuple:
    """The sources a chunk's block is made of: its rows' alone, or its rows' and its weights'."""
    return source if isinstance(source, tuple) else (source,)


def source_dependencies(source) -> set:
    """The keys of the shared graph a chunk source reads."""
    deps = set()
    for src in parts(source):
        if isinstance(src, GraphNode):
            deps.update(src.dependencies)
        elif isinstance(src, TaskRef):
            deps.add(src.key)
    return deps


def evaluate(source, values):
    """The block a chunk source makes, given the values of the keys it reads.

    A ``(rows, weights)`` source makes the pair of their blocks.
    """
    if isinstance(source, tuple):
        return tuple(evaluate(src, values) for src in source)
    if isinstance(source, GraphNode):
        return source({k: values[k] for k in source.dependencies})
    if isinstance(source, TaskRef):
        return values[source.key]
    return source  # a chunk's data


def _applied_in_turn(fn, args, load, starts, reader):
    """``fn`` of each chunk in order, loading chunk i + 1 on ``reader`` while fn runs on chunk i."""
    pending = reader.submit(load, 0)
    for i, start in enumerate(starts):
        block = pending.result()
        if i + 1 < len(starts):
            pending = reader.submit(load, i + 1)
        value = apply_chunk(fn, block, start, args)
        del block
        yield value


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
        return as_block(evaluate(sources[i], values))

    if len(sources) == 1:
        return apply_chunk(fn, load(0), starts[0], args)
    with ThreadPoolExecutor(1) as reader:
        return merge_all(_applied_in_turn(fn, args, load, starts, reader))


def bundle(*blocks):
    """The blocks themselves: a future of this refers to chunks where they are held."""
    return blocks


def _apply_bundle(fn_args, starts, blocks):
    fn, args = fn_args
    return merge_all(apply_chunk(fn, as_block(block), start, args) for block, start in zip(blocks, starts))


def merge_values(*values):
    """:func:`~gmm_engine._chunked.merge_all` as a task: the keys' results are its arguments."""
    return merge_all(values)


# ---------------------------------------------------------------------------
# the chunk plan


def _is_store_handle(value) -> bool:
    """``value`` is a handle on data held in a store (a Zarr array on disk or remote), not data itself.

    Such a node can travel inside every task that reads through it; any
    other node (an in-memory array, a Zarr array in a MemoryStore, an
    unknown object) stays one shared node of the graph.
    """
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


def _optimised_graph(X):
    """The array's optimised graph, with the persisted futures that optimisation drops.

    Returns the graph and the key of every row chunk (2-D X: one chunk
    along the features; 1-D: the weights).
    """
    keys = [k[0] if isinstance(k, list) else k for k in X.__dask_keys__()]
    raw = dict(X.__dask_graph__())
    dsk = {k: v for k, v in raw.items() if not isinstance(v, GraphNode)}
    dsk.update(X.__dask_optimize__(X.__dask_graph__(), keys))
    return dsk, keys


def _chunk_sources(dsk, keys):
    """Per chunk key, what makes its block, and the keys those sources read."""
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
    return sources, roots


class ChunkPlan:
    """How to load each row chunk of a dask array, taken once from its graph.

    Parameters
    ----------
    X : dask array of shape (n, D), one chunk along the features
    weights : dask array of shape (n,), optional
        Row weights chunked like X's rows.

    Attributes
    ----------
    sources : list
        Per row chunk, what produces its block: the chunk's own task from
        the optimised graph (run inside the task that uses the block, so a
        chunk is loaded where it is used and never stored), the chunk's
        data, or a reference to a key of ``shared`` (a persisted future or
        an upstream task).  With weights, the pair ``(rows source,
        weights source)`` of such sources.
    shared : dict
        The rest of the graph the sources depend on (a Zarr array object,
        persisted futures, upstream tasks), culled to what they need.
    handles : dict
        The small data nodes of ``shared`` the chunk tasks read through (the
        Zarr array object): carried by each task, not as a shared
        dependency, which the scheduler would compute on one worker per
        pass and then send every task to, leaving the other workers to
        steal work a second later.
    groupable : list of bool
        The source loads from ``shared`` data or futures only, so several
        chunks can share one task without holding upstream results.
    starts : list of int
        Global index of each chunk's first row.
    chunk_rows : list of int
    chunk_bytes : list of int
        Rows and weights together.
    local : bool
        Every source loads from data nodes alone: the threaded scheduler
        can be replaced by a plain thread pool.
    """

    def __init__(self, X, weights=None):
        dsk, keys = _optimised_graph(X)
        self.sources, roots = _chunk_sources(dsk, keys)
        self.shared = _cull(dsk, roots)
        # bytes per row of each part of a chunk: its rows, and its weights
        self._part_row_bytes = (X.shape[1] * X.dtype.itemsize,)
        if weights is not None:
            wdsk, wkeys = _optimised_graph(weights)
            wsources, wroots = _chunk_sources(wdsk, wkeys)
            self.shared.update(_cull(wdsk, wroots))
            self.sources = list(zip(self.sources, wsources))
            self._part_row_bytes += (weights.dtype.itemsize,)
        self.handles = {
            k: node.value for k, node in self.shared.items()
            if isinstance(node, DataNode) and _is_store_handle(node.value)
        }
        self.groupable = [self._groupable(src) for src in self.sources]
        self.local = all(
            not any(isinstance(p, TaskRef) for p in parts(src)) and ok
            and all(isinstance(v, DataNode) for v in self.shared.values())
            for src, ok in zip(self.sources, self.groupable)
        )
        self.starts = [0, *itertools.accumulate(int(c) for c in X.chunks[0])][:-1]
        self.chunk_rows = [int(c) for c in X.chunks[0]]
        self.chunk_bytes = [int(c) * sum(self._part_row_bytes) for c in X.chunks[0]]

    def _is_data(self, key) -> bool:
        node = self.shared.get(key)
        return isinstance(node, DataNode) or (node is not None and not isinstance(node, GraphNode))

    def _groupable(self, src) -> bool:
        if isinstance(src, tuple):
            return all(self._groupable(p) for p in src)
        if isinstance(src, Task):
            return all(self._is_data(d) for d in src.dependencies)
        if isinstance(src, TaskRef):
            return self._is_data(src.key)
        return True

    def block(self, i):
        """Evaluate chunk i in this process (``local`` plans only)."""
        src = self.sources[i]
        return evaluate(src, {k: self.shared[k].value for k in source_dependencies(src)})

    def part_bytes(self, i, part=None) -> int:
        """Bytes of chunk i, or of one part of it (0: its rows, 1: its weights)."""
        return self.chunk_bytes[i] if part is None else self.chunk_rows[i] * self._part_row_bytes[part]

    def inline_data(self, i, part=None) -> bool:
        """Chunk i's data travels inside the graph: an in-memory array, or a task holding one.

        Such a chunk would be shipped to the cluster with every pass.  Tasks
        that read from a store (Zarr) depend on a shared node and are not
        inline; tasks that make their data (``da.random``) embed none.
        ``part`` picks the rows' (0) or the weights' (1) source of a
        weighted chunk.
        """
        src = self.sources[i] if part is None else parts(self.sources[i])[part]
        if isinstance(src, tuple):
            return all(self.inline_data(i, p) for p in range(len(src)))
        if isinstance(src, TaskRef):
            return False
        if isinstance(src, Task):
            if src.dependencies:
                return False
            embedded = array_bytes(src)
            return embedded > 0 and embedded >= self.part_bytes(i, part or 0) // 2
        return not isinstance(src, GraphNode)  # the chunk's data itself

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
        token = uuid.uuid4().hex
        name = f"gmm-{getattr(fn, '__name__', 'chunk')}-{token}"
        needed = set()
        for node in self.shared.values():
            needed.update(getattr(node, "dependencies", ()) or ())
        dsk = {k: v for k, v in self.shared.items() if k not in self.handles or k in needed}
        fn_args = _args_node(dsk, f"gmm-args-{token}", fn, args, len(groups))
        level = []
        for g, run in enumerate(groups):
            deps = set()
            for i in run:
                deps.update(source_dependencies(self.sources[i]))
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


# ---------------------------------------------------------------------------
# graph pieces


def _args_node(dsk, pkey, fn, args, n_tasks):
    """What the tasks of a pass take as ``(fn, args)``: the value itself, or a reference to one node.

    Inline, each task carries its own copy and starts as soon as it reaches
    a worker.  As one shared node, it is made on one worker and fetched by
    the others, a worker-to-worker round trip before their first chunk
    (~10 ms, a tenth of an iteration at a million rows on two workers); that
    is worth it only when the copies would weigh more than the round trip.
    """
    if n_tasks * array_bytes(args) <= INLINE_ARGS_BYTES:
        return (fn, args)
    dsk[pkey] = DataNode(pkey, (fn, args))
    return TaskRef(pkey)


def bundle_graph(fn, args, bundles):
    """Graph of ``fn`` over persisted bundles of chunks; returns (dsk, keys to compute and merge).

    Parameters
    ----------
    bundles : list of (future, starts)
        A future of :func:`bundle` over some chunks, and their first rows.
    """
    token = uuid.uuid4().hex
    name = f"gmm-{getattr(fn, '__name__', 'chunk')}-{token}"
    dsk = {}
    fn_args = _args_node(dsk, f"gmm-args-{token}", fn, args, len(bundles))
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
    depth = 0
    while len(level) > SPLIT_EVERY:
        nxt = []
        for j in range(0, len(level), SPLIT_EVERY):
            key = (f"{name}-merge-{depth}", j // SPLIT_EVERY)
            dsk[key] = Task(key, merge_values, *(TaskRef(k) for k in level[j : j + SPLIT_EVERY]))
            nxt.append(key)
        level = nxt
        depth += 1
    return level
