"""Passes over chunked data: the one merge fold, Dask graphs, the cluster, the row random stream.

In-memory chunks go to a distributed cluster once (scattered, then
referred to), not with every pass; chunks read from Zarr are read where
they are used, with the Zarr array object inside each task; persisted
chunks run one task per worker thread; a pass's parameters travel inline
while small.  The row-indexed random stream gives every row the same
numbers whatever chunk holds it.  The private Dask names the graphs use
are those of the Dask release they were checked against.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from conftest import assert_same_params, quiet, three_clusters, zarr_one_chunk
from gmm_engine import GaussianMixture, _dask_compat, _dask_plan
from gmm_engine._chunked import merge_all
from gmm_engine._dask_compat import DataNode, GraphNode
from gmm_engine._dask_data import DaskData
from gmm_engine._rng import RNG_BLOCK_ROWS, row_uniforms
from gmm_engine._stats import summary_chunk

#: three separated clusters, 300 rows in 3-D
CLUSTERS = three_clusters()


# ---------------------------------------------------------------------------
# the private Dask names, and the release they were checked against


def test_dask_is_the_release_the_private_names_were_checked_against():
    assert dask.__version__ == _dask_compat.CHECKED_DASK_VERSION, (
        f"Dask {dask.__version__} is installed, but gmm_engine/_dask_compat.py was checked against "
        f"Dask {_dask_compat.CHECKED_DASK_VERSION}. Re-check what the graph builders take from "
        "dask._task_spec (the list in _dask_compat's docstring: GraphNode.dependencies and calling a "
        "node, Task and TaskRef arguments, DataNode.value, Alias.target, the optimised graph's node "
        "types), run tests/test_engine_data.py and tests/test_engine_api.py on a distributed client, "
        "then set CHECKED_DASK_VERSION."
    )
    from dask import _task_spec

    for name in _dask_compat.__all__:
        if name != "CHECKED_DASK_VERSION":
            assert getattr(_task_spec, name) is getattr(_dask_compat, name), name
    assert issubclass(_dask_compat.DataNode, _dask_compat.GraphNode)
    assert issubclass(_dask_compat.Alias, _dask_compat.GraphNode)


# ---------------------------------------------------------------------------
# the one fold


class _Leaf:
    def __init__(self, text):
        self.text = text

    def merge(self, other):
        return _Leaf(f"({self.text}+{other.text})")


def _pairwise_levels(values):
    """Adjacent pairs merged level by level, an odd last value carried up: the tree merge_all builds."""
    values = list(values)
    while len(values) > 1:
        nxt = [values[i].merge(values[i + 1]) for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


def test_merge_all_is_the_balanced_pairwise_tree_of_a_stream():
    for n in range(1, 130):
        leaves = [_Leaf(str(i)) for i in range(n)]
        assert merge_all(iter(leaves)).text == _pairwise_levels(leaves).text, n
    with pytest.raises(ValueError, match="nothing to merge"):
        merge_all([])


# ---------------------------------------------------------------------------
# a pass's parameters


def test_pass_parameters_are_inline_when_small_and_shared_when_large(monkeypatch):
    args = (np.zeros((8, 16, 16)),)
    dsk = {}
    assert _dask_plan._args_node(dsk, "p", len, args, 4) == (len, args) and dsk == {}
    monkeypatch.setattr(_dask_plan, "INLINE_ARGS_BYTES", 4 * args[0].nbytes - 1)
    ref = _dask_plan._args_node(dsk, "p", len, args, 4)
    assert ref.key == "p" and dsk["p"].value == (len, args)  # one shared node, fetched by the tasks


# ---------------------------------------------------------------------------
# in-memory chunks are sent to a distributed cluster once


def _ndarray_bytes(obj):
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, DataNode):
        return _ndarray_bytes(obj.value)
    if isinstance(obj, (list, tuple)):
        return sum(_ndarray_bytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_ndarray_bytes(o) for o in obj.values())
    if isinstance(obj, GraphNode):
        return sum(_ndarray_bytes(o) for o in (*getattr(obj, "args", ()), *getattr(obj, "kwargs", {}).values()))
    if hasattr(obj, "sources"):  # chunk sources carried through a task unevaluated
        return _ndarray_bytes(tuple(obj.sources))
    return 0


@pytest.fixture
def spied_client(dask_cluster, monkeypatch):
    distributed = pytest.importorskip("distributed")
    graphs = []
    original = distributed.Client.get

    def get(self, dsk, keys, **kwargs):
        if isinstance(dsk, dict):
            graphs.append(sum(_ndarray_bytes(v) for v in dsk.values()))
        return original(self, dsk, keys, **kwargs)

    monkeypatch.setattr(distributed.Client, "get", get)
    with distributed.Client(dask_cluster, set_as_default=False) as client:
        yield client, graphs


@pytest.mark.parametrize("make", [lambda A: da.from_array(A, chunks=(500, 4)),
                                  lambda A: da.from_array(A, chunks=(500, 4)) * 1.0],
                         ids=["from_array", "derived"])
def test_in_memory_chunks_scattered_once(spied_client, make):
    client, graphs = spied_client
    A = np.random.default_rng(1).normal(size=(4000, 4))
    data = DaskData(make(A))
    with client.as_current():
        first = data.map_reduce(summary_chunk)
        second = data.map_reduce(summary_chunk)
    assert len(graphs) == 2
    # no chunk data in either pass's graph: it went to the workers once
    assert max(graphs) == 0, graphs
    np.testing.assert_allclose(second.mean, A.mean(axis=0), rtol=1e-12)
    assert first.n_samples == second.n_samples == 4000


def test_fit_on_cluster_ships_the_data_once(spied_client):
    client, graphs = spied_client
    Xl = three_clusters(n=3000)
    kwargs = dict(n_components=3, random_state=0, max_iter=8, tol=0.0)
    with client.as_current():
        on_cluster = quiet(GaussianMixture(**kwargs).fit, da.from_array(Xl, chunks=(400, 3)))
    assert len(graphs) >= 8
    # each pass carries parameters (a copy per task, a few hundred bytes each), never chunks of data
    assert max(graphs) < 400 * 3 * 8, graphs
    assert_same_params(on_cluster, quiet(GaussianMixture(**kwargs).fit, Xl))


def test_scattered_chunks_sent_again_when_lost(spied_client, caplog):
    client, _ = spied_client
    data = DaskData(da.from_array(CLUSTERS, chunks=(50, 3)))
    with client.as_current():
        data.map_reduce(summary_chunk)
        client.cancel(data._client_plan[2])  # as if their worker had died
        with caplog.at_level("WARNING", logger="gmm_engine._dask_data"):
            again = data.map_reduce(summary_chunk)
    assert again.n_samples == 300
    assert "scattering them again" in caplog.text


def test_chunks_read_from_zarr_are_not_scattered(spied_client, tmp_path):
    client, _ = spied_client
    path = zarr_one_chunk(tmp_path / "x.zarr", CLUSTERS)
    data = DaskData(da.from_zarr(zarr.open_array(path, mode="r"), chunks=(50, 3)))
    with client.as_current():
        data.map_reduce(summary_chunk)
    assert data._client_plan[2] == []


@pytest.fixture
def pass_graphs(monkeypatch):
    """The graphs the distributed client is asked to compute, in order."""
    distributed = pytest.importorskip("distributed")
    graphs = []
    original = distributed.Client.get

    def get(self, dsk, keys, **kwargs):
        graphs.append(dict(dsk))
        return original(self, dsk, keys, **kwargs)

    monkeypatch.setattr(distributed.Client, "get", get)
    return graphs


def _chunk_keys(dsk, name):
    return [k for k in dsk if isinstance(k, tuple) and name in k[0] and "merge" not in k[0]]


def test_zarr_pass_tasks_spread_over_workers_without_a_shared_node(dask_cluster, tmp_path, pass_graphs):
    # The Zarr array object travels inside each task: as a shared node it was
    # computed on one worker per pass and every task followed it there.
    distributed = pytest.importorskip("distributed")
    path = zarr_one_chunk(tmp_path / "x.zarr", CLUSTERS)
    data = DaskData(da.from_zarr(zarr.open_array(path, mode="r"), chunks=(50, 3)))
    with distributed.Client(dask_cluster, set_as_default=False) as client, client.as_current():
        with distributed.get_task_stream(client) as stream:
            stats = data.map_reduce(summary_chunk)
    assert stats.n_samples == 300
    (dsk,) = pass_graphs
    chunk_tasks = [dsk[k] for k in _chunk_keys(dsk, "summary_chunk")]
    assert len(chunk_tasks) == 6
    assert all(not t.dependencies for t in chunk_tasks)
    assert not any("array" in str(k) for k in dsk)
    workers = {r["worker"] for r in stream.data if "summary_chunk" in str(r["key"]) and "merge" not in str(r["key"])}
    assert len(workers) == 2, workers


def test_persisted_chunks_are_one_task_per_worker_thread(dask_cluster, pass_graphs):
    # chunks held by a worker run there whatever the split: more tasks only cost round trips
    distributed = pytest.importorskip("distributed")
    A = np.random.default_rng(3).normal(size=(1600, 3))
    with distributed.Client(dask_cluster, set_as_default=False) as client, client.as_current():
        Xp = client.persist(da.from_array(A, chunks=(100, 3)) + 0.0)
        distributed.wait(Xp)
        data = DaskData(Xp)
        stats = data.map_reduce(summary_chunk)
        held = client.who_has(Xp)
    chunk_tasks = _chunk_keys(pass_graphs[-1], "summary_chunk")
    holders = {w for ws in held.values() for w in ws}
    assert len(chunk_tasks) == len(holders) == 2  # one task on each worker, however many chunks it holds
    assert stats.n_samples == 1600
    np.testing.assert_allclose(stats.mean, A.mean(axis=0), rtol=1e-12)


def test_only_handles_on_stored_data_travel_inside_tasks(tmp_path):
    from gmm_engine._dask_plan import _is_store_handle
    from gmm_engine._zarr_io import ZarrRows

    on_disk = zarr.open_array(zarr_one_chunk(tmp_path / "x.zarr", CLUSTERS), mode="r")
    assert _is_store_handle(on_disk)
    assert _is_store_handle(ZarrRows(on_disk))
    in_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(10, 2), dtype="f8")
    assert not _is_store_handle(in_memory)  # its data would travel with every task
    assert not _is_store_handle(ZarrRows(in_memory))
    assert not _is_store_handle(np.zeros(3))
    assert not _is_store_handle(b"x" * 100)


# ---------------------------------------------------------------------------
# the row-indexed random stream skips to a chunk's first row


def _row_uniforms_reference(key, stream, start, stop, ncols):
    """The implementation before Philox.advance: generate each block from its start."""
    out = np.empty((stop - start, ncols))
    first, last = start // RNG_BLOCK_ROWS, (stop - 1) // RNG_BLOCK_ROWS
    for b in range(first, last + 1):
        lo = max(start, b * RNG_BLOCK_ROWS)
        hi = min(stop, (b + 1) * RNG_BLOCK_ROWS)
        gen = np.random.Generator(np.random.Philox(key=[int(key) & (2**64 - 1), (int(stream) << 40) | b]))
        block = gen.random((hi - b * RNG_BLOCK_ROWS, ncols))
        out[lo - start : hi - start] = block[lo - b * RNG_BLOCK_ROWS :]
    return out


B = RNG_BLOCK_ROWS


@pytest.mark.parametrize("ncols", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize(
    "start, stop",
    [(0, 1), (0, 100), (1, 2), (3, 11), (17, 1000), (B - 5, B), (B - 3, B + 4), (B, B + 1),
     (B + 1, 2 * B + 3), (5 * B - 1, 5 * B + 1), (3 * B + 12345, 3 * B + 12400)],
)
def test_row_uniforms_unchanged(start, stop, ncols):
    for key, stream in ((0, 0), (2**63 + 12345, 3), (987654321, 17)):
        np.testing.assert_array_equal(
            row_uniforms(key, stream, start, stop, ncols),
            _row_uniforms_reference(key, stream, start, stop, ncols),
        )


def test_row_uniforms_draws_only_the_rows_asked_for(monkeypatch):
    drawn = []
    real = np.random.Generator

    class Counting:
        def __init__(self, bitgen):
            self._gen = real(bitgen)

        def random(self, size=None):
            drawn.append(int(np.prod(size)))
            return self._gen.random(size)

    monkeypatch.setattr(np.random, "Generator", Counting)
    start, stop, ncols = 3 * B - 10, 3 * B + 5, 3
    out = row_uniforms(11, 2, start, stop, ncols)
    monkeypatch.undo()
    np.testing.assert_array_equal(out, _row_uniforms_reference(11, 2, start, stop, ncols))
    # at most 3 numbers discarded per block, instead of the block's rows before start
    assert sum(drawn) <= (stop - start) * ncols + 2 * 3, drawn


def test_row_uniforms_of_a_chunk_are_the_rows_of_the_whole():
    whole = row_uniforms(7, 1, 0, B + 500, 3)
    for start, stop in ((0, 10), (B - 7, B + 9), (400, B + 500)):
        np.testing.assert_array_equal(row_uniforms(7, 1, start, stop, 3), whole[start:stop])


def test_a_fit_and_gmm_engine_compute_on_local_threads_never_load_distributed():
    # dask would import distributed (~0.3 s of a small CLI command) only to find no client; a
    # fresh interpreter shows the engine's passes and gmm_engine.compute do without it, and
    # that a configured scheduler is still obeyed
    import subprocess
    import sys

    code = "\n".join([
        "import sys, dask, dask.array as da, numpy as np",
        "from gmm_engine import GaussianMixture, compute",
        "A = np.random.default_rng(0).normal(size=(400, 2))",
        "X = da.from_array(A, chunks=100)",
        "gm = GaussianMixture(2, random_state=0, max_iter=5, tol=1e-2).fit(X)",
        "(total,) = compute(X.sum())",
        "assert abs(total - A.sum()) < 1e-9",
        "print('distributed' in sys.modules)",
        "calls = []",
        "def spy(dsk, keys, **kw):",
        "    calls.append(1)",
        "    return dask.get(dsk, keys, **kw)",
        "with dask.config.set(scheduler=spy):",
        "    compute(X.sum())",
        "print(len(calls))",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "1"]
