"""The estimator API: scikit-learn protocol, dask/zarr input and output, a
distributed client, warm start, n_init, checkpoint callbacks and resume."""

from __future__ import annotations

import logging
import pickle
import re
import warnings

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from sklearn.base import clone
from sklearn.utils.estimator_checks import check_estimator

from conftest import assert_same_params, gaussian_clusters, quiet, three_clusters
from gmm_engine import COVARIANCE_TYPES, DataValidationError, EMState, GaussianMixture, GMMParams, open_zarr_array

CENTERS = np.array([[0.0, 0.0, 0.0], [4.0, 3.0, 0.0], [0.0, 3.0, 4.0]])
X = gaussian_clusters(300, CENTERS, (0.4, 0.35, 0.25))
#: three clusters further apart (300 rows, 3-D)
CLUSTERS = three_clusters()


def quiet_fit(est, Xin, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(Xin, **kwargs)


# ---------------------------------------------------------------------------
# scikit-learn's estimator checks and protocol


@pytest.mark.filterwarnings("ignore::UserWarning:sklearn")
def test_check_estimator_passes():
    results = check_estimator(GaussianMixture(), on_fail=None)
    assert len(results) > 30
    bad = [
        (r["check_name"], r["status"], str(r["exception"])[:300])
        for r in results
        if r["status"] != "passed"
        and not (r["check_name"] == "check_array_api_input" and r["status"] == "skipped")
    ]
    assert bad == []


def test_get_set_params_and_clone():
    gm = GaussianMixture(4, covariance_type="diag", random_state=3, persist=True)
    params = gm.get_params()
    assert params["n_components"] == 4 and params["covariance_type"] == "diag"
    assert params["persist"] is True and params["random_state"] == 3
    assert set(params) == {
        "n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init", "init_params",
        "init_size", "weights_init", "means_init", "precisions_init", "random_state", "warm_start", "verbose",
        "verbose_interval", "persist", "acceleration", "learning_decay", "learning_offset", "half_life",
        "missing",
    }
    assert gm.set_params(n_components=2, tol=1e-5) is gm
    assert gm.n_components == 2 and gm.tol == 1e-5
    gm.fit(X)
    twin = clone(gm)
    assert twin is not gm
    assert twin.get_params() == gm.get_params()
    assert not hasattr(twin, "means_")


def test_repr_shows_changed_parameters_only():
    assert repr(GaussianMixture()) == "GaussianMixture()"
    assert (
        repr(GaussianMixture(3, covariance_type="tied", random_state=0, persist=True))
        == "GaussianMixture(covariance_type='tied', n_components=3, persist=True, random_state=0)"
    )
    assert repr(GaussianMixture(tol=1e-3)) == "GaussianMixture()"


def test_sklearn_pipeline_and_grid_search():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), GaussianMixture(random_state=0))
    search = GridSearchCV(pipe, {"gaussianmixture__n_components": [1, 3]}, cv=3).fit(X)
    assert search.best_params_ == {"gaussianmixture__n_components": 3}


def test_fitted_attributes():
    gm = GaussianMixture(3, random_state=0).fit(X)
    assert gm.n_features_in_ == 3
    assert gm.weights_.shape == (3,) and gm.means_.shape == (3, 3)
    assert gm.covariances_.shape == (3, 3, 3)
    np.testing.assert_allclose(gm.precisions_, np.linalg.inv(gm.covariances_), rtol=1e-8)
    np.testing.assert_allclose(
        gm.precisions_cholesky_ @ np.swapaxes(gm.precisions_cholesky_, 1, 2), gm.precisions_, rtol=1e-10
    )
    assert np.allclose(np.tril(gm.precisions_cholesky_, -1), 0.0)
    assert isinstance(gm.converged_, bool) and isinstance(gm.n_iter_, int)
    assert isinstance(gm.lower_bound_, float)
    assert gm.lower_bounds_[-1] == gm.lower_bound_ and len(gm.lower_bounds_) == gm.n_iter_
    assert not hasattr(gm, "feature_names_in_")


def test_dataframe_feature_names():
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    gm = GaussianMixture(2, random_state=0).fit(df)
    assert list(gm.feature_names_in_) == ["a", "b", "c"]
    with pytest.warns(UserWarning, match="X does not have valid feature names, but GaussianMixture was fitted with feature names"):
        gm.predict(X)
    # refitting on unnamed data forgets the names
    gm.fit(X)
    assert not hasattr(gm, "feature_names_in_")


# ---------------------------------------------------------------------------
# dask in, dask out


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_dask_input_gives_lazy_output_chunked_like_rows(covariance_type):
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    chunks = ((70, 130, 1, 99), (3,))
    Xd = da.from_array(X, chunks=chunks)
    labels = gm.predict(Xd)
    proba = gm.predict_proba(Xd)
    scores = gm.score_samples(Xd)
    for out in (labels, proba, scores):
        assert isinstance(out, da.Array)
    assert labels.chunks == (chunks[0],) and labels.dtype == np.int64
    assert scores.chunks == (chunks[0],) and scores.dtype == np.float64
    assert proba.chunks == (chunks[0], (3,)) and proba.dtype == np.float64
    np.testing.assert_array_equal(labels.compute(), gm.predict(X))
    np.testing.assert_allclose(proba.compute(), gm.predict_proba(X), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(scores.compute(), gm.score_samples(X), rtol=1e-12)
    assert gm.score(Xd) == pytest.approx(gm.score(X), rel=1e-12)
    assert gm.bic(Xd) == pytest.approx(gm.bic(X), rel=1e-12)


def test_numpy_input_gives_numpy_output():
    gm = GaussianMixture(3, random_state=0).fit(da.from_array(X, chunks=(50, 3)))
    for out in (gm.predict(X), gm.predict_proba(X), gm.score_samples(X)):
        assert type(out) is np.ndarray
    assert gm.predict_proba(X).shape == (300, 3)
    assert type(gm.score(X)) is float
    # lists are array-like too
    assert type(gm.predict(X.tolist())) is np.ndarray


def test_prediction_graph_does_not_compute_early():
    gm = GaussianMixture(2, random_state=0).fit(X)
    calls = []

    def spy(block):
        calls.append(block.shape)
        return block

    Xd = da.from_array(X, chunks=(100, 3)).map_blocks(spy, meta=np.empty((0, 3)))
    lazy = gm.predict_proba(Xd)
    assert calls == []
    lazy.compute()
    assert len(calls) == 3


def test_large_numpy_input_is_blocked_like_small(monkeypatch):
    import gmm_engine._blocks as blocks_mod
    import gmm_engine._chunked as chunked_mod

    kwargs = dict(n_components=3, random_state=0, max_iter=10, tol=0.0)
    ref = quiet_fit(GaussianMixture(**kwargs), X)
    ref_proba = ref.predict_proba(X)
    monkeypatch.setattr(chunked_mod, "NUMPY_BLOCK_ROWS", 16)
    monkeypatch.setattr(blocks_mod, "NUMPY_BLOCK_ROWS", 16)
    small = quiet_fit(GaussianMixture(**kwargs), X)
    assert_same_params(small, ref)
    np.testing.assert_allclose(small.predict_proba(X), ref_proba, rtol=1e-12, atol=1e-15)


def test_dask_dataframe_is_lazy_and_keeps_column_names(monkeypatch):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    import gmm_engine._input as input_mod

    df = pd.DataFrame(CLUSTERS, columns=["a", "b", "c"])
    ddf = dd.from_pandas(df, npartitions=4)
    kwargs = dict(n_components=3, random_state=0, max_iter=10, tol=0.0)
    expected = quiet(GaussianMixture(**kwargs).fit, df)
    outputs = {m: getattr(expected, m)(df) for m in ("predict", "score_samples", "predict_proba")}
    bic = expected.bic(df)

    def gathered(*args, **kw):
        raise AssertionError("a dask DataFrame was gathered into memory")

    monkeypatch.setattr(input_mod, "check_numpy", gathered)
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
# zarr input


def _zarr(tmp_path, names=None, shards=None):
    path = tmp_path / "x.zarr"
    z = zarr.create_array(store=str(path), shape=X.shape, chunks=(32, 3), shards=shards, dtype="f8")
    z[:] = X
    if names is not None:
        z.attrs["feature_names"] = names
    return path, z


def test_fit_zarr_array_and_path(tmp_path):
    path, z = _zarr(tmp_path, names=["x0", "x1", "x2"])
    kwargs = dict(n_components=3, random_state=0, max_iter=10, tol=0.0)
    ref = quiet_fit(GaussianMixture(**kwargs), X)
    from_array = quiet_fit(GaussianMixture(**kwargs), z)
    from_path = quiet_fit(GaussianMixture(**kwargs), str(path))
    from_pathlib = quiet_fit(GaussianMixture(**kwargs), path)
    for gm in (from_array, from_path, from_pathlib):
        assert_same_params(gm, ref)
        assert list(gm.feature_names_in_) == ["x0", "x1", "x2"]
    lazy = from_path.predict(str(path))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), ref.predict(X))
    assert from_path.score(path) == pytest.approx(ref.score(X), rel=1e-12)
    assert from_path.bic(str(path)) == pytest.approx(ref.bic(X), rel=1e-12)


def test_fit_sharded_zarr(tmp_path):
    path, _ = _zarr(tmp_path, shards=(96, 3))
    kwargs = dict(n_components=3, random_state=0, max_iter=10, tol=0.0)
    gm = quiet_fit(GaussianMixture(**kwargs), str(path))
    assert_same_params(gm, quiet_fit(GaussianMixture(**kwargs), X))
    assert not hasattr(gm, "feature_names_in_")


def test_zarr_feature_names_checked_at_predict(tmp_path):
    path, _ = _zarr(tmp_path, names=["x0", "x1", "x2"])
    gm = GaussianMixture(2, random_state=0).fit(str(path))
    other = tmp_path / "y.zarr"
    z = zarr.create_array(store=str(other), shape=X.shape, chunks=(32, 3), dtype="f8")
    z[:] = X
    z.attrs["feature_names"] = ["x0", "x2", "x1"]
    with pytest.raises(ValueError, match="Feature names must be in the same order as they were in fit"):
        gm.predict(str(other))


def test_open_zarr_array_read_only(tmp_path):
    path, _ = _zarr(tmp_path)
    z = open_zarr_array(path)
    assert z.shape == X.shape
    with pytest.raises(ValueError, match="read-only"):
        z[0, 0] = 1.0


# ---------------------------------------------------------------------------
# a distributed client


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    yield client, cluster
    client.close()
    cluster.close()


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_distributed_client_same_result_as_threads(dask_client, init_params):
    client, cluster = dask_client
    Xd = da.from_array(X, chunks=(45, 3))
    kwargs = dict(n_components=3, init_params=init_params, random_state=0, max_iter=10, tol=0.0)
    with dask.config.set(scheduler="threads"):
        threaded = quiet_fit(GaussianMixture(**kwargs), Xd)
    with client.as_current():
        on_cluster = quiet_fit(GaussianMixture(**kwargs), Xd)
        labels = on_cluster.predict(Xd).compute()
    # the work ran on the cluster, not on the client's threads
    assert any(p.startswith("gmm") for p in cluster.scheduler.task_prefixes)
    assert_same_params(on_cluster, threaded)
    assert on_cluster.lower_bounds_ == pytest.approx(threaded.lower_bounds_, rel=1e-12)
    np.testing.assert_array_equal(labels, threaded.predict(X))


def test_distributed_client_with_persist(dask_client):
    client, _ = dask_client
    Xd = da.from_array(X, chunks=(60, 3))
    kwargs = dict(n_components=3, random_state=0, max_iter=5, tol=0.0)
    with client.as_current():
        persisted = quiet_fit(GaussianMixture(persist=True, **kwargs), Xd)
    assert_same_params(persisted, quiet_fit(GaussianMixture(**kwargs), X))


# ---------------------------------------------------------------------------
# warm start, n_init


def test_warm_start_continues_from_previous_fit():
    kwargs = dict(n_components=3, random_state=0, tol=0.0)
    full_run = quiet_fit(GaussianMixture(max_iter=12, **kwargs), X)
    warm = GaussianMixture(max_iter=4, warm_start=True, **kwargs)
    bounds = []
    for _ in range(3):
        quiet_fit(warm, X)
        assert warm.n_iter_ == 4
        bounds += warm.lower_bounds_
    assert_same_params(warm, full_run, rtol=1e-10)
    np.testing.assert_allclose(bounds, full_run.lower_bounds_, rtol=1e-12)
    # warm_start=False starts over
    cold = quiet_fit(GaussianMixture(max_iter=4, **kwargs), X)
    quiet_fit(cold, X)
    np.testing.assert_allclose(cold.lower_bounds_, full_run.lower_bounds_[:4], rtol=1e-12)


def test_warm_start_on_dask_with_different_chunking():
    kwargs = dict(n_components=3, random_state=0, tol=0.0, warm_start=True)
    a = quiet_fit(GaussianMixture(max_iter=3, **kwargs), X)
    quiet_fit(a, da.from_array(X, chunks=(17, 3)))
    b = quiet_fit(GaussianMixture(max_iter=6, random_state=0, tol=0.0, n_components=3), X)
    assert_same_params(a, b)


@pytest.mark.parametrize("init_params", ["kmeans", "random", "random_from_data", "k-means++"])
def test_n_init_keeps_best_lower_bound(init_params):
    """n_init=3 equals the best of three single fits drawing from the same RandomState."""
    Xo = np.random.default_rng(1).uniform(size=(200, 2))  # uniform: many local optima
    kwargs = dict(n_components=5, init_params=init_params, max_iter=10, tol=1e-6)
    rs = np.random.RandomState(42)
    singles = [quiet_fit(GaussianMixture(random_state=rs, **kwargs), Xo) for _ in range(3)]
    best = max(singles, key=lambda m: m.lower_bound_)
    assert min(m.lower_bound_ for m in singles) < best.lower_bound_  # the choice matters
    multi = quiet_fit(GaussianMixture(n_init=3, random_state=42, **kwargs), Xo)
    assert multi.lower_bound_ == pytest.approx(best.lower_bound_, rel=1e-12)
    assert multi.lower_bound_ >= max(m.lower_bound_ for m in singles) - 1e-12
    assert_same_params(multi, best)
    assert multi.n_iter_ == best.n_iter_ and multi.lower_bounds_ == pytest.approx(best.lower_bounds_, rel=1e-12)


def test_random_state_none_uses_global_state_and_is_valid():
    np.random.seed(0)
    a = GaussianMixture(3).fit(X)
    np.random.seed(0)
    b = GaussianMixture(3).fit(X)
    assert_same_params(a, b)


# ---------------------------------------------------------------------------
# on_iteration and resume


def test_on_iteration_receives_states():
    states = []
    gm = quiet_fit(GaussianMixture(3, random_state=0, max_iter=7, tol=0.0), X, on_iteration=states.append)
    assert [s.n_iter for s in states] == list(range(1, 8))
    for s in states:
        assert isinstance(s, EMState)
        assert isinstance(s.params, GMMParams)
        assert s.params.covariance_type == "full" and s.params.means.shape == (3, 3)
        assert len(s.lower_bounds) == s.n_iter and s.lower_bounds[-1] == s.lower_bound
        assert s.seconds >= 0.0
    assert states[1].change == pytest.approx(states[1].lower_bound - states[0].lower_bound)
    np.testing.assert_array_equal(states[-1].params.means, gm.means_)
    assert list(states[-1].lower_bounds) == gm.lower_bounds_


def test_on_iteration_error_stops_fit_and_propagates():
    class Stop(Exception):
        pass

    def hook(state):
        if state.n_iter == 2:
            raise Stop

    gm = GaussianMixture(3, random_state=0)
    with pytest.raises(Stop):
        gm.fit(X, on_iteration=hook)
    assert not hasattr(gm, "means_")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_resume_from_mid_fit_state_equals_uninterrupted(covariance_type):
    kwargs = dict(n_components=3, covariance_type=covariance_type, random_state=0, max_iter=500, tol=1e-8)
    states = []
    full = quiet_fit(GaussianMixture(**kwargs), X, on_iteration=states.append)
    assert full.converged_ and full.n_iter_ > 4
    # a checkpoint survives serialisation
    checkpoint = pickle.loads(pickle.dumps(states[2]))
    resumed_states = []
    resumed = GaussianMixture(**kwargs).resume(
        da.from_array(X, chunks=(23, 3)), checkpoint, on_iteration=resumed_states.append
    )
    assert_same_params(resumed, full)
    assert resumed.n_iter_ == full.n_iter_ and resumed.converged_
    np.testing.assert_allclose(resumed.lower_bounds_, full.lower_bounds_, rtol=1e-12)
    assert resumed.lower_bound_ == pytest.approx(full.lower_bound_, rel=1e-12)
    assert resumed_states[0].n_iter == 4
    np.testing.assert_array_equal(resumed.predict(X), full.predict(X))


def test_resume_counts_iterations_already_done():
    states = []
    quiet_fit(GaussianMixture(3, random_state=0, max_iter=10, tol=0.0), X, on_iteration=states.append)
    gm = GaussianMixture(3, random_state=0, max_iter=10, tol=0.0)
    with pytest.warns(UserWarning, match="did not converge"):
        gm.resume(X, states[7])
    assert gm.n_iter_ == 10 and len(gm.lower_bounds_) == 10


def test_resume_refuses_mismatched_checkpoint():
    states = []
    quiet_fit(GaussianMixture(3, random_state=0, max_iter=3), X, on_iteration=states.append)
    with pytest.raises(ValueError, match=re.escape("The checkpoint does not match this estimator and data")):
        GaussianMixture(3, covariance_type="diag").resume(X, states[0])
    with pytest.raises(ValueError, match="it has 3 features, 3 components"):
        GaussianMixture(3).resume(X[:, :2], states[0])
    with pytest.raises(ValueError, match="the estimator n_components=2"):
        GaussianMixture(2).resume(X, states[0])


# resume validates the data like fit


@pytest.fixture(scope="module")
def mid_state():
    states = []
    quiet(GaussianMixture(3, random_state=0, max_iter=3, tol=0).fit, CLUSTERS, on_iteration=states.append)
    return states[1]


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_resume_refuses_nan_and_inf(mid_state, kind):
    Xbad = CLUSTERS.copy()
    Xbad[7, 1] = np.nan
    Xbad[100, 0] = np.inf
    Xin = Xbad if kind == "numpy" else da.from_array(Xbad, chunks=(50, 3))
    with pytest.raises(DataValidationError, match=re.escape("Input X contains NaN and infinity") + ".*row indices 7, 100"):
        GaussianMixture(3, random_state=0, max_iter=6).resume(Xin, mid_state)


def test_resume_checks_the_rows_in_its_first_pass_before_anything_sees_it(mid_state):
    """No pass of its own for the checks: the first EM pass reads and checks; a refused pass reaches no hook."""
    Xbad = CLUSTERS.copy()
    Xbad[130, 2] = np.nan
    seen = []
    with pytest.raises(DataValidationError, match=re.escape("Input X contains NaN") + ".*row indices 130"):
        GaussianMixture(3, random_state=0, max_iter=6).resume(da.from_array(Xbad, chunks=(50, 3)), mid_state,
                                                              on_iteration=seen.append)
    assert seen == []
    weights = np.ones(len(CLUSTERS))
    weights[5] = -1.0
    with pytest.raises(DataValidationError, match=re.escape("Negative values in data passed to `sample_weight`.")):
        GaussianMixture(3, random_state=0, max_iter=6).resume(da.from_array(CLUSTERS, chunks=(50, 3)), mid_state,
                                                              sample_weight=da.from_array(weights, chunks=50))
    good = quiet(GaussianMixture(3, random_state=0, max_iter=6, tol=0).resume,
                 da.from_array(CLUSTERS, chunks=(50, 3)), mid_state)
    assert good.n_passes_ == mid_state.n_passes + (6 - mid_state.n_iter)


def test_resume_with_no_iteration_left_still_checks_the_rows(mid_state):
    Xbad = da.from_array(np.where(np.arange(len(CLUSTERS))[:, None] == 3, np.inf, CLUSTERS), chunks=(50, 3))
    done = GaussianMixture(3, random_state=0, max_iter=mid_state.n_iter)
    with pytest.raises(DataValidationError, match=re.escape("Input X contains infinity") + ".*row indices 3"):
        done.resume(Xbad, mid_state)
    resumed = quiet(GaussianMixture(3, random_state=0, max_iter=mid_state.n_iter).resume,
                    da.from_array(CLUSTERS, chunks=(50, 3)), mid_state)
    assert resumed.n_passes_ == mid_state.n_passes + 1 and resumed.n_iter_ == mid_state.n_iter  # the scan alone


def test_resume_refuses_fewer_rows_than_components(mid_state):
    with pytest.raises(ValueError, match="Expected n_samples >= n_components but got n_components = 3, n_samples = 2"):
        GaussianMixture(3, max_iter=6).resume(CLUSTERS[:2], mid_state)


def test_resume_still_equals_uninterrupted(mid_state):
    full = quiet(GaussianMixture(3, random_state=0, max_iter=6, tol=0).fit, CLUSTERS)
    resumed = quiet(GaussianMixture(3, random_state=0, max_iter=6, tol=0).resume, CLUSTERS, mid_state)
    assert isinstance(mid_state, EMState)
    assert_same_params(resumed, full, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# logging and progress


def test_iterations_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="gmm_engine"):
        quiet_fit(GaussianMixture(2, random_state=0, max_iter=3, tol=0.0), X)
    messages = [r.getMessage() for r in caplog.records if r.name == "gmm_engine"]
    assert sum(m.startswith("EM iteration ") for m in messages) == 3
    assert re.search(r"EM iteration 3: mean log-likelihood -?\d+\.\d+", "\n".join(messages))


def test_verbose_shows_progress_bar(capsys):
    quiet_fit(GaussianMixture(2, random_state=0, max_iter=3, tol=0.0, verbose=1), X)
    err = capsys.readouterr().err
    assert "EM" in err and "3/3" in err


def test_score_rows_in_memory_checks_names_and_returns_numpy(tmp_path):
    import warnings

    import zarr

    from gmm_engine.scoring import score_rows

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, chunks=(128, 3), dtype="float64")
    z[:] = X
    z.attrs["feature_names"] = ["a", "b", "c"]
    gm = GaussianMixture(2, random_state=0).fit(z)
    lazy = score_rows(gm, z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # names come from the Zarr array: no warning
        eager = score_rows(gm, z, in_memory=True)
    assert all(isinstance(a, np.ndarray) for a in eager)
    for a, b in zip(lazy, eager):
        np.testing.assert_array_equal(a.compute(), b)
    z.attrs["feature_names"] = ["a", "c", "b"]
    with pytest.raises(ValueError, match="The feature names should match those that were passed during fit"):
        score_rows(gm, z, in_memory=True)
