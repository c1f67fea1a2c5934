"""Initialisation: what each ``init_params`` starts from, on any chunking."""

from __future__ import annotations

from fractions import Fraction

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

from conftest import assert_same_params, quiet
from gmm_engine import COVARIANCE_TYPES, GaussianMixture
from gmm_engine._chunked import NumpyData
from gmm_engine._dask_data import DaskData
from gmm_engine._initialization import tied_one_hot_covariance
from gmm_engine._rng import row_uniforms
from gmm_engine._stats import summary_chunk
from gmm_engine.checkpoint import state_from_estimator

INIT_PARAMS = ["kmeans", "k-means++", "random", "random_from_data"]


def blobs(n=400, K=5, D=2, spread=12.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-spread, spread, size=(K, D))
    # keep the blobs apart so that the right partition is unambiguous
    centers[:, 0] = np.arange(K) * spread / 2 + rng.uniform(0, 1, K)
    labels = rng.integers(0, K, n)
    return centers[labels] + 0.5 * rng.normal(size=(n, D)), labels


def start(Xin, **kwargs):
    """Initial parameters only (max_iter=0)."""
    return GaussianMixture(max_iter=0, **kwargs).fit(Xin)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_random_from_data_takes_sklearns_rows(covariance_type):
    X, _ = blobs()
    for seed in (0, 1, 2):
        sk = SkGaussianMixture(5, covariance_type=covariance_type, init_params="random_from_data",
                               random_state=seed, max_iter=0).fit(X)
        ours = start(X, n_components=5, covariance_type=covariance_type, init_params="random_from_data",
                     random_state=seed)
        indices = np.random.RandomState(seed).choice(len(X), size=5, replace=False)
        np.testing.assert_array_equal(ours.means_, X[indices])
        # scikit-learn divides by nk + 10 eps: equal up to that
        np.testing.assert_allclose(ours.means_, sk.means_, rtol=1e-14)
        # scikit-learn's unnormalised nk / n_samples start
        np.testing.assert_allclose(ours.weights_, sk.weights_, rtol=1e-12)
        if covariance_type != "tied":
            # scikit-learn's diag start is E[x^2] - x^2 of one row: cancellation
            # leaves ~1e-12 on top of reg_covar; ours is exactly reg_covar
            np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=0, atol=1e-10)
            np.testing.assert_array_equal(ours.covariances_.reshape(5, -1)[:, 0], 1e-6)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_tied_one_hot_start_is_sklearns(kind):
    """From one row per component scikit-learn's tied covariance is
    ``(X^T X - sum_k x_k x_k^T) / K``: raw second moments of all rows, which
    depend on where the origin is.  Ours is the same (computed around the
    data mean, see test_tied_one_hot_start_accurate_far_from_the_origin for its
    accuracy far from the origin).
    """
    X, _ = blobs()
    Xin = X if kind == "numpy" else da.from_array(X, chunks=(33, 2))
    kwargs = dict(n_components=5, covariance_type="tied", init_params="random_from_data", random_state=0)
    for offset in (0.0, 1e3):
        ours = start(Xin + offset, **kwargs)
        sk = SkGaussianMixture(**kwargs, max_iter=0).fit(X + offset)
        np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=1e-12)
    assert not np.allclose(start(X, **kwargs).covariances_, ours.covariances_, rtol=1e-3)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_kmeans_finds_the_partition_like_sklearn(kind):
    X, truth = blobs()
    Xin = X if kind == "numpy" else da.from_array(X, chunks=(33, 2))
    for seed in range(3):
        ours = start(Xin, n_components=5, random_state=seed)
        labels = ours.predict(Xin)
        labels = labels.compute() if hasattr(labels, "compute") else labels
        assert adjusted_rand_score(truth, labels) == 1.0
        sk = SkGaussianMixture(5, random_state=seed, max_iter=0).fit(X)
        # the same partition gives the same starting parameters, up to order
        order = np.argsort(ours.means_[:, 0])
        sk_order = np.argsort(sk.means_[:, 0])
        np.testing.assert_allclose(ours.means_[order], sk.means_[sk_order], rtol=1e-10)
        np.testing.assert_allclose(ours.weights_[order], sk.weights_[sk_order], rtol=1e-10)
        np.testing.assert_allclose(ours.covariances_[order], sk.covariances_[sk_order], rtol=1e-8)


def test_kmeans_start_no_worse_than_sklearn_kmeans():
    """On overlapping data our k-means|| + Lloyd inertia matches KMeans(n_init=1)."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(600, 3)) + rng.integers(0, 6, size=(600, 1)) * 1.5

    def inertia(means, X):
        return ((X[:, None, :] - means[None]) ** 2).sum(axis=2).min(axis=1).sum()

    ours = [inertia(start(X, n_components=6, random_state=s).means_, X) for s in range(4)]
    sk = [KMeans(6, n_init=1, random_state=s).fit(X).inertia_ for s in range(4)]
    assert np.mean(ours) <= np.mean(sk) * 1.02, (ours, sk)


@pytest.mark.parametrize("init_params", INIT_PARAMS)
def test_chunks_smaller_than_the_sample_size(init_params):
    """k-means|| draws 2K rows per round: chunks of fewer rows must not lose draws."""
    X, _ = blobs(n=200)
    kwargs = dict(n_components=5, init_params=init_params, random_state=0)
    ref = start(X, **kwargs)
    for chunks in (3, 1):
        other = start(da.from_array(X, chunks=(chunks, 2)), **kwargs)
        np.testing.assert_allclose(other.means_, ref.means_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(other.covariances_, ref.covariances_, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(other.weights_, ref.weights_, rtol=1e-10)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_kmeans_starts_are_distinct_rows_when_possible(init_params):
    rng = np.random.default_rng(1)
    P = rng.normal(size=(3, 2)) * 5
    X = np.repeat(P, 10, axis=0)
    for Xin in (X, da.from_array(X, chunks=(7, 2))):
        ours = start(Xin, n_components=3, init_params=init_params, random_state=0)
        got = sorted(map(tuple, np.round(ours.means_, 12)))
        assert got == sorted(map(tuple, np.round(P, 12)))


@pytest.mark.parametrize("init_params", INIT_PARAMS)
def test_more_components_than_distinct_rows(init_params):
    """Fewer distinct rows than components: a valid start, the same on any chunking."""
    rng = np.random.default_rng(1)
    X = np.repeat(rng.normal(size=(3, 2)) * 5, 10, axis=0)
    a = start(X, n_components=4, init_params=init_params, random_state=0)
    b = start(da.from_array(X, chunks=(7, 2)), n_components=4, init_params=init_params, random_state=0)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-12)
    assert np.all(np.isfinite(a.covariances_)) and np.all(np.isfinite(a.precisions_cholesky_))
    # every start is at a data point or inside the data's box
    assert np.all(a.means_ >= X.min(axis=0) - 1e-9) and np.all(a.means_ <= X.max(axis=0) + 1e-9)


@pytest.mark.parametrize("init_params", INIT_PARAMS)
def test_random_state_controls_the_start(init_params):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 2))  # one blob: many equally good starts
    a = start(X, n_components=5, init_params=init_params, random_state=3)
    b = start(X, n_components=5, init_params=init_params, random_state=3)
    np.testing.assert_array_equal(a.means_, b.means_)
    others = [start(X, n_components=5, init_params=init_params, random_state=s).means_ for s in (4, 5)]
    assert any(not np.array_equal(np.sort(a.means_, axis=0), np.sort(o, axis=0)) for o in others)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_random_start_is_responsibility_weighted(covariance_type):
    """'random': every component sees every row with a random weight, like scikit-learn.

    The starting means are all near the data mean, and the covariances near
    the data's (within what random weights move them).
    """
    X, _ = blobs(n=2000)
    ours = start(X, n_components=3, covariance_type=covariance_type, init_params="random", random_state=0)
    sk = SkGaussianMixture(3, covariance_type=covariance_type, init_params="random", random_state=0,
                           max_iter=0).fit(X)
    assert np.abs(ours.weights_.sum() - 1.0) < 1e-12
    spread = np.abs(sk.means_ - X.mean(axis=0)).max()
    assert np.abs(ours.means_ - X.mean(axis=0)).max() < 3 * spread
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=0.1, atol=0.1 * np.abs(sk.covariances_).max())


def test_user_precisions_only():
    X, _ = blobs()
    prec = np.stack([np.eye(2) * (k + 1) for k in range(5)])
    gm = start(X, n_components=5, precisions_init=prec, random_state=0)
    np.testing.assert_allclose(gm.precisions_, prec, rtol=1e-12)
    np.testing.assert_allclose(gm.covariances_, np.linalg.inv(prec), rtol=1e-12)
    # weights and means from the k-means partition, as without precisions_init
    # (scikit-learn's max_iter=0 with precisions_init leaves covariances_ unset)
    plain = start(X, n_components=5, random_state=0)
    np.testing.assert_allclose(gm.weights_, plain.weights_, rtol=1e-12)
    np.testing.assert_allclose(gm.means_, plain.means_, rtol=1e-12)
    sk = SkGaussianMixture(5, random_state=0, max_iter=0).fit(X)
    np.testing.assert_allclose(np.sort(gm.weights_), np.sort(sk.weights_), rtol=1e-10)


# ---------------------------------------------------------------------------
# initialize(): the start only, the best of n_init


def test_initialize_is_the_start_fit_begins_from():
    X, _ = blobs()
    kwargs = dict(n_components=5, covariance_type="diag", init_params="k-means++", random_state=3)
    init = GaussianMixture(**kwargs).initialize(X)
    ref = start(X, **kwargs)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        np.testing.assert_array_equal(getattr(init, attr), getattr(ref, attr), err_msg=attr)
    assert init.n_iter_ == 0 and init.converged_ is False and init.lower_bounds_ == []
    assert init.lower_bound_ == -np.inf  # n_init=1: no rating pass
    # EM from it is the fit
    state = state_from_estimator(init)
    resumed = quiet(GaussianMixture(max_iter=20, **kwargs).resume, X, state)
    fitted = quiet(GaussianMixture(max_iter=20, **kwargs).fit, X)
    assert_same_params(resumed, fitted, rtol=1e-12)
    assert resumed.n_iter_ == fitted.n_iter_ and resumed.lower_bounds_ == pytest.approx(fitted.lower_bounds_, rel=1e-12)


def test_initialize_keeps_the_best_of_n_init_starts():
    Xo = np.random.default_rng(1).uniform(size=(200, 2))  # uniform: starts of different quality
    kwargs = dict(n_components=5, init_params="random")
    best = GaussianMixture(n_init=4, random_state=42, **kwargs).initialize(Xo)
    rs = np.random.RandomState(42)  # the stream the four starts share, as in fit
    singles = [start(Xo, random_state=rs, **kwargs) for _ in range(4)]
    scores = [m.score(Xo) for m in singles]
    assert min(scores) < max(scores)
    np.testing.assert_array_equal(best.means_, singles[int(np.argmax(scores))].means_)
    assert best.lower_bound_ == pytest.approx(max(scores), rel=1e-12)
    assert best.n_iter_ == 0 and best.converged_ is False and best.lower_bounds_ == []
    # EM continues from it as from any start: the first iteration is not taken for convergence
    assert state_from_estimator(best).lower_bound == -np.inf
    warm = GaussianMixture(max_iter=30, warm_start=True, n_init=4, random_state=42, **kwargs)
    continued = quiet(warm.initialize(Xo).fit, Xo)
    assert continued.n_iter_ > 1


# ---------------------------------------------------------------------------
# tied start from one row per component: scikit-learn's covariance


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
