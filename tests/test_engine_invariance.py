"""Invariances the chunked arithmetic must keep (see shared/EM-NOTES.md).

* the chunking of the data (and numpy vs dask) changes nothing but rounding,
  initialisation included, for every covariance type and init method;
* X + 1e8 fits exactly like X (statistics accumulated around the means);
* float32 input fits like the same values in float64, attributes float64;
* EM never decreases the log-likelihood.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from conftest import gaussian_clusters
from gmm_engine import COVARIANCE_TYPES, GaussianMixture

INIT_PARAMS = ["kmeans", "k-means++", "random", "random_from_data"]

#: three overlapping clusters with correlated noise, 210 rows in 3-D
X = gaussian_clusters(210, [[0.0, 0.0, 0.0], [3.5, 3.0, 0.0], [0.0, 3.0, 3.5]], (0.45, 0.35, 0.2), mixing=0.3)


def assert_close(actual, expected, rtol, what=""):
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def assert_same_fit(a, b, rtol):
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert_close(getattr(a, attr), getattr(b, attr), rtol, attr)
    assert a.n_iter_ == b.n_iter_
    assert a.converged_ == b.converged_
    assert_close(a.lower_bounds_, b.lower_bounds_, rtol, "lower_bounds_")


def fit(Xin, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning with tol=0
        return GaussianMixture(**kwargs).fit(Xin)


# ---------------------------------------------------------------------------
# chunking


CHUNKINGS = {
    "7-rows": (7, 3),
    "uneven": ((13, 97, 1, 99), (3,)),
    "one-chunk": (210, 3),
}


@pytest.mark.parametrize("init_params", INIT_PARAMS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunking_invariance(covariance_type, init_params):
    kwargs = dict(
        n_components=3, covariance_type=covariance_type, init_params=init_params,
        random_state=11, max_iter=8, tol=0.0,
    )
    ref = fit(X, **kwargs)  # numpy input
    assert ref.n_iter_ == 8
    for name, chunks in CHUNKINGS.items():
        other = fit(da.from_array(X, chunks=chunks), **kwargs)
        try:
            assert_same_fit(other, ref, 1e-9)
        except AssertionError as exc:
            raise AssertionError(f"chunking {name!r} differs from numpy input") from exc


def test_feature_chunks_are_merged():
    kwargs = dict(n_components=3, covariance_type="full", random_state=11, max_iter=8, tol=0.0)
    assert_same_fit(fit(da.from_array(X, chunks=(50, 1)), **kwargs), fit(X, **kwargs), 1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunking_invariance_until_convergence(covariance_type):
    # the convergence decision (tol) is taken on the same numbers
    kwargs = dict(n_components=3, covariance_type=covariance_type, random_state=2, tol=1e-6, max_iter=500)
    ref = fit(X, **kwargs)
    assert ref.converged_
    other = fit(da.from_array(X, chunks=(7, 3)), **kwargs)
    assert_same_fit(other, ref, 1e-8)


@pytest.mark.parametrize("init_params", INIT_PARAMS)
def test_empty_chunks_are_harmless(init_params):
    """Zero-row chunks (left by filtering) must not change or break anything."""
    Xd = da.from_array(X, chunks=((0, 100, 0, 110, 0), (3,)))
    kwargs = dict(n_components=3, init_params=init_params, random_state=5, max_iter=8, tol=0.0)
    ours = fit(Xd, **kwargs)
    assert_same_fit(ours, fit(X, **kwargs), 1e-9)
    labels = ours.predict(Xd)
    assert labels.chunks == ((0, 100, 0, 110, 0),)
    np.testing.assert_array_equal(labels.compute(), ours.predict(X))


def test_row_order_matters_only_through_initialisation():
    # Same start, permuted rows: EM itself is order independent.
    start = SkGaussianMixture(3, max_iter=0, random_state=0).fit(X)
    kwargs = dict(
        n_components=3, weights_init=start.weights_, means_init=start.means_,
        precisions_init=start.precisions_, max_iter=10, tol=0.0,
    )
    perm = np.random.default_rng(1).permutation(len(X))
    assert_same_fit(fit(X[perm], **kwargs), fit(X, **kwargs), 1e-9)


# ---------------------------------------------------------------------------
# translation: X + 1e8


def _sklearn_start(Xfit, covariance_type):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        s = SkGaussianMixture(3, covariance_type=covariance_type, max_iter=0, random_state=0).fit(Xfit)
    return s.weights_, s.means_, s.precisions_


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_offset_1e8_same_start(covariance_type, kind):
    weights, means, precisions = _sklearn_start(X, covariance_type)
    common = dict(
        n_components=3, covariance_type=covariance_type, weights_init=weights,
        precisions_init=precisions, max_iter=20, tol=0.0,
    )
    base = fit(X, means_init=means, **common)
    Xs = X + 1e8
    shifted = fit(Xs if kind == "numpy" else da.from_array(Xs, chunks=(37, 3)), means_init=means + 1e8, **common)
    # X + 1e8 is itself rounded to ~1.5e-8: that is all the difference allowed
    assert_close(shifted.covariances_, base.covariances_, 1e-6, "covariances_")
    np.testing.assert_allclose(shifted.means_ - 1e8, base.means_, rtol=0, atol=1e-6)
    assert_close(shifted.weights_, base.weights_, 1e-6, "weights_")
    assert_close(shifted.lower_bounds_, base.lower_bounds_, 1e-6, "lower_bounds_")
    np.testing.assert_array_equal(shifted.predict(Xs), base.predict(X))
    np.testing.assert_allclose(shifted.score_samples(Xs), base.score_samples(X), rtol=1e-6)


@pytest.mark.parametrize(
    "covariance_type, init_params",
    [("full", i) for i in INIT_PARAMS] + [("tied", "kmeans"), ("tied", "random")],
)
def test_offset_1e8_initialisation_is_translation_invariant(covariance_type, init_params):
    """The initialisations work on differences too: X + 1e8 starts where X starts.

    Except scikit-learn's tied start from one row per component
    ('random_from_data', 'k-means++'), which uses raw second moments about
    the origin and so depends on it: see test_engine_init.
    """
    kwargs = dict(n_components=3, covariance_type=covariance_type, init_params=init_params, random_state=3, max_iter=0)
    base = fit(X, **kwargs)
    shifted = fit(da.from_array(X + 1e8, chunks=(50, 3)), **kwargs)
    np.testing.assert_allclose(shifted.means_ - 1e8, base.means_, rtol=0, atol=1e-6)
    # the random initialisation averages whole rows, so rounding of X + 1e8 counts more
    assert_close(shifted.covariances_, base.covariances_, 1e-5, "covariances_")


# ---------------------------------------------------------------------------
# float32


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_equals_float64_of_same_values(covariance_type, kind):
    X32 = X.astype(np.float32)
    X64 = X32.astype(np.float64)
    weights, means, precisions = _sklearn_start(X64, covariance_type)
    kwargs = dict(
        n_components=3, covariance_type=covariance_type, weights_init=weights, means_init=means,
        precisions_init=precisions, max_iter=20, tol=0.0,
    )
    Xin = X32 if kind == "numpy" else da.from_array(X32, chunks=(40, 3))
    a = fit(Xin, **kwargs)
    b = fit(X64, **kwargs)
    for attr in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        assert getattr(a, attr).dtype == np.float64, attr
    assert isinstance(a.lower_bound_, float)
    assert_same_fit(a, b, 1e-6)
    for method in ("score_samples", "predict_proba"):
        out = getattr(a, method)(Xin)
        out = out.compute() if hasattr(out, "compute") else out
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, getattr(b, method)(X64), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("init_params", INIT_PARAMS)
def test_float32_default_init_equals_float64(init_params):
    X32 = X.astype(np.float32)
    kwargs = dict(n_components=3, init_params=init_params, random_state=0, max_iter=10, tol=0.0)
    assert_same_fit(fit(X32, **kwargs), fit(X32.astype(np.float64), **kwargs), 1e-6)


def test_integer_input_is_float64():
    Xi = np.round(X * 100).astype(np.int32)
    kwargs = dict(n_components=3, random_state=0, max_iter=5, tol=0.0)
    a = fit(Xi, **kwargs)
    assert a.means_.dtype == np.float64
    assert_same_fit(a, fit(Xi.astype(np.float64), **kwargs), 1e-12)
    assert_same_fit(fit(da.from_array(Xi, chunks=(100, 3)), **kwargs), a, 1e-9)


# ---------------------------------------------------------------------------
# monotone log-likelihood


def _overlapping(n=400, seed=4):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0, 0.0], [1.5, 1.0, 0.0], [0.0, 1.5, 1.5]])
    return centers[rng.integers(0, 3, n)] + rng.normal(size=(n, 3))


@pytest.mark.parametrize("init_params", INIT_PARAMS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_lower_bound_never_decreases(covariance_type, init_params):
    Xo = _overlapping()
    gm = fit(Xo, n_components=3, covariance_type=covariance_type, init_params=init_params,
             random_state=1, max_iter=60, tol=0.0)
    lb = np.asarray(gm.lower_bounds_)
    assert len(lb) == 60
    steps = np.diff(lb)
    assert steps.min() >= -1e-10, f"lower bound decreased by {-steps.min():.3g} at iteration {steps.argmin() + 2}"
    # and the reported bound is the last one, the log-likelihood of the
    # parameters before the last M-step
    assert gm.lower_bound_ == lb[-1]
    assert gm.score(Xo) >= lb[-1] - 1e-10


def test_lower_bound_never_decreases_on_dask_tiny_chunks():
    Xo = _overlapping()
    gm = fit(da.from_array(Xo, chunks=(23, 3)), n_components=3, random_state=1, max_iter=25, tol=0.0)
    assert np.diff(gm.lower_bounds_).min() >= -1e-10
