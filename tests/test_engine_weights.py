"""sample_weight: repeated rows, removed rows, scikit-learn's refusals, weighted starts and criteria.

* integer weights give the fit of the repeated rows (1e-8 relative, from
  the same initial parameters), every covariance type, NumPy, dask and
  Zarr input, float32 and float64; unit weights are bit for bit no
  weights;
* zero weights equal removing the rows, also rows far away;
* bad weights are refused with the words of scikit-learn's
  ``_check_sample_weight(w, X, ensure_non_negative=True)``, in memory and
  lazily (by the scan, before any EM pass);
* the initialisations never pick a row of weight 0; score, BIC and AIC
  count weights as repeated rows.
"""

from __future__ import annotations

import re
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.utils.validation import _check_sample_weight

from conftest import integer_weights, quiet, shared_start, three_clusters, write_zarr, zarr_one_chunk
from gmm_engine import COVARIANCE_TYPES, DataValidationError, GaussianMixture

X = three_clusters(240)
W = integer_weights(240)


def assert_close(actual, expected, rtol, what=""):
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def assert_same_fit(a, b, rtol):
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert_close(getattr(a, attr), getattr(b, attr), rtol, attr)
    assert a.n_iter_ == b.n_iter_
    assert_close(a.lower_bounds_, b.lower_bounds_, rtol, "lower_bounds_")


def fit(Xin, covariance_type, start, sample_weight=None, **kwargs):
    gm = GaussianMixture(3, covariance_type=covariance_type, tol=0.0, max_iter=25, **start, **kwargs)
    return quiet(gm.fit, Xin, sample_weight=sample_weight)


def as_kind(kind, Xa, w, tmp_path):
    """X and weights as the input kind names them."""
    if kind == "numpy":
        return Xa, w
    if kind == "dask":  # weights chunked unlike X: rechunked to X's rows
        return da.from_array(Xa, chunks=(7, 3)), da.from_array(w, chunks=(11,))
    if kind == "dask-numpy-weights":
        return da.from_array(Xa, chunks=(50, 3)), w
    if kind == "zarr":  # no feature names: the models compared were fitted on NumPy arrays
        import zarr

        z = zarr.create_array(str(tmp_path / "x.zarr"), shape=Xa.shape, chunks=(50, Xa.shape[1]), dtype=Xa.dtype)
        z[...] = Xa
        return str(tmp_path / "x.zarr"), zarr_one_chunk(tmp_path / "w.zarr", w)
    raise AssertionError(kind)


# ---------------------------------------------------------------------------
# repeated rows, removed rows, unit weights


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["numpy", "dask", "dask-numpy-weights", "zarr"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_fit_the_repeated_rows(covariance_type, kind, dtype, tmp_path):
    Xt = X.astype(dtype)
    start = shared_start(X, 3, covariance_type)
    repeated = fit(np.repeat(Xt, W.astype(int), axis=0), covariance_type, start)
    Xin, win = as_kind(kind, Xt, W, tmp_path)
    weighted = fit(Xin, covariance_type, start, sample_weight=win)
    assert_same_fit(weighted, repeated, 1e-8)
    # the running statistics a fit leaves are the repeated rows' too
    a, b = weighted.online_state_, repeated.online_state_
    assert a.sum_weights_seen == pytest.approx(W.sum(), rel=1e-12) and a.n_rows_seen == X.shape[0]
    assert_close(a.stats.scatter, b.stats.scatter, 1e-8, "scatter")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_unit_weights_are_bit_for_bit_no_weights(covariance_type):
    start = shared_start(X, 3, covariance_type)
    plain = fit(X, covariance_type, start)
    ones = fit(X, covariance_type, start, sample_weight=np.ones(X.shape[0]))
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(ones, attr), getattr(plain, attr), err_msg=attr)
    assert ones.lower_bounds_ == plain.lower_bounds_


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_zero_weights_equal_removing_the_rows(covariance_type, kind, tmp_path):
    far = np.full((6, 3), 1e200)  # their squared distances overflow: log-likelihood -inf
    Xall = np.vstack([X[:120], far, X[120:]])
    w = np.r_[W[:120], np.zeros(6), W[120:]]
    w[w == 0] = 0.0
    kept = Xall[w > 0]
    start = shared_start(X, 3, covariance_type)
    removed = fit(np.repeat(kept, w[w > 0].astype(int), axis=0), covariance_type, start)
    Xin, win = as_kind(kind, Xall, w, tmp_path)
    weighted = fit(Xin, covariance_type, start, sample_weight=win)
    assert_same_fit(weighted, removed, 1e-8)


def test_a_number_broadcasts_to_every_row():
    start = shared_start(X, 3, "full")
    plain, doubled = fit(X, "full", start), fit(X, "full", start, sample_weight=2.0)
    assert_same_fit(doubled, plain, 1e-12)
    n = X.shape[0]
    assert doubled.bic(X, sample_weight=2.0) == pytest.approx(
        -2 * 2 * plain.score(X) * n + plain.n_parameters() * np.log(2 * n), rel=1e-12)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_weighted_fit_predict_and_resume(init_params):
    kwargs = dict(n_components=3, init_params=init_params, random_state=0, tol=0.0, max_iter=8)
    states = []
    whole = quiet(GaussianMixture(**kwargs).fit, X, sample_weight=W, on_iteration=states.append)
    resumed = quiet(GaussianMixture(**kwargs).resume, X, states[3], sample_weight=W)
    assert_same_fit(resumed, whole, 1e-12)
    labels = quiet(GaussianMixture(**kwargs).fit_predict, X, sample_weight=W)
    np.testing.assert_array_equal(labels, whole.predict(X))
    for attr in ("weights_", "means_"):
        assert np.all(np.isfinite(getattr(whole, attr)))


# ---------------------------------------------------------------------------
# scikit-learn's refusals


X5 = three_clusters(5)
BAD_WEIGHTS = {
    "shape": np.ones(4),
    "negative": np.array([1.0, -1.0, 1.0, 1.0, 1.0]),
    "nan": np.array([1.0, np.nan, 1.0, 1.0, 1.0]),
    "inf": np.array([1.0, np.inf, 1.0, 1.0, 1.0]),
    "inf-float32": np.array([1.0, np.inf, 1.0, 1.0, 1.0], dtype=np.float32),
    "2d": np.ones((5, 1)),
    "all-zero": np.zeros(5),
}


def sklearn_message(w, Xin=X5):
    with pytest.raises(ValueError) as info:
        _check_sample_weight(w, Xin, ensure_non_negative=True)
    return str(info.value)


def test_the_messages_are_scikit_learns_own():
    assert sklearn_message(BAD_WEIGHTS["shape"]) == "sample_weight.shape == (4,), expected (5,)!"
    assert sklearn_message(BAD_WEIGHTS["negative"]) == "Negative values in data passed to `sample_weight`."
    assert sklearn_message(BAD_WEIGHTS["nan"]) == "Input sample_weight contains NaN."
    assert sklearn_message(BAD_WEIGHTS["inf"]) == (
        "Input sample_weight contains infinity or a value too large for dtype('float64')."
    )
    assert sklearn_message(BAD_WEIGHTS["2d"]) == (
        "Sample weights must be 1D array or scalar, got 2D array. Expected either a scalar "
        "value or a 1D array of length 5."
    )
    assert sklearn_message(BAD_WEIGHTS["all-zero"]) == "Sample weights must contain at least one non-zero number."


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
@pytest.mark.parametrize("method", ["fit", "initialize", "partial_fit", "score", "bic"])
def test_bad_weights_refused_in_memory(case, method):
    w = BAD_WEIGHTS[case]
    gm = GaussianMixture(1)
    if method in ("score", "bic"):
        gm.fit(X5)
    with pytest.raises(ValueError, match=re.escape(sklearn_message(w))):
        getattr(gm, method)(X5, sample_weight=w)


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
@pytest.mark.parametrize("method", ["fit", "partial_fit", "partial_fit-fitted", "score"])
def test_bad_lazy_weights_refused_by_the_scan_or_pass(case, method):
    w = BAD_WEIGHTS[case]
    Xd = da.from_array(X5, chunks=(2, 3))
    wd = da.from_array(w, chunks=(2,) + w.shape[1:])
    gm = GaussianMixture(1)
    if method in ("score", "partial_fit-fitted"):
        gm.fit(X5)
    call = getattr(gm, method.split("-")[0])
    with pytest.raises(DataValidationError, match=re.escape(sklearn_message(w))):
        call(Xd, sample_weight=wd)


@pytest.mark.parametrize("case", ["shape", "negative", "nan", "all-zero"])
def test_bad_zarr_weights_refused(case, tmp_path):
    w = BAD_WEIGHTS[case]
    path = zarr_one_chunk(tmp_path / "w.zarr", w)
    for Xin in (X5, write_zarr(tmp_path / "x.zarr", X5, chunk_rows=2)):
        with pytest.raises(DataValidationError, match=re.escape(sklearn_message(w))):
            GaussianMixture(1).fit(Xin, sample_weight=path)


def test_bad_numbers_refused():
    with pytest.raises(ValueError, match=re.escape(sklearn_message(0.0))):
        GaussianMixture(1).fit(X5, sample_weight=0.0)
    with pytest.raises(ValueError, match=re.escape(sklearn_message(-1.0))):
        GaussianMixture(1).fit(da.from_array(X5, chunks=(2, 3)), sample_weight=-1.0)


def test_lazy_weights_are_checked_before_any_em_pass(monkeypatch):
    import gmm_engine.mixture as mixture

    def no_initialisation(*args, **kwargs):
        raise AssertionError("an initialisation pass ran before the weights were checked")

    monkeypatch.setattr(mixture, "initial_params", no_initialisation)
    w = W.copy()
    w[200] = np.nan
    iterations = []
    with pytest.raises(DataValidationError, match=re.escape("Input sample_weight contains NaN.")):
        GaussianMixture(3).fit(da.from_array(X, chunks=(50, 3)), sample_weight=da.from_array(w, chunks=50),
                               on_iteration=iterations.append)
    assert iterations == []


def test_too_few_rows_of_positive_weight():
    w = np.zeros(X.shape[0])
    w[:2] = 1.0
    with pytest.raises(ValueError, match=re.escape(
        "Expected n_samples >= n_components but got n_components = 3, n_samples = 2 "
        "(rows with a positive sample_weight)"
    )):
        GaussianMixture(3).fit(X, sample_weight=w)


# ---------------------------------------------------------------------------
# weighted initialisation


def _far_rows_with_zero_weight():
    far = three_clusters(60, seed=5) + 50.0
    return np.vstack([X, far]), np.r_[np.ones(X.shape[0]), np.zeros(60)]


@pytest.mark.parametrize("init_params", ["random_from_data", "k-means++"])
def test_a_row_of_weight_zero_is_never_chosen(init_params):
    Xall, w = _far_rows_with_zero_weight()
    allowed = {tuple(r) for r in X}
    for seed in range(15):
        gm = GaussianMixture(3, init_params=init_params, random_state=seed).initialize(Xall, sample_weight=w)
        # these starts put the means at the chosen rows
        assert {tuple(m) for m in gm.means_} <= allowed, seed


@pytest.mark.parametrize("init_params", ["kmeans", "random"])
def test_weighted_starts_ignore_rows_of_weight_zero(init_params):
    Xall, w = _far_rows_with_zero_weight()
    for seed in range(5):
        gm = GaussianMixture(3, init_params=init_params, random_state=seed).initialize(Xall, sample_weight=w)
        assert np.all(gm.means_ < 20.0), seed  # nowhere near the far rows at ~50


def test_weighted_kmeans_start_weighs_rows_as_repeated():
    # weights concentrate the data on one cluster: the start must put a centre there
    w = np.where(np.arange(X.shape[0]) % 3 == 0, 50.0, 1.0)
    gm = GaussianMixture(3, random_state=0).initialize(X, sample_weight=w)
    assert np.all(np.isfinite(gm.means_)) and gm.weights_.sum() == pytest.approx(1.0)


def test_unweighted_draws_are_unchanged_by_weight_support():
    # sample_weight=None takes the same random draws as scikit-learn (same rows)
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    for seed in range(3):
        ours = GaussianMixture(3, init_params="random_from_data", random_state=seed, max_iter=0)
        theirs = SkGaussianMixture(3, init_params="random_from_data", random_state=seed, max_iter=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours.fit(X)
            theirs.fit(X)
        np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-13)


# ---------------------------------------------------------------------------
# score and the information criteria


@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_weighted_score_and_criteria_count_repeated_rows(covariance_type, kind, tmp_path):
    gm = quiet(GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit, X)
    rep = np.repeat(X, W.astype(int), axis=0)
    Xin, win = as_kind(kind, X, W, tmp_path)
    assert gm.score(Xin, sample_weight=win) == pytest.approx(gm.score(rep), rel=1e-10)
    crit, want = gm.information_criteria(Xin, sample_weight=win), gm.information_criteria(rep)
    assert crit.bic == pytest.approx(want.bic, rel=1e-10) and crit.aic == pytest.approx(want.aic, rel=1e-10)
    assert crit.sum_weights == W.sum() and crit.n_samples == X.shape[0]
    assert crit.mean_loglik == pytest.approx(want.mean_loglik, rel=1e-10)
    assert gm.bic(Xin, sample_weight=win) == crit.bic and gm.aic(Xin, sample_weight=win) == crit.aic


def test_unweighted_criteria_unchanged():
    gm = quiet(GaussianMixture(3, random_state=0).fit, X)
    crit = gm.information_criteria(X)
    assert crit.sum_weights is None
    assert crit.bic == -2 * gm.score(X) * X.shape[0] + gm.n_parameters() * np.log(X.shape[0])


# ---------------------------------------------------------------------------
# a distributed client: weights travel with their chunks


@pytest.mark.parametrize("persist", [False, True])
def test_weighted_fit_on_a_cluster(dask_cluster, persist, tmp_path):
    distributed = pytest.importorskip("distributed")
    start = shared_start(X, 3, "full")
    want = fit(X, "full", start, sample_weight=W)
    with distributed.Client(dask_cluster, set_as_default=False) as client, client.as_current():
        inline = fit(da.from_array(X, chunks=(40, 3)), "full", start, persist=persist,
                     sample_weight=da.from_array(W, chunks=(40,)))
        stored = fit(write_zarr(tmp_path / "x.zarr", X, chunk_rows=40), "full", start, persist=persist,
                     sample_weight=W)
    assert_same_fit(inline, want, 1e-10)
    assert_same_fit(stored, want, 1e-10)
