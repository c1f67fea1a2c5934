"""``init_size``: starts found on a sample of the rows, drawn in the scan."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest

from conftest import assert_same_params, quiet
from gmm_engine import COVARIANCE_TYPES, GaussianMixture
from gmm_engine._chunked import NumpyData
from gmm_engine._sample_start import RowSample, sample_probability, scan_sample_chunk
from gmm_engine.exceptions import InvalidParameterError

N, D, K = 20_000, 3, 3
INIT_SIZE = 4_000


def mixture(n=N, seed=0, dtype=np.float64):
    """Three separated blobs of unequal size and spread."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0, 0.0], [6.0, 1.0, -2.0], [-3.0, 7.0, 4.0]])
    labels = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    X = centers[labels] + rng.normal(size=(n, D)) * np.array([1.0, 0.7, 1.3])[labels, None]
    return X.astype(dtype)


def fit(X, **kwargs):
    kwargs = {"n_components": K, "random_state": 0, "tol": 1e-4, "max_iter": 500, **kwargs}
    return quiet(GaussianMixture(**kwargs).fit, X)


def drawn(X, chunk_rows, key=123, probability=0.2, weights=None):
    data = NumpyData(X, block_rows=chunk_rows, weights=weights)
    return data.map_reduce(scan_sample_chunk, False, key, probability)


def test_the_sample_is_the_same_rows_whatever_the_chunking():
    X = mixture(5_000)
    a, b = drawn(X, 5_000), drawn(X, 333)
    np.testing.assert_array_equal(a.sample.rows, b.sample.rows)
    # about probability * n rows (binomial sd ~28 here: 6 sd either side)
    assert 1_000 - 170 < a.sample.rows.shape[0] < 1_000 + 170
    np.testing.assert_allclose(a.summary.mean, X.mean(axis=0), rtol=1e-12)
    # in global row order, each row of X
    rows = {tuple(r) for r in X}
    assert all(tuple(r) in rows for r in a.sample.rows[:50])


def test_weighted_rows_keep_their_weight_and_removed_rows_are_never_drawn():
    X = mixture(5_000)
    w = np.random.default_rng(1).integers(0, 3, size=5_000).astype(np.float64)
    got = drawn(X, 700, probability=0.5, weights=w)
    assert got.sample.weights is not None and np.all(got.sample.weights > 0)
    index = {tuple(r): i for i, r in enumerate(X)}
    picked = np.array([index[tuple(r)] for r in got.sample.rows])
    np.testing.assert_array_equal(got.sample.weights, w[picked])
    assert np.all(w[picked] > 0)
    # the same draw as without weights, less the removed rows
    unweighted = drawn(X, 700, probability=0.5)
    expected = [i for i in (index[tuple(r)] for r in unweighted.sample.rows) if w[i] > 0]
    np.testing.assert_array_equal(picked, expected)


def test_merge_is_concatenation_in_order():
    a = RowSample(np.arange(6.0).reshape(3, 2), np.ones(3))
    b = RowSample(np.arange(6.0, 10.0).reshape(2, 2), np.full(2, 2.0))
    m = a.merge(b)
    np.testing.assert_array_equal(m.rows, np.arange(10.0).reshape(5, 2))
    np.testing.assert_array_equal(m.weights, [1, 1, 1, 2, 2])


def test_probability():
    assert sample_probability(None, 10) is None
    # MiniBatchKMeans's clipping: every row, held in memory
    assert sample_probability(10, 10) == 1.0 and sample_probability(11, 10) == 1.0
    assert sample_probability(5, 20) == 0.25


def test_at_least_n_samples_holds_every_row():
    X = mixture(2_000)
    got = drawn(X, 300, probability=1.0)
    np.testing.assert_array_equal(got.sample.rows, X)


@pytest.mark.parametrize("acceleration", [None, "squarem"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_sample_start_reads_the_data_only_to_scan_and_polish(acceleration, dtype):
    X = mixture(dtype=dtype)
    full = fit(X, acceleration=acceleration)
    sampled = fit(X, acceleration=acceleration, init_size=INIT_SIZE)
    # the scan (which drew the sample) and EM on all rows: no k-means pass over the data
    assert sampled.n_passes_ == 1 + sampled.n_iter_
    assert full.n_passes_ > sampled.n_passes_ + 5
    assert sampled.converged_
    # the same optimum: the sample's start is already near it
    assert sampled.lower_bound_ >= full.lower_bound_ - 1e-4
    order = np.argsort(sampled.means_[:, 0]), np.argsort(full.means_[:, 0])
    np.testing.assert_allclose(sampled.means_[order[0]], full.means_[order[1]], atol=2e-3)
    assert sampled.n_iter_ <= 5


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_every_covariance_type_reaches_the_full_start_s_optimum(covariance_type):
    X = mixture()
    full = fit(X, covariance_type=covariance_type, acceleration="squarem")
    sampled = fit(X, covariance_type=covariance_type, acceleration="squarem", init_size=INIT_SIZE)
    assert sampled.lower_bound_ >= full.lower_bound_ - 1e-4
    assert sampled.n_passes_ < full.n_passes_


def test_the_fit_does_not_depend_on_the_chunking():
    X = mixture()
    a = fit(da.from_array(X, chunks=(5_000, D)), init_size=INIT_SIZE)
    b = fit(da.from_array(X, chunks=(1_337, D)), init_size=INIT_SIZE)
    c = fit(X, init_size=INIT_SIZE)
    assert a.n_passes_ == b.n_passes_ == c.n_passes_
    assert_same_params(a, b, rtol=1e-9)
    assert_same_params(a, c, rtol=1e-9)


def test_every_initial_parameter_given_draws_no_sample():
    X = mixture(3_000)
    full = fit(X)
    given = dict(weights_init=full.weights_, means_init=full.means_, precisions_init=full.precisions_)
    a, b = fit(X, **given), fit(X, init_size=500, **given)
    for attr in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    assert a.n_passes_ == b.n_passes_


def test_data_no_larger_than_the_sample_is_started_in_memory():
    X = mixture(3_000)
    full = fit(X, acceleration="squarem")
    whole = fit(X, acceleration="squarem", init_size=3_000)
    larger = fit(X, acceleration="squarem", init_size=10**9)
    assert whole.n_passes_ == 1 + whole.n_iter_ and larger.n_passes_ == 1 + larger.n_iter_
    assert whole.n_iter_ <= 3 < full.n_passes_ - 5
    assert_same_params(whole, larger, rtol=0)
    assert whole.lower_bound_ >= full.lower_bound_ - 1e-4


def test_a_sample_too_small_for_the_components_falls_back_to_all_rows(caplog):
    X = mixture(3_000)
    with caplog.at_level(logging.INFO, logger="gmm_engine"):
        small = fit(X, init_size=2)  # about 2 rows drawn for 3 components
    assert "fewer rows than 3 components: starting on all rows" in caplog.text
    full = fit(X)
    np.testing.assert_array_equal(small.means_, full.means_)
    assert small.n_passes_ == full.n_passes_


def test_sample_weight_and_missing_values():
    X = mixture()
    w = np.random.default_rng(2).integers(0, 3, size=N).astype(np.float64)
    weighted = quiet(GaussianMixture(K, random_state=0, tol=1e-4, init_size=INIT_SIZE).fit, X, sample_weight=w)
    repeated = fit(np.repeat(X, w.astype(int), axis=0))
    assert weighted.n_passes_ == 1 + weighted.n_iter_
    order = np.argsort(weighted.means_[:, 0]), np.argsort(repeated.means_[:, 0])
    np.testing.assert_allclose(weighted.means_[order[0]], repeated.means_[order[1]], atol=5e-3)
    Xm = X.copy()
    Xm[np.random.default_rng(3).random(Xm.shape) < 0.05] = np.nan
    Xm[np.isnan(Xm).all(axis=1), 0] = 0.0
    marg = fit(Xm, missing="marginalize", init_size=INIT_SIZE)
    full = fit(Xm, missing="marginalize")
    assert marg.n_passes_ == 1 + marg.n_iter_ < full.n_passes_
    assert marg.lower_bound_ >= full.lower_bound_ - 1e-4


def test_initialize_gives_the_start_fit_would_start_from():
    X = mixture()
    started = quiet(GaussianMixture(K, random_state=0, init_size=INIT_SIZE).initialize, X)
    fitted = fit(X, tol=1e-3, init_size=INIT_SIZE, max_iter=1)
    assert started.n_passes_ == 1  # the scan only
    # the sample's EM runs whatever max_iter (which bounds passes over the data): as the pipeline initialises
    zero = quiet(GaussianMixture(K, random_state=0, init_size=INIT_SIZE, max_iter=0).initialize, X)
    np.testing.assert_array_equal(zero.means_, started.means_)
    kmeans_only = quiet(GaussianMixture(K, random_state=0, init_size=INIT_SIZE, max_iter=0).fit, X)
    assert kmeans_only.n_iter_ == 0
    np.testing.assert_array_equal(kmeans_only.means_, started.means_)
    # one EM step from the start: the sample's optimum is already close to the full one
    np.testing.assert_allclose(np.sort(started.means_[:, 0]), np.sort(fitted.means_[:, 0]), atol=0.05)


def test_init_size_is_validated_and_saved(tmp_path):
    X = mixture(3_000)
    for bad in (0, -5, 2.5, True, "all"):
        with pytest.raises(InvalidParameterError,
                           match=r"The 'init_size' parameter of GaussianMixture must be an int in the range "
                                 r"\[1, inf\) or None\. Got .* instead\."):
            GaussianMixture(init_size=bad).fit(X)
    gm = fit(X, init_size=1_000)
    gm.save(tmp_path / "m")
    assert GaussianMixture.load(tmp_path / "m").init_size == 1_000
