"""SufficientStatistics as a public value, and statistics from the scoring pass.

* ``rebased`` is exact: statistics accumulated around one shift and moved
  to another equal those accumulated around the other, every covariance
  type; ``scaled``, ``merge`` and the lossless ``to_arrays`` /
  ``from_arrays`` (through JSON);
* ``score_rows(..., with_stats=True)`` gives the E-step statistics of X
  under the model from the same pass: in memory and lazily, where
  computing the rows and the statistics together reads every chunk once;
* a caller's ``chunk_summary`` runs in the same chunk tasks and is summed
  over the chunks;
* ``score_rows`` itself takes the rows from the fused E-step kernel where
  that is faster, with the results of the log-probability route to 1e-12.
"""

from __future__ import annotations

import functools
import json

import dask
import dask.array as da
import numpy as np
import pytest

from conftest import counted_dask, quiet, three_clusters
from gmm_engine import COVARIANCE_TYPES, DataValidationError, GaussianMixture, SufficientStatistics
from gmm_engine import _covariance
from gmm_engine._blocks import _weighted_log_prob, logsumexp_rows
from gmm_engine._fitted import fitted_params
from gmm_engine._params import m_step
from gmm_engine.scoring import score_rows

X = three_clusters(500, seed=4)


@pytest.fixture(scope="module")
def models():
    return {ct: quiet(GaussianMixture(3, covariance_type=ct, random_state=0).fit, X) for ct in COVARIANCE_TYPES}


def estep_stats(model, Xin):
    return SufficientStatistics.from_estep(Xin, fitted_params(model).kernel_params())


def assert_stats_close(a, b, rtol):
    """Equal statistics up to rounding: relative to the size of the terms summed, not of the sums."""
    assert a.covariance_type == b.covariance_type and a.n_samples == b.n_samples
    np.testing.assert_array_equal(a.shift, b.shift)
    # the sums around the means nearly cancel: their rounding is that of n * |x - a|
    scale = {"nk": b.nk.max(), "sums": b.nk.max() * np.sqrt(np.max(np.abs(b.scatter)) / b.nk.max()),
             "scatter": np.max(np.abs(b.scatter))}
    for name in ("nk", "sums", "scatter"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=rtol * scale[name],
                                   err_msg=name)
    if not np.isnan(b.loglik):
        assert a.loglik == pytest.approx(b.loglik, rel=rtol)
    assert a.sum_weights == pytest.approx(b.sum_weights, rel=rtol)


# ---------------------------------------------------------------------------
# the value


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_rebased_equals_accumulating_around_the_new_shift(covariance_type, models):
    model = models[covariance_type]
    resp = model.predict_proba(X)
    a = model.means_ + 0.7
    b = model.means_ - np.array([0.3, -1.1, 2.0])
    around_a = SufficientStatistics.from_resp(X, resp, a, covariance_type)
    around_b = SufficientStatistics.from_resp(X, resp, b, covariance_type)
    assert_stats_close(around_a.rebased(b), around_b, 1e-10)
    # and the M-step does not depend on the shift
    p, q = m_step(around_a.rebased(model.means_), 1e-6), m_step(around_b, 1e-6)
    np.testing.assert_allclose(p.covariances, q.covariances, rtol=1e-10, atol=1e-12)
    # a mean coordinate near 0 differs by the rounding of the data's scale, not of its own
    np.testing.assert_allclose(p.means, q.means, rtol=1e-12, atol=1e-12 * np.abs(X).max())


def test_rebased_far_from_the_origin_keeps_precision():
    Xf = X + 1e8
    model = quiet(GaussianMixture(3, covariance_type="full", random_state=0).fit, Xf)
    stats = estep_stats(model, Xf)
    moved = stats.rebased(model.means_ + 0.25).rebased(model.means_)
    assert_stats_close(moved, stats, 1e-9)


def test_scaled_and_merge():
    model = quiet(GaussianMixture(3, random_state=0).fit, X)
    s1, s2 = estep_stats(model, X[:200]), estep_stats(model, X[200:])
    whole = s1.merge(s2)
    assert_stats_close(whole, estep_stats(model, X), 1e-12)
    half = whole.scaled(0.5)
    assert half.n_samples == whole.n_samples and half.sum_weights == whole.sum_weights / 2
    assert half.loglik == whole.loglik / 2 and half.mean_loglik == whole.mean_loglik
    with pytest.raises(ValueError, match="different shifts"):
        s1.merge(s2.rebased(s2.shift + 1.0))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_to_and_from_arrays_is_lossless_through_json(covariance_type, models, tmp_path):
    stats = estep_stats(models[covariance_type], X)
    arrays, scalars = stats.to_arrays()
    for name, arr in arrays.items():
        np.save(tmp_path / f"{name}.npy", arr)
    scalars = json.loads(json.dumps(scalars))
    back = SufficientStatistics.from_arrays({n: np.load(tmp_path / f"{n}.npy") for n in arrays}, scalars)
    for name in ("shift", "nk", "sums", "scatter"):
        np.testing.assert_array_equal(getattr(back, name), getattr(stats, name))
    assert (back.loglik, back.n_samples, back.sum_weights, back.covariance_type) == (
        stats.loglik, stats.n_samples, stats.sum_weights, stats.covariance_type)
    # non-finite scalars (statistics of given responsibilities have no log-likelihood)
    given = SufficientStatistics.from_resp(X, np.full((500, 1), 1.0), X.mean(0, keepdims=True), "full")
    arrays, scalars = given.to_arrays()
    assert scalars["loglik"] == "nan"
    assert np.isnan(SufficientStatistics.from_arrays(arrays, json.loads(json.dumps(scalars))).loglik)


def test_from_arrays_refuses_what_does_not_fit():
    stats = estep_stats(quiet(GaussianMixture(3, random_state=0).fit, X), X)
    arrays, scalars = stats.to_arrays()
    with pytest.raises(ValueError, match=r"scatter has shape \(3, 3\), expected \(3, 3, 3\)"):
        SufficientStatistics.from_arrays({**arrays, "scatter": arrays["scatter"][0]}, scalars)
    with pytest.raises(ValueError, match="lack 'nk'"):
        SufficientStatistics.from_arrays({k: v for k, v in arrays.items() if k != "nk"}, scalars)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        SufficientStatistics.from_arrays(arrays, {**scalars, "covariance_type": "banded"})
    with pytest.raises(ValueError, match="n_samples must be a non-negative integer"):
        SufficientStatistics.from_arrays(arrays, {**scalars, "n_samples": -1})


# ---------------------------------------------------------------------------
# statistics from the scoring pass


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_score_rows_with_stats_in_memory(covariance_type, models):
    model = models[covariance_type]
    ll, comp, resp, stats = score_rows(model, X, with_stats=True)
    assert_stats_close(stats, estep_stats(model, X), 1e-12)
    want = score_rows(model, X)
    for got, exp in zip((ll, comp, resp), want):
        np.testing.assert_array_equal(got, exp)
    assert stats.loglik == pytest.approx(ll.sum(), rel=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_score_rows_with_stats_lazy_reads_each_chunk_once(covariance_type, models):
    model = models[covariance_type]
    Xd, counter = counted_dask(X, 60)
    ll, comp, resp, stats = score_rows(model, Xd, with_stats=True)
    assert counter.reads == []  # nothing computed yet
    ll, comp, resp, stats = dask.compute(ll, comp, resp, stats)
    assert len(counter.reads) == 9  # 9 chunks, each read once for the rows and the statistics
    assert comp.dtype == np.int64
    assert_stats_close(stats, estep_stats(model, X), 1e-12)
    for got, exp in zip((ll, comp, resp), score_rows(model, X)):
        np.testing.assert_allclose(got, exp, rtol=1e-13)
    # one of the arrays with the statistics: still one read per chunk
    Xd, counter = counted_dask(X, 60)
    ll, _, _, stats = score_rows(model, Xd, with_stats=True)
    dask.compute(ll, stats)
    assert len(counter.reads) == 9
    Xd, counter = counted_dask(X, 60)
    assert_stats_close(score_rows(model, Xd, with_stats=True)[3].compute(), estep_stats(model, X), 1e-12)


def test_score_rows_with_stats_lazy_checks_rows():
    model = quiet(GaussianMixture(3, random_state=0).fit, X)
    bad = X.copy()
    bad[130] = np.inf
    *_, stats = score_rows(model, da.from_array(bad, chunks=(60, 3)), with_stats=True)
    with pytest.raises(DataValidationError, match=r"the chunk at rows 120 to 179"):
        stats.compute()


def test_score_rows_with_stats_on_a_cluster(dask_cluster, models):
    distributed = pytest.importorskip("distributed")
    model = models["full"]
    with distributed.Client(dask_cluster, set_as_default=False) as client, client.as_current():
        ll, comp, resp, stats = score_rows(model, da.from_array(X, chunks=(100, 3)), with_stats=True)
        ll, stats = dask.compute(ll, stats)
    assert_stats_close(stats, estep_stats(model, X), 1e-12)
    np.testing.assert_allclose(ll, model.score_samples(X), rtol=1e-12)


def _row_summary(ll, comp, resp, *, K):
    """Rows, sum of log-likelihoods, rows per component and the sum of responsibilities of a chunk."""
    return np.concatenate([[ll.size, ll.sum(), resp.sum()], np.bincount(comp, minlength=K)])


@pytest.mark.parametrize("with_stats", [True, False])
def test_chunk_summary_is_computed_in_the_chunk_tasks_and_summed(with_stats, models):
    model = models["diag"]
    summary = functools.partial(_row_summary, K=3)
    want = score_rows(model, X)
    expected = _row_summary(*want, K=3)
    # in memory: of all the rows, after the per-row outputs (and the statistics)
    got = score_rows(model, X, with_stats=with_stats, chunk_summary=summary)
    assert len(got) == (5 if with_stats else 4)
    np.testing.assert_allclose(got[-1], expected, rtol=1e-12)
    for a, b in zip(got[:3], want):
        np.testing.assert_array_equal(a, b)
    # lazily: summed over 9 ragged chunks, each chunk read once for the rows, statistics and summary
    Xd, counter = counted_dask(X, 60)
    got = score_rows(model, Xd, with_stats=with_stats, chunk_summary=summary)
    assert counter.reads == []
    computed = dask.compute(*got)
    assert len(counter.reads) == 9
    np.testing.assert_allclose(computed[-1], expected, rtol=1e-12)
    np.testing.assert_array_equal(computed[-1][[0, 3, 4, 5]], expected[[0, 3, 4, 5]])  # the counts exactly
    if with_stats:
        assert_stats_close(computed[3], estep_stats(model, X), 1e-12)
    # alone, and on a chunking of one chunk
    np.testing.assert_allclose(got[-1].compute(), expected, rtol=1e-12)
    one = score_rows(model, da.from_array(X, chunks=X.shape), chunk_summary=summary)[-1].compute()
    np.testing.assert_allclose(one, expected, rtol=1e-12)


def test_chunk_summary_on_a_cluster(dask_cluster, models):
    distributed = pytest.importorskip("distributed")
    model = models["full"]
    summary = functools.partial(_row_summary, K=3)
    with distributed.Client(dask_cluster, set_as_default=False) as client, client.as_current():
        ll, *_, total = score_rows(model, da.from_array(X, chunks=(100, 3)), chunk_summary=summary)
        ll, total = dask.compute(ll, total)
    np.testing.assert_allclose(total, _row_summary(*score_rows(model, X), K=3), rtol=1e-12)


@pytest.mark.parametrize("n_features", [3, 60])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_score_rows_fused_rows_equal_the_log_probability_route(covariance_type, n_features):
    rng = np.random.default_rng(0)
    Xw = rng.normal(size=(700, n_features)) + 4.0 * (rng.integers(0, 3, size=(700, 1)))
    model = quiet(GaussianMixture(3, covariance_type=covariance_type, random_state=0, max_iter=5).fit, Xw)
    kp = fitted_params(model).kernel_params()
    wlp = _weighted_log_prob(Xw, kp, None, True)
    lse = logsumexp_rows(wlp)
    best = np.argmax(wlp, axis=1)
    ll, comp, resp = score_rows(model, Xw)
    np.testing.assert_allclose(ll, lse, rtol=1e-12)
    np.testing.assert_array_equal(comp, best)
    np.testing.assert_allclose(resp, np.exp(wlp[np.arange(700), best] - lse), rtol=1e-12)
    fused = n_features <= _covariance.get(covariance_type).fused_rows_max_features
    assert fused == (n_features == 3 or covariance_type in ("diag", "spherical"))
