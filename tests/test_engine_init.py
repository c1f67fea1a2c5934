"""Initialisation: what each ``init_params`` starts from, on any chunking."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from gmm_engine import GaussianMixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
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
    data mean, see test_engine_review for its accuracy far from the origin).
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
