"""Fixes from a review of the engine: each test fails without its fix.

Parameter and input validation with scikit-learn's wording, fitted
attributes checked before the kernels read them, resume's data checks,
safe ``save(overwrite=True)``, Zarr arrays that are not 2-D and Zarr
groups, dask DataFrames, in-memory chunks sent to a cluster once,
scikit-learn's tied start from one row per component, persistence of
every parameter, and the row-indexed random stream.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from fractions import Fraction

import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

from gmm_engine import (
    DataValidationError,
    EMState,
    GaussianMixture,
    InvalidParameterError,
    ModelFormatError,
)
from gmm_engine._data import RNG_BLOCK_ROWS, DaskData, row_uniforms
from gmm_engine._persist import _doc_checksum
from gmm_engine._stats import summary_chunk


def _data(n=300, D=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0, 0.0], [5.0, 3.0, 0.0], [0.0, 4.0, 5.0]])[:, :D]
    labels = rng.choice(3, size=n, p=[0.4, 0.35, 0.25])
    return centers[labels] + rng.normal(size=(n, D))


X = _data()


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _sklearn_error(kwargs, Xfit, method="fit"):
    try:
        quiet(getattr(SkGaussianMixture(**kwargs), method), Xfit)
    except Exception as exc:  # noqa: BLE001 - whatever scikit-learn raises is the oracle
        return exc
    raise AssertionError(f"scikit-learn accepted {kwargs}")


def assert_same_params(a, b, rtol=1e-9, atol=1e-9):
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(a, attr), getattr(b, attr), rtol=rtol, atol=atol, err_msg=attr)


# ---------------------------------------------------------------------------
# 1. tol and reg_covar: NaN and infinities are not in [0.0, inf)


@pytest.mark.parametrize("param", ["tol", "reg_covar"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float32("nan")])
def test_nan_and_inf_parameters_refused_with_sklearn_text(param, value):
    expected = _sklearn_error({param: value}, X)
    assert type(expected).__name__ == "InvalidParameterError"
    with pytest.raises(InvalidParameterError, match=f"^{re.escape(str(expected))}$"):
        GaussianMixture(**{param: value}).fit(X)


# ---------------------------------------------------------------------------
# 9. small validation parity


@pytest.mark.parametrize(
    "param, value",
    [("means_init", "abc"), ("means_init", b"abc"), ("weights_init", "ab"),
     ("precisions_init", "x"), ("weights_init", 3), ("means_init", np.float64(2.0))],
)
def test_strings_and_scalars_are_not_array_like(param, value):
    expected = _sklearn_error({"n_components": 2, param: value}, X)
    with pytest.raises(InvalidParameterError, match=f"^{re.escape(str(expected))}$"):
        GaussianMixture(2, **{param: value}).fit(X)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_iter": False}, {"n_init": True}, {"tol": True}, {"verbose_interval": True},
     {"reg_covar": False, "n_components": 1, "init_params": "kmeans"}, {"random_state": True}],
)
def test_bools_accepted_for_numbers_like_sklearn(kwargs):
    params = {"n_components": 2, "init_params": "random_from_data", "random_state": 0, **kwargs}
    sk = quiet(SkGaussianMixture(**params).fit, X)
    ours = quiet(GaussianMixture(**params).fit, X)
    assert_same_params(ours, sk, rtol=1e-7, atol=1e-9)
    assert ours.n_iter_ == sk.n_iter_


@pytest.mark.parametrize("param", ["max_iter", "n_init"])
def test_numpy_bool_is_not_an_int_like_sklearn(param):
    expected = _sklearn_error({param: np.True_}, X)
    with pytest.raises(InvalidParameterError, match=f"^{re.escape(str(expected))}$"):
        GaussianMixture(**{param: np.True_}).fit(X)


def test_bool_n_components_refused_as_type_error():
    # scikit-learn lets n_components=True through its checks and then fails
    # with a bare TypeError; ours says which parameter (and is a TypeError too)
    assert isinstance(_sklearn_error({"n_components": True}, X), TypeError)
    with pytest.raises(TypeError, match="The 'n_components' parameter of GaussianMixture must be an int"):
        GaussianMixture(n_components=True).fit(X)


@pytest.mark.parametrize("scalar", [3.0, np.float64(3.0), np.array(3.0), 7])
def test_scalar_input_uses_sklearn_scalar_wording(scalar):
    expected = str(_sklearn_error({}, scalar))
    assert "got scalar array" in expected
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        GaussianMixture().fit(scalar)
    gm = GaussianMixture(random_state=0).fit(X[:, :1])
    with pytest.raises(ValueError, match=re.escape("Expected 2D array, got scalar array instead")):
        gm.predict(scalar)


# ---------------------------------------------------------------------------
# 2. fitted attributes are checked before the kernels read them


@pytest.fixture(scope="module")
def fitted3():
    return GaussianMixture(3, random_state=0).fit(X)


def _copy(gm):
    out = GaussianMixture(**gm.get_params())
    for k, v in vars(gm).items():
        if k.endswith("_") and not k.startswith("__"):
            setattr(out, k, v.copy() if isinstance(v, np.ndarray) else v)
    out._fitted_covariance_type = gm._fitted_covariance_type
    return out


@pytest.mark.parametrize(
    "attr, cut, pattern",
    [
        ("means_", slice(0, 2), r"means_ has shape \(2, 3\), expected \(3, 3\)"),
        ("weights_", slice(0, 2), r"means_ has shape \(3, 3\), expected \(2, 3\)"),
        ("precisions_cholesky_", slice(0, 1), r"precisions_cholesky_ has shape \(1, 3, 3\), expected \(3, 3, 3\)"),
    ],
)
@pytest.mark.parametrize("method", ["score_samples", "predict", "predict_proba", "score", "bic", "lazy"])
def test_truncated_fitted_attributes_raise(fitted3, attr, cut, pattern, method):
    gm = _copy(fitted3)
    setattr(gm, attr, getattr(gm, attr)[cut])
    with pytest.raises(ValueError, match="The fitted parameters of this GaussianMixture do not agree") as info:
        if method == "lazy":
            gm.predict(da.from_array(X, chunks=(100, 3)))
        else:
            getattr(gm, method)(X)
    assert re.search(pattern, str(info.value))
    assert "refit the model" in str(info.value)


def test_truncated_covariances_refused_by_sample(fitted3):
    gm = _copy(fitted3)
    gm.covariances_ = gm.covariances_[:2]
    gm.score_samples(X)  # scoring does not read covariances_
    with pytest.raises(ValueError, match=r"covariances_ has shape \(2, 3, 3\), expected \(3, 3, 3\)"):
        gm.sample(5)


def test_means_of_wrong_rank_refused(fitted3):
    gm = _copy(fitted3)
    gm.means_ = gm.means_.ravel()
    with pytest.raises(ValueError, match=r"means_ has shape \(9,\), expected \(3, 3\)"):
        gm.score_samples(X)


@pytest.mark.parametrize("fitted_type, new_type", [("full", "diag"), ("tied", "full"), ("diag", "spherical"), ("spherical", "tied")])
def test_changed_covariance_type_keeps_scoring_the_fitted_model(fitted_type, new_type, tmp_path):
    kwargs = dict(n_components=3, covariance_type=fitted_type, init_params="random_from_data", random_state=0)
    gm = quiet(GaussianMixture(**kwargs).fit, X)
    sk = quiet(SkGaussianMixture(**kwargs).fit, X)
    before = {m: getattr(gm, m)(X) for m in ("score_samples", "predict", "predict_proba")}
    bic, n_par, draws = gm.bic(X), gm._n_parameters(), gm.sample(7)
    assert n_par == sk._n_parameters()
    gm.set_params(covariance_type=new_type)
    for m, value in before.items():
        np.testing.assert_array_equal(getattr(gm, m)(X), value, err_msg=m)
    assert gm._n_parameters() == n_par and gm.bic(X) == bic
    np.testing.assert_array_equal(gm.sample(7)[0], draws[0])
    np.testing.assert_allclose(gm.score_samples(X), sk.score_samples(X), rtol=1e-6)
    # saved and loaded, it is still the fitted model, with the parameters as set
    back = GaussianMixture.load(gm.save(tmp_path / "m"))
    assert back.covariance_type == new_type
    np.testing.assert_array_equal(back.score_samples(X), before["score_samples"])
    # and a warm start refuses to continue it with the other type
    with pytest.raises(ValueError, match="warm_start=True continues the previous fit"):
        back.set_params(warm_start=True).fit(X)


def test_changed_n_components_keeps_the_fitted_count(fitted3):
    gm = _copy(fitted3).set_params(n_components=2)
    sk = quiet(SkGaussianMixture(3, random_state=0).fit, X).set_params(n_components=2)
    assert gm.predict_proba(X).shape == sk.predict_proba(X).shape == (300, 3)
    assert gm.predict_proba(da.from_array(X, chunks=(100, 3))).compute().shape == (300, 3)


# ---------------------------------------------------------------------------
# 3. resume validates the data like fit


@pytest.fixture(scope="module")
def mid_state():
    states = []
    quiet(GaussianMixture(3, random_state=0, max_iter=3, tol=0).fit, X, on_iteration=states.append)
    return states[1]


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_resume_refuses_nan_and_inf(mid_state, kind):
    Xbad = X.copy()
    Xbad[7, 1] = np.nan
    Xbad[100, 0] = np.inf
    Xin = Xbad if kind == "numpy" else da.from_array(Xbad, chunks=(50, 3))
    with pytest.raises(DataValidationError, match=re.escape("Input X contains NaN and infinity") + ".*row indices 7, 100"):
        GaussianMixture(3, random_state=0, max_iter=6).resume(Xin, mid_state)


def test_resume_refuses_fewer_rows_than_components(mid_state):
    with pytest.raises(ValueError, match="Expected n_samples >= n_components but got n_components = 3, n_samples = 2"):
        GaussianMixture(3, max_iter=6).resume(X[:2], mid_state)


def test_resume_still_equals_uninterrupted(mid_state):
    full = quiet(GaussianMixture(3, random_state=0, max_iter=6, tol=0).fit, X)
    resumed = quiet(GaussianMixture(3, random_state=0, max_iter=6, tol=0).resume, X, mid_state)
    assert isinstance(mid_state, EMState)
    assert_same_params(resumed, full, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# 4. save(overwrite=True) replaces only a model directory


@pytest.fixture(scope="module")
def small_model():
    return GaussianMixture(2, random_state=0).fit(X)


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_overwrite_refuses_a_foreign_directory(small_model, tmp_path):
    target = tmp_path / "results"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    (target / "sub").mkdir()
    with pytest.raises(FileExistsError, match=r"is not a gmm-stream model directory that can be replaced: it has no model\.json") as info:
        small_model.save(target, overwrite=True)
    assert "move or delete it yourself, or save to another path" in str(info.value)
    assert (target / "notes.txt").read_text() == "precious" and (target / "sub").is_dir()
    assert _leftovers(tmp_path) == []


def test_overwrite_refuses_a_regular_file(small_model, tmp_path):
    target = tmp_path / "afile"
    target.write_text("data")
    with pytest.raises(FileExistsError, match="it is a file, not a directory"):
        small_model.save(target, overwrite=True)
    assert target.read_text() == "data"
    assert _leftovers(tmp_path) == []


def test_overwrite_refuses_a_model_directory_holding_other_files(small_model, tmp_path):
    target = small_model.save(tmp_path / "m")
    (target / "report.html").write_text("<html/>")
    with pytest.raises(FileExistsError, match=re.escape("it holds files that are not part of the model (report.html)")):
        small_model.save(target, overwrite=True)
    assert (target / "report.html").is_file()
    GaussianMixture.load(target)


def test_overwrite_refuses_a_corrupt_model_directory(small_model, tmp_path):
    target = small_model.save(tmp_path / "m")
    (target / "model.json").write_text("{")
    with pytest.raises(FileExistsError, match="model.json is not valid JSON"):
        small_model.save(target, overwrite=True)
    assert (target / "model.json").read_text() == "{"


def test_overwrite_replaces_an_empty_directory(small_model, tmp_path):
    (tmp_path / "m").mkdir()
    small_model.save(tmp_path / "m", overwrite=True)
    assert GaussianMixture.load(tmp_path / "m").n_components == 2
    assert _leftovers(tmp_path) == []


def test_overwrite_replaces_a_model_directory(small_model, tmp_path):
    target = GaussianMixture(3, random_state=0).fit(X).save(tmp_path / "m")
    small_model.save(target, overwrite=True)
    assert GaussianMixture.load(target).n_components == 2
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# 5. Zarr arrays that are not 2-D, and Zarr groups


def _zarr(path, arr):
    z = zarr.create_array(str(path), shape=arr.shape, chunks=arr.shape, dtype=arr.dtype)
    z[...] = arr
    return str(path)


@pytest.mark.parametrize("shape", [(30,), (10, 3, 2)], ids=["1d", "3d"])
@pytest.mark.parametrize("as_path", [True, False], ids=["path", "array"])
def test_zarr_not_2d_has_sklearn_message(tmp_path, shape, as_path):
    arr = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    path = _zarr(tmp_path / "a.zarr", arr)
    Xin = path if as_path else zarr.open_array(path, mode="r")
    first_line = str(_sklearn_error({}, arr)).split("\n")[0]
    with pytest.raises(ValueError, match=f"^{re.escape(first_line)}"):
        GaussianMixture().fit(Xin)
    gm = GaussianMixture(random_state=0).fit(X[:, :2] if len(shape) == 3 else X[:, :1])
    with pytest.raises(ValueError, match=f"^{re.escape(first_line)}"):
        gm.predict(Xin)


def test_zarr_group_path_names_its_arrays(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("X", shape=(10, 2), dtype="f8")
    g.create_array("labels", shape=(10,), dtype="i8")
    g.create_group("meta")
    msg = re.escape(f"{tmp_path / 'g.zarr'} is a Zarr group, not an array (its arrays: 'X', 'labels'; its groups: 'meta')")
    with pytest.raises(ValueError, match=msg) as info:
        GaussianMixture().fit(str(tmp_path / "g.zarr"))
    assert f"for example {tmp_path / 'g.zarr'}/X" in str(info.value)
    with pytest.raises(ValueError, match="is a Zarr group, not an array"):
        GaussianMixture().fit(zarr.open_group(str(tmp_path / "g.zarr"), mode="r"))
    gm = GaussianMixture(random_state=0).fit(X[:, :2])
    with pytest.raises(ValueError, match="is a Zarr group, not an array"):
        gm.score_samples(str(tmp_path / "g.zarr"))


def test_empty_zarr_group(tmp_path):
    zarr.open_group(str(tmp_path / "e.zarr"), mode="w")
    with pytest.raises(ValueError, match=r"is a Zarr group, not an array \(it holds no arrays\)"):
        GaussianMixture().fit(str(tmp_path / "e.zarr"))


# ---------------------------------------------------------------------------
# 6. dask DataFrames stay lazy


def test_dask_dataframe_is_lazy_and_keeps_column_names(monkeypatch):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    import gmm_engine.mixture as mixture

    df = pd.DataFrame(X, columns=["a", "b", "c"])
    ddf = dd.from_pandas(df, npartitions=4)
    kwargs = dict(n_components=3, random_state=0, max_iter=10, tol=0.0)
    expected = quiet(GaussianMixture(**kwargs).fit, df)
    outputs = {m: getattr(expected, m)(df) for m in ("predict", "score_samples", "predict_proba")}
    bic = expected.bic(df)

    def gathered(*args, **kw):
        raise AssertionError("a dask DataFrame was gathered into memory")

    monkeypatch.setattr(mixture, "check_numpy", gathered)
    gm = quiet(GaussianMixture(**kwargs).fit, ddf)
    assert list(gm.feature_names_in_) == ["a", "b", "c"]
    assert_same_params(gm, expected)
    for method, want in outputs.items():
        out = getattr(gm, method)(ddf)
        assert isinstance(out, da.Array), method
        np.testing.assert_allclose(out.compute(), want, rtol=1e-9, atol=1e-12, err_msg=method)
    assert gm.bic(ddf) == pytest.approx(bic, rel=1e-9)
    with pytest.raises(ValueError, match="Feature names unseen at fit time:\n- z"):
        gm.predict(ddf.rename(columns={"c": "z"}))


# ---------------------------------------------------------------------------
# 7. in-memory chunks are sent to a distributed cluster once


def _ndarray_bytes(obj):
    from dask._task_spec import DataNode, GraphNode

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
    Xl = _data(n=3000)
    kwargs = dict(n_components=3, random_state=0, max_iter=8, tol=0.0)
    with client.as_current():
        on_cluster = quiet(GaussianMixture(**kwargs).fit, da.from_array(Xl, chunks=(400, 3)))
    assert len(graphs) >= 8
    # each pass carries parameters (a copy per task, a few hundred bytes each), never chunks of data
    assert max(graphs) < 400 * 3 * 8, graphs
    assert_same_params(on_cluster, quiet(GaussianMixture(**kwargs).fit, Xl))


def test_scattered_chunks_sent_again_when_lost(spied_client, caplog):
    client, _ = spied_client
    data = DaskData(da.from_array(X, chunks=(50, 3)))
    with client.as_current():
        data.map_reduce(summary_chunk)
        client.cancel(data._client_plan[2])  # as if their worker had died
        with caplog.at_level("WARNING", logger="gmm_engine._data"):
            again = data.map_reduce(summary_chunk)
    assert again.n_samples == 300
    assert "scattering them again" in caplog.text


def test_chunks_read_from_zarr_are_not_scattered(spied_client, tmp_path):
    client, _ = spied_client
    path = _zarr(tmp_path / "x.zarr", X)
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
    path = _zarr(tmp_path / "x.zarr", X)
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
    from gmm_engine._data import _is_store_handle
    from gmm_engine._zarr_io import ZarrRows

    on_disk = zarr.open_array(_zarr(tmp_path / "x.zarr", X), mode="r")
    assert _is_store_handle(on_disk)
    assert _is_store_handle(ZarrRows(on_disk))
    in_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(10, 2), dtype="f8")
    assert not _is_store_handle(in_memory)  # its data would travel with every task
    assert not _is_store_handle(ZarrRows(in_memory))
    assert not _is_store_handle(np.zeros(3))
    assert not _is_store_handle(b"x" * 100)


# ---------------------------------------------------------------------------
# 8. tied start from one row per component: scikit-learn's covariance


def _blobs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)) * [1.0, 3.0] + rng.choice([0.0, 6.0], size=(n, 1))


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tied_random_from_data_start_and_fit_equal_sklearn(kind, seed):
    Xb = _blobs()
    Xin = Xb if kind == "numpy" else da.from_array(Xb, chunks=(37, 2))
    kwargs = dict(n_components=5, covariance_type="tied", init_params="random_from_data", random_state=seed)
    sk0 = SkGaussianMixture(max_iter=0, **kwargs).fit(Xb)
    ours0 = quiet(GaussianMixture(max_iter=0, **kwargs).fit, Xin)
    np.testing.assert_allclose(ours0.covariances_, sk0.covariances_, rtol=1e-12)
    np.testing.assert_allclose(ours0.precisions_cholesky_, sk0.precisions_cholesky_, rtol=1e-9)
    sk = quiet(SkGaussianMixture(max_iter=30, tol=1e-8, **kwargs).fit, Xb)
    ours = quiet(GaussianMixture(max_iter=30, tol=1e-8, **kwargs).fit, Xin)
    assert_same_params(ours, sk, rtol=1e-7, atol=1e-9)
    assert ours.n_iter_ == sk.n_iter_


def test_tied_k_means_plus_plus_start_is_sklearn_formula_for_its_rows():
    Xb = _blobs()
    gm = quiet(GaussianMixture(5, covariance_type="tied", init_params="k-means++", random_state=0, max_iter=0).fit, Xb)
    # the chosen rows are the initial means; scikit-learn's M-step from them
    indices = [int(np.flatnonzero((Xb == m).all(axis=1))[0]) for m in gm.means_]
    resp = np.zeros((len(Xb), 5))
    resp[indices, np.arange(5)] = 1.0
    _, _, cov = _estimate_gaussian_parameters(Xb, resp, 1e-6, "tied")
    np.testing.assert_allclose(gm.covariances_, cov, rtol=1e-12)


def _exact_tied(Xf, indices, reg_covar):
    """scikit-learn's formula in exact rational arithmetic on the float64 values."""
    K, D = len(indices), Xf.shape[1]
    eps10 = Fraction(10) * Fraction(np.finfo(np.float64).eps)
    nk = 1 + eps10
    x = [[Fraction(float(v)) for v in row] for row in Xf]
    out = np.empty((D, D))
    for i in range(D):
        for j in range(D):
            total = sum(r[i] * r[j] for r in x) - sum(x[k][i] * x[k][j] for k in indices) / nk
            out[i, j] = float(total / (K * nk) + (Fraction(reg_covar) if i == j else 0))
    return out


@pytest.mark.parametrize("offset", [0.0, 1e4, 1e8])
def test_tied_one_hot_start_accurate_far_from_the_origin(offset):
    Xf = _blobs(n=80) + offset
    kwargs = dict(n_components=3, covariance_type="tied", init_params="random_from_data", random_state=4)
    indices = np.random.RandomState(4).choice(len(Xf), size=3, replace=False)
    exact = _exact_tied(Xf, indices, 1e-6)
    from gmm_engine._data import NumpyData
    from gmm_engine._init import tied_one_hot_covariance

    for data in (NumpyData(Xf), DaskData(da.from_array(Xf, chunks=(9, 2)))):
        summary = data.map_reduce(summary_chunk)
        cov = tied_one_hot_covariance(data, summary, Xf[indices], 1e-6)
        np.testing.assert_allclose(cov, exact, rtol=4e-15, atol=0)
    if offset <= 1e4:  # at 1e8 the start itself is numerically singular
        ours = quiet(GaussianMixture(max_iter=0, **kwargs).fit, Xf)
        np.testing.assert_allclose(ours.covariances_, exact, rtol=4e-15)


def test_tied_random_start_is_sklearn_formula_for_its_responsibilities():
    """'random': every row's responsibilities sum to 1, so the shifted statistics are sklearn's."""
    Xb = _blobs() + 1e3
    gm = quiet(GaussianMixture(4, covariance_type="tied", init_params="random", random_state=3, max_iter=0).fit, Xb)
    key = int(np.random.RandomState(3).randint(0, 2**63 - 1, dtype=np.int64))
    resp = row_uniforms(key, 0, 0, len(Xb), 4)
    resp /= resp.sum(axis=1, keepdims=True)
    weights, means, cov = _estimate_gaussian_parameters(Xb, resp, 1e-6, "tied")
    np.testing.assert_allclose(gm.weights_, weights / len(Xb), rtol=1e-12)
    np.testing.assert_allclose(gm.means_, means, rtol=1e-12)
    np.testing.assert_allclose(gm.covariances_, cov, rtol=1e-8)


def test_tied_kmeans_start_is_the_pooled_hard_cluster_scatter():
    """'kmeans': one-hot labels on every row, so scikit-learn's tied is the weighted full ones."""
    Xb = _blobs()
    kw = dict(n_components=4, init_params="kmeans", random_state=0, max_iter=0)
    full = quiet(GaussianMixture(covariance_type="full", **kw).fit, Xb)
    tied = quiet(GaussianMixture(covariance_type="tied", **kw).fit, Xb)
    pooled = np.einsum("k,kij->ij", full.weights_, full.covariances_ - 1e-6 * np.eye(2)) + 1e-6 * np.eye(2)
    np.testing.assert_allclose(tied.covariances_, pooled, rtol=1e-9)


# ---------------------------------------------------------------------------
# 10. persistence: every parameter, or a warning; a checked fitted section


def test_random_state_instance_warns_and_is_saved_as_none(tmp_path):
    gm = GaussianMixture(2, random_state=np.random.RandomState(0)).fit(X)
    with pytest.warns(UserWarning, match=r"The parameter random_state=RandomState\(MT19937\).* cannot be stored"):
        path = gm.save(tmp_path / "m")
    assert GaussianMixture.load(path).random_state is None


def test_int_random_state_saves_without_warning(tmp_path):
    gm = GaussianMixture(2, random_state=np.int64(3)).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = gm.save(tmp_path / "m")
    assert GaussianMixture.load(path).random_state == 3


def test_initial_parameters_round_trip(tmp_path):
    K, D = 2, 3
    params = dict(
        weights_init=[0.4, 0.6],
        means_init=np.array([[0.0, 0.0, 0.0], [5.0, 3.0, 0.0]], dtype=np.float32),
        precisions_init=np.stack([np.eye(D)] * K),
    )
    gm = GaussianMixture(K, random_state=0, **params).fit(X)
    path = gm.save(tmp_path / "m")
    for name in params:
        assert (path / f"{name}.npy").is_file()
    back = GaussianMixture.load(path)
    got, want = back.get_params(), gm.get_params()
    assert got.keys() == want.keys()
    for name, value in want.items():
        if name in params:
            np.testing.assert_array_equal(got[name], np.asarray(value), err_msg=name)
            assert got[name].dtype == np.asarray(value).dtype, name
        else:
            assert got[name] == value, name
    # refitting the loaded model starts where the original did
    assert_same_params(GaussianMixture(**got).fit(X), gm, rtol=1e-12, atol=1e-12)


def _rewrite(path, fname, data):
    (path / fname).write_bytes(data)


def _edit_doc(path, edit):
    doc = json.loads((path / "model.json").read_text())
    edit(doc)
    doc["checksum"] = _doc_checksum(doc)
    (path / "model.json").write_text(json.dumps(doc))


def test_tampered_initial_parameter_refused(tmp_path):
    gm = GaussianMixture(2, random_state=0, means_init=[[0.0, 0.0, 0.0], [5.0, 3.0, 0.0]]).fit(X)
    path = gm.save(tmp_path / "m")
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3)))
    _rewrite(path, "means_init.npy", buf.getvalue())
    with pytest.raises(ModelFormatError, match="means_init.npy does not match its sha256"):
        GaussianMixture.load(path)
    # with a matching checksum, an object array is still refused
    buf = io.BytesIO()
    np.save(buf, np.array(["a", "b"]))
    data = buf.getvalue()
    _rewrite(path, "means_init.npy", data)
    _edit_doc(path, lambda d: d["arrays"]["means_init"].__setitem__("sha256", hashlib.sha256(data).hexdigest()))
    with pytest.raises(ModelFormatError, match="means_init.npy has dtype <U1, expected a numeric dtype"):
        GaussianMixture.load(path)


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("n_iter_", "5", "n_iter_ must be a non-negative integer, got '5'"),
        ("n_iter_", 2.5, "n_iter_ must be a non-negative integer, got 2.5"),
        ("n_iter_", True, "n_iter_ must be a non-negative integer, got True"),
        ("n_iter_", -1, "n_iter_ must be a non-negative integer, got -1"),
        ("converged_", 1, "converged_ must be true or false, got 1"),
        ("converged_", "yes", "converged_ must be true or false, got 'yes'"),
        ("lower_bound_", "abc", "lower_bound_ must be a number, got 'abc'"),
        ("lower_bound_", None, "lower_bound_ must be a number, got None"),
        ("lower_bounds_", [1.0, "x"], "lower_bounds_ must be a list of numbers"),
    ],
)
def test_fitted_section_types_checked(small_model, tmp_path, field, value, pattern):
    path = small_model.save(tmp_path / "m")
    _edit_doc(path, lambda d: d["fitted"].__setitem__(field, value))
    with pytest.raises(ModelFormatError, match=re.escape(pattern)) as info:
        GaussianMixture.load(path)
    assert "the fitted section of model.json is invalid" in str(info.value)


def test_fitted_values_have_their_types_after_load(tmp_path):
    gm = quiet(GaussianMixture(2, random_state=0, max_iter=0).fit, X)  # lower_bound_ = -inf
    back = GaussianMixture.load(gm.save(tmp_path / "m"))
    assert type(back.n_iter_) is int and type(back.converged_) is bool
    assert type(back.lower_bound_) is float and back.lower_bound_ == -np.inf


def test_documents_without_the_new_fields_still_load(small_model, tmp_path):
    path = small_model.save(tmp_path / "m")

    def strip(d):
        for key in ("covariance_type", "n_components"):
            d["fitted"].pop(key)
        for name in ("weights_init", "means_init", "precisions_init"):
            d["params"].pop(name)

    _edit_doc(path, strip)
    back = GaussianMixture.load(path)
    np.testing.assert_array_equal(back.score_samples(X), small_model.score_samples(X))
    assert back.means_init is None


# ---------------------------------------------------------------------------
# 11. the row-indexed random stream skips to a chunk's first row


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
