"""Missing values by marginalisation: ``GaussianMixture(missing='marginalize')``.

* scores of incomplete rows are the marginal mixture density of their
  observed features, computed here directly with scipy (1e-8 relative),
  and so are the posteriors, labels and ``score_rows``' columns;
* one EM iteration is Ghahramani & Jordan's (a row-by-row NumPy reference
  of the E- and M-step, 1e-10), so EM climbs the observed-data
  log-likelihood, monotonically;
* with 10% of the entries missing at random the means come within 0.1 of
  the complete-data fit;
* numpy, dask (any chunking) and Zarr input give the same fit; float32
  like float64; weights count as repeated rows; save/load keeps the option;
* infinities, rows with every feature missing and features never observed
  are refused with the rows or features named; the default 'error' is
  today's behaviour (and marginalising complete data changes no bit).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import dask
import dask.array as da
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from conftest import gaussian_clusters, quiet, write_zarr
from gmm_engine import (
    COVARIANCE_TYPES,
    DataValidationError,
    GaussianMixture,
    InvalidParameterError,
    full_covariances,
)
from gmm_engine.scoring import score_rows

CENTERS = np.array([[0.0, 0.0, 0.0, 0.0], [4.0, 3.0, 0.0, 1.0], [0.0, 3.5, 4.0, -2.0]])
#: three overlapping clusters with correlated noise, 400 rows in 4-D
X = gaussian_clusters(400, CENTERS, (0.45, 0.35, 0.2), seed=3, mixing=0.4)


def with_missing(X, rate, seed=0):
    """X with entries missing at random (NaN) at ``rate``; no row loses every feature."""
    rng = np.random.default_rng(seed)
    out = np.array(X, dtype=np.float64)
    out[rng.random(out.shape) < rate] = np.nan
    empty = np.isnan(out).all(axis=1)
    out[empty, 0] = X[empty, 0]
    return out


XM = with_missing(X, 0.2)


def marginal(**kwargs):
    return GaussianMixture(missing="marginalize", **kwargs)


def fitted(covariance_type, Xin=XM, **kwargs):
    kw = dict(n_components=3, covariance_type=covariance_type, random_state=0, max_iter=20, tol=0.0)
    return quiet(marginal(**{**kw, **kwargs}).fit, Xin)


def direct_log_probs(model, Xin):
    """(n, K): log w_k + log N(x_o | mu_ko, Sigma_k,oo) per row, with scipy, on each row's observed block."""
    K, D = model.means_.shape
    full = full_covariances(model.covariances_, model.covariance_type, K, D)
    out = np.empty((Xin.shape[0], K))
    for i, x in enumerate(np.asarray(Xin, dtype=np.float64)):
        o = ~np.isnan(x)
        for k in range(K):
            mvn = multivariate_normal(model.means_[k][o], full[k][np.ix_(o, o)])
            out[i, k] = np.log(model.weights_[k]) + mvn.logpdf(x[o])
    return out


def reference_em_step(Xin, weights, means, covariances, covariance_type, reg_covar):
    """One EM iteration with missing values, row by row (Ghahramani & Jordan 1994): (w, mu, Sigma, loglik)."""
    K, D = means.shape
    full = full_covariances(covariances, covariance_type, K, D)
    n_k, s1, s2, loglik = np.zeros(K), np.zeros((K, D)), np.zeros((K, D, D)), 0.0
    for x in Xin:
        o = ~np.isnan(x)
        m = ~o
        lp = np.array([np.log(weights[k]) + multivariate_normal(means[k][o], full[k][np.ix_(o, o)]).logpdf(x[o])
                       for k in range(K)])
        total = np.logaddexp.reduce(lp)
        loglik += total
        r = np.exp(lp - total)
        for k in range(K):
            xh, cond = x.copy(), np.zeros((D, D))
            if m.any():
                b = full[k][np.ix_(m, o)] @ np.linalg.inv(full[k][np.ix_(o, o)])
                xh[m] = means[k][m] + b @ (x[o] - means[k][o])
                cond[np.ix_(m, m)] = full[k][np.ix_(m, m)] - b @ full[k][np.ix_(o, m)]
            n_k[k] += r[k]
            s1[k] += r[k] * xh
            s2[k] += r[k] * (np.outer(xh, xh) + cond)
    mu = s1 / n_k[:, None]
    cov = s2 / n_k[:, None, None] - mu[:, :, None] * mu[:, None, :]
    if covariance_type == "full":
        sigma = cov + reg_covar * np.eye(D)
    elif covariance_type == "tied":
        sigma = (cov * n_k[:, None, None]).sum(axis=0) / n_k.sum() + reg_covar * np.eye(D)
    elif covariance_type == "diag":
        sigma = np.diagonal(cov, axis1=1, axis2=2) + reg_covar
    else:
        sigma = np.diagonal(cov, axis1=1, axis2=2).mean(axis=1) + reg_covar
    return n_k / n_k.sum(), mu, sigma, loglik


def assert_close(actual, expected, rtol, what=""):
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def assert_same_fit(a, b, rtol):
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert_close(getattr(a, attr), getattr(b, attr), rtol, attr)
    assert a.n_iter_ == b.n_iter_
    assert_close(a.lower_bounds_, b.lower_bounds_, rtol, "lower_bounds_")


# ---------------------------------------------------------------------------
# exactness


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_score_samples_is_the_marginal_density_of_the_observed_features(covariance_type, dtype):
    model = fitted(covariance_type)
    Xin = XM.astype(dtype)
    direct = direct_log_probs(model, Xin)
    expected = np.logaddexp.reduce(direct, axis=1)
    incomplete = np.isnan(Xin).any(axis=1)
    assert 0.3 < incomplete.mean() < 0.9  # both kinds of row are scored
    np.testing.assert_allclose(model.score_samples(Xin), expected, rtol=1e-8)
    # posteriors and labels given the observed features
    posterior = np.exp(direct - expected[:, None])
    np.testing.assert_allclose(model.predict_proba(Xin), posterior, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(model.predict(Xin), np.argmax(direct, axis=1))
    assert model.score(Xin) == pytest.approx(expected.mean(), rel=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_em_iteration_is_ghahramani_and_jordans(covariance_type):
    start = fitted(covariance_type, max_iter=3)
    init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
    one = quiet(marginal(n_components=3, covariance_type=covariance_type, max_iter=1, **init).fit, XM)
    w, mu, sigma, loglik = reference_em_step(XM, start.weights_, start.means_, start.covariances_, covariance_type,
                                             one.reg_covar)
    assert_close(one.weights_, w, 1e-10, "weights")
    assert_close(one.means_, mu, 1e-10, "means")
    assert_close(one.covariances_, sigma, 1e-10, "covariances")
    # the lower bound is the observed-data mean log-likelihood of the start
    assert one.lower_bound_ == pytest.approx(loglik / XM.shape[0], rel=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_never_decreases_the_observed_log_likelihood(covariance_type):
    model = fitted(covariance_type, max_iter=40, init_params="random", random_state=4)
    lbs = np.asarray(model.lower_bounds_)
    assert lbs.size == 40
    assert np.all(np.diff(lbs) >= -1e-12 * np.abs(lbs[1:]))
    assert lbs[-1] > lbs[0]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_means_with_ten_percent_missing_are_within_a_tenth_of_the_complete_fit(covariance_type):
    # Three components 8 apart, 2,000 rows each, unit noise.  Hiding a tenth of the
    # entries moves a mean by about sqrt(0.1 / (0.9 * 2000)) = 0.0075 (one standard
    # deviation; measured over seeds 7-11: largest of the 12 coordinates 0.010-0.018),
    # so 0.1 is 13 standard deviations: a false alarm below 1e-9.
    centers = np.array([[0.0, 0.0, 0.0, 0.0], [8.0, 0.0, 8.0, 0.0], [0.0, 8.0, 0.0, 8.0]])
    full_data = gaussian_clusters(6000, centers, (1 / 3, 1 / 3, 1 / 3), seed=7)
    gaps = with_missing(full_data, 0.1, seed=8)
    assert abs(np.isnan(gaps).mean() - 0.1) < 0.01
    kw = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    complete = quiet(GaussianMixture(**kw).fit, full_data)
    incomplete = quiet(marginal(**kw).fit, gaps)
    order_a, order_b = np.argsort(complete.means_[:, 0] + 2 * complete.means_[:, 1]), \
        np.argsort(incomplete.means_[:, 0] + 2 * incomplete.means_[:, 1])
    assert np.max(np.abs(incomplete.means_[order_b] - complete.means_[order_a])) < 0.1
    np.testing.assert_allclose(incomplete.weights_[order_b], complete.weights_[order_a], atol=0.01)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_data_far_from_the_origin_fits_as_well(covariance_type):
    # completed rows and conditional covariances are taken around the means, as the fused kernels do
    start = fitted(covariance_type, max_iter=2)
    init = dict(weights_init=start.weights_, precisions_init=start.precisions_)
    base = fitted(covariance_type, max_iter=15, means_init=start.means_, **init)
    shifted = fitted(covariance_type, Xin=XM + 1e8, max_iter=15, means_init=start.means_ + 1e8, **init)
    # X + 1e8 is itself rounded to ~1.5e-8: that is all the difference allowed
    assert_close(shifted.covariances_, base.covariances_, 1e-6, "covariances_")
    np.testing.assert_allclose(shifted.means_ - 1e8, base.means_, rtol=0, atol=1e-6)
    assert_close(shifted.lower_bounds_, base.lower_bounds_, 1e-6, "lower_bounds_")


def test_many_features_group_patterns_by_their_packed_masks():
    # beyond 64 features a pattern is no longer one 64-bit key
    rng = np.random.default_rng(2)
    D = 70
    data = np.vstack([rng.normal(size=(150, D)), rng.normal(size=(150, D)) + 1.5])
    gaps = with_missing(data, 0.05, seed=3)
    model = quiet(marginal(n_components=2, covariance_type="diag", random_state=0, max_iter=5).fit, gaps)
    rows = gaps[:40]
    expected = np.logaddexp.reduce(direct_log_probs(model, rows), axis=1)
    np.testing.assert_allclose(model.score_samples(rows), expected, rtol=1e-8)
    assert np.all(np.diff(model.lower_bounds_) >= -1e-12 * np.abs(np.asarray(model.lower_bounds_[1:])))


def test_marginalising_complete_data_changes_no_bit():
    for ct in COVARIANCE_TYPES:
        kw = dict(n_components=3, covariance_type=ct, random_state=1, max_iter=10, tol=0.0)
        a = quiet(GaussianMixture(**kw).fit, X)
        b = quiet(marginal(**kw).fit, X)
        for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
            np.testing.assert_array_equal(getattr(b, attr), getattr(a, attr), err_msg=f"{ct} {attr}")
        np.testing.assert_array_equal(b.score_samples(X), a.score_samples(X))


# ---------------------------------------------------------------------------
# inputs: chunking, dask, Zarr, dtypes, weights


CHUNKINGS = {"7-rows": (7, 4), "uneven": ((13, 187, 1, 199), (4,)), "one-chunk": (400, 4)}


@pytest.mark.parametrize("init_params", ["kmeans", "random_from_data"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunking_and_dask_change_nothing_but_rounding(covariance_type, init_params):
    ref = fitted(covariance_type, max_iter=8, init_params=init_params, random_state=11)
    for name, chunks in CHUNKINGS.items():
        other = fitted(covariance_type, Xin=da.from_array(XM, chunks=chunks), max_iter=8,
                       init_params=init_params, random_state=11)
        try:
            assert_same_fit(other, ref, 1e-9)
        except AssertionError as exc:
            raise AssertionError(f"chunking {name!r} differs from numpy input") from exc
    lazy = ref.score_samples(da.from_array(XM, chunks=(50, 4)))
    np.testing.assert_allclose(lazy.compute(), ref.score_samples(XM), rtol=1e-12)


def test_zarr_input_fits_and_scores_like_numpy(tmp_path):
    path = write_zarr(tmp_path / "gaps.zarr", XM, chunk_rows=64)
    ref = fitted("full", max_iter=6)
    other = fitted("full", Xin=path, max_iter=6)
    assert_same_fit(other, ref, 1e-9)
    np.testing.assert_allclose(np.asarray(other.score_samples(path)), ref.score_samples(XM), rtol=1e-9)


def test_a_distributed_fit_equals_the_local_one(dask_cluster, tmp_path):
    distributed = pytest.importorskip("distributed")
    want = fitted("full", max_iter=6)
    with distributed.Client(dask_cluster, set_as_default=False) as client, client.as_current():
        inline = fitted("full", Xin=da.from_array(XM, chunks=(60, 4)), max_iter=6)
        stored = fitted("full", Xin=write_zarr(tmp_path / "x.zarr", XM, chunk_rows=60), max_iter=6)
        lazy = inline.score_samples(da.from_array(XM, chunks=(60, 4))).compute()
    assert_same_fit(inline, want, 1e-9)
    assert_same_fit(stored, want, 1e-9)
    np.testing.assert_allclose(lazy, want.score_samples(XM), rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_fits_like_the_same_values_in_float64(covariance_type):
    x32 = XM.astype(np.float32)
    a = fitted(covariance_type, Xin=x32, max_iter=6)
    b = fitted(covariance_type, Xin=x32.astype(np.float64), max_iter=6)
    assert a.means_.dtype == np.float64
    assert_same_fit(a, b, 1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_fit_the_repeated_rows(covariance_type):
    rng = np.random.default_rng(4)
    w = rng.integers(0, 4, size=XM.shape[0]).astype(np.float64)
    start = fitted(covariance_type, max_iter=2)
    init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
    kw = dict(n_components=3, covariance_type=covariance_type, max_iter=10, tol=0.0, **init)
    weighted = quiet(marginal(**kw).fit, XM, sample_weight=w)
    repeated = quiet(marginal(**kw).fit, np.repeat(XM, w.astype(int), axis=0))
    assert_same_fit(weighted, repeated, 1e-8)
    lazy_fit = quiet(marginal(**kw).fit, da.from_array(XM, chunks=(70, 4)), sample_weight=da.from_array(w, chunks=70))
    assert_same_fit(lazy_fit, weighted, 1e-9)
    assert weighted.score(XM, sample_weight=w) == pytest.approx(repeated.score(np.repeat(XM, w.astype(int), axis=0)),
                                                                rel=1e-10)
    lazy = weighted.score(da.from_array(XM, chunks=(64, 4)), sample_weight=da.from_array(w, chunks=64))
    assert lazy == pytest.approx(weighted.score(XM, sample_weight=w), rel=1e-12)


def test_criteria_are_those_of_the_observed_values():
    model = fitted("diag")
    ll = model.score_samples(XM).sum()
    p = model.n_parameters()
    assert model.bic(XM) == pytest.approx(-2 * ll + p * np.log(XM.shape[0]), rel=1e-12)
    assert model.aic(XM) == pytest.approx(-2 * ll + 2 * p, rel=1e-12)


@pytest.mark.parametrize("acceleration", [None, "squarem"])
def test_initialize_resume_partial_fit_and_acceleration_take_missing_values(acceleration):
    model = marginal(n_components=3, random_state=0, n_init=2, acceleration=acceleration, max_iter=30)
    start = model.initialize(XM)
    assert np.isfinite(start.lower_bound_) and np.all(np.isfinite(start.means_))
    quiet(model.fit, XM)
    assert np.all(np.diff(model.lower_bounds_) >= -1e-9)
    before = model.means_.copy()
    model.partial_fit(XM[:100])  # in memory: one E-step pass over the batch
    model.partial_fit(da.from_array(XM[100:200], chunks=(30, 4)))  # lazy: the pass checks the rows
    assert model.online_state_.n_steps == 2 and not np.array_equal(model.means_, before)
    first = marginal(n_components=3, random_state=0).partial_fit(XM[:200])
    assert np.all(np.isfinite(first.means_))


def test_resuming_a_checkpointed_fit_equals_the_uninterrupted_one():
    states = []
    whole = quiet(marginal(n_components=3, random_state=0, max_iter=12, tol=0.0).fit, XM, on_iteration=states.append)
    resumed = quiet(marginal(n_components=3, random_state=0, max_iter=12, tol=0.0).resume, XM, states[4])
    assert_same_fit(resumed, whole, 1e-12)


# ---------------------------------------------------------------------------
# score_rows


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_score_rows_gives_the_three_columns_and_the_observed_count(covariance_type):
    model = fitted(covariance_type)
    ll, comp, resp = score_rows(model, XM)
    np.testing.assert_allclose(ll, model.score_samples(XM), rtol=1e-12)
    np.testing.assert_array_equal(comp, model.predict(XM))
    np.testing.assert_allclose(resp, model.predict_proba(XM).max(axis=1), rtol=1e-10)
    observed = XM.shape[1] - np.isnan(XM).sum(axis=1)
    *columns, n_obs = score_rows(model, XM, n_observed=True)
    assert n_obs.dtype == np.int64
    np.testing.assert_array_equal(n_obs, observed)
    for a, b in zip(columns, (ll, comp, resp)):
        np.testing.assert_array_equal(a, b)
    # lazy, with the statistics of the same pass
    Xd = da.from_array(XM, chunks=(57, 4))
    lazy_ll, lazy_comp, lazy_resp, lazy_obs, lazy_stats = score_rows(model, Xd, with_stats=True, n_observed=True)
    got = dask.compute(lazy_ll, lazy_comp, lazy_resp, lazy_obs, lazy_stats)
    np.testing.assert_allclose(got[0], ll, rtol=1e-12)
    np.testing.assert_array_equal(got[1], comp)
    np.testing.assert_array_equal(got[3], observed)
    *_, stats = score_rows(model, XM, with_stats=True)
    assert got[4].loglik == pytest.approx(stats.loglik, rel=1e-12) == pytest.approx(ll.sum(), rel=1e-12)
    np.testing.assert_allclose(got[4].nk, stats.nk, rtol=1e-12)
    # the update from those statistics is one EM iteration over the scored rows
    model.partial_fit_statistics(stats)


def test_score_rows_counts_every_feature_without_missing_values():
    model = quiet(GaussianMixture(2, random_state=0).fit, X)
    *_, n_obs = score_rows(model, X, n_observed=True)
    np.testing.assert_array_equal(n_obs, np.full(X.shape[0], X.shape[1]))


# ---------------------------------------------------------------------------
# persistence and parameters


def test_save_and_load_keep_missing(tmp_path):
    model = fitted("tied")
    back = GaussianMixture.load(model.save(tmp_path / "m"))
    assert back.missing == "marginalize" and back.get_params() == model.get_params()
    np.testing.assert_array_equal(back.score_samples(XM), model.score_samples(XM))
    plain = GaussianMixture.load(quiet(GaussianMixture(2).fit, X).save(tmp_path / "p"))
    assert plain.missing == "error"


def test_a_bad_option_is_refused_with_scikit_learns_wording():
    with pytest.raises(InvalidParameterError, match=re.escape(
            "The 'missing' parameter of GaussianMixture must be a str among {'error', 'marginalize'}. "
            "Got 'impute' instead.")):
        GaussianMixture(missing="impute").fit(X)


# ---------------------------------------------------------------------------
# refusals


def test_the_default_refuses_nan_and_says_how_to_marginalise():
    with pytest.raises(DataValidationError, match=r"Input X contains NaN in \d+ of 400 rows.*"
                                                  r"impute or remove these rows.*set missing='marginalize'"):
        GaussianMixture(2).fit(XM)
    model = quiet(GaussianMixture(2).fit, X)
    with pytest.raises(DataValidationError, match=r"contains NaN"):
        model.score_samples(XM)
    model.set_params(missing="marginalize")  # a fitted model may score incomplete rows
    assert np.all(np.isfinite(model.score_samples(XM)))


def _unusable():
    bad = XM.copy()
    bad[5] = np.nan
    bad[17, 1] = np.inf
    bad[30, 2] = -np.inf
    bad[30, 0] = np.nan
    return bad


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_infinities_and_rows_without_any_feature_are_refused(kind):
    bad = _unusable()
    Xin = bad if kind == "numpy" else da.from_array(bad, chunks=(100, 4))
    message = (r"Input X has 3 of 400 rows that cannot be marginalised \(2 with infinity or a value too large "
               r"for dtype\('float64'\); 1 with every feature missing \(NaN\); row indices 5, 17, 30\)")
    with pytest.raises(DataValidationError, match=message):
        marginal(n_components=2).fit(Xin)
    model = fitted("full")
    scoring = r"3 of 400 rows that cannot be marginalised.*row indices 5, 17, 30"
    if kind == "dask":  # lazy scoring checks chunk by chunk
        scoring = r"3 of 100 rows of the chunk at rows 0 to 99 that cannot be marginalised.*row indices 5, 17, 30"
    for method in (model.score_samples, model.predict, model.predict_proba, lambda A: score_rows(model, A)[0]):
        with pytest.raises(DataValidationError, match=scoring):
            out = method(Xin)
            out.compute() if hasattr(out, "compute") else out
    with pytest.raises(DataValidationError, match=r"cannot be marginalised"):
        model.score(Xin, sample_weight=np.ones(400))
    with pytest.raises(DataValidationError, match=r"3 of 400 rows that cannot be marginalised"):
        model.partial_fit(Xin)  # lazy: the E-step pass checks the rows it reads


def test_a_feature_never_observed_is_refused():
    bad = XM.copy()
    bad[:, 0] = X[:, 0]  # every row keeps a feature
    bad[:, 2] = np.nan
    with pytest.raises(DataValidationError, match=r"1 of 4 features with no observed value \(features 2: NaN in "
                                                  r"every row of positive weight\).*leave these features out"):
        marginal(n_components=2).fit(bad)


# ---------------------------------------------------------------------------
# the other vector width


SCRIPT = r"""
import json, sys
import numpy as np
from gmm_engine import COVARIANCE_TYPES, GaussianMixture, _simd
rng = np.random.default_rng(5)
X = np.vstack([rng.normal(size=(300, 11)) + 3 * k for k in range(3)])
X[rng.random(X.shape) < 0.15] = np.nan
out = {"W": _simd.W}
for ct in COVARIANCE_TYPES:
    gm = GaussianMixture(3, covariance_type=ct, max_iter=8, tol=0, init_params="random_from_data",
                         random_state=0, missing="marginalize").fit(X)
    out[ct] = {"means": gm.means_.tolist(), "lower_bound": gm.lower_bound_, "scores": gm.score_samples(X[:50]).tolist()}
json.dump(out, sys.stdout)
"""


@pytest.mark.slow
def test_the_other_vector_width_gives_the_same_fit():
    from gmm_engine import _simd

    def run(lanes):
        env = dict(os.environ)
        env.pop("GMM_STREAM_SIMD_LANES", None)
        if lanes is not None:
            env["GMM_STREAM_SIMD_LANES"] = str(lanes)
        res = subprocess.run([sys.executable, "-W", "ignore", "-c", SCRIPT], env=env, capture_output=True,
                             text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
        return json.loads(res.stdout)

    other = 4 if _simd.W == 8 else 8
    native, forced = run(None), run(other)
    assert (native["W"], forced["W"]) == (_simd.W, other)
    for ct in COVARIANCE_TYPES:
        for key in ("means", "scores"):
            np.testing.assert_allclose(forced[ct][key], native[ct][key], rtol=1e-10, atol=1e-12, err_msg=f"{ct} {key}")
        assert forced[ct]["lower_bound"] == pytest.approx(native[ct]["lower_bound"], rel=1e-12)
