"""partial_fit and partial_fit_statistics: stepwise EM on the sufficient statistics.

* on a stationary stream, one pass of partial_fit over 60 batches ends
  within 0.05 nats/row of batch EM on the same rows (default settings,
  every covariance type);
* each call after the first is one pass over its batch, and its arithmetic
  is the stepwise (or forgetting) update of EM-NOTES, exactly;
* an update from statistics with the running state weighted 0 (or none)
  is one EM iteration over those rows; with the fit's running state
  weighted lambda it is one weighted EM iteration where the training rows
  weigh lambda (1e-10);
* the state survives save/load bit for bit, also into another process;
* parameters are validated with scikit-learn's wording; a failed step
  changes nothing.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from numbers import Real
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from sklearn.utils._param_validation import Interval

from conftest import counted_dask, quiet, stationary_stream, three_clusters
from gmm_engine import COVARIANCE_TYPES, DataValidationError, GaussianMixture, InvalidParameterError
from gmm_engine._params import m_step
from gmm_engine.scoring import score_rows

X1, X2, X3 = three_clusters(600, seed=1), three_clusters(300, seed=2), three_clusters(200, seed=3)


def params_of(gm):
    return {a: getattr(gm, a) for a in ("weights_", "means_", "covariances_", "precisions_cholesky_")}


def assert_params_close(a, b, rtol):
    for attr, want in params_of(b).items():
        got = getattr(a, attr)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.max(np.abs(want)), err_msg=attr)


def converged_fit(covariance_type, Xin=X1, **kwargs):
    """A fit at EM's fixed point (well-separated clusters, tol=0): its last pass is under its own parameters."""
    return quiet(GaussianMixture(3, covariance_type=covariance_type, tol=0.0, max_iter=300, random_state=0,
                                 **kwargs).fit, Xin)


def start_of(gm):
    return dict(weights_init=gm.weights_, means_init=gm.means_, precisions_init=gm.precisions_)


# ---------------------------------------------------------------------------
# the target: a stationary stream


def stream_gap(covariance_type, n_batches=60, batch_rows=1000, seed=0):
    """Mean log-likelihood per row of batch EM minus that of one partial_fit pass over the batches."""
    X = stationary_stream(n_batches, batch_rows, seed=seed)
    online = GaussianMixture(3, covariance_type=covariance_type, random_state=seed)
    for b in range(n_batches):
        online.partial_fit(X[b * batch_rows : (b + 1) * batch_rows])
    batch = quiet(GaussianMixture(3, covariance_type=covariance_type, random_state=seed).fit, X)
    return batch.score(X) - online.score(X), online


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_stationary_stream_ends_near_batch_em(covariance_type):
    gap, online = stream_gap(covariance_type)
    assert gap < 0.05, gap
    assert online.n_iter_ == 60 and online.online_state_.n_steps == 60
    assert online.online_state_.n_rows_seen == 60_000 and not online.converged_


def overlapping_stream_gap(covariance_type, seed):
    X = stationary_stream(60, 1000, separation=2.0, mixing=0.5, seed=seed)
    online = GaussianMixture(3, covariance_type=covariance_type, random_state=seed)
    for b in range(60):
        online.partial_fit(X[b * 1000 : (b + 1) * 1000])
    batch = quiet(GaussianMixture(3, covariance_type=covariance_type, random_state=seed).fit, X)
    return batch.score(X) - online.score(X)


@pytest.mark.parametrize("seed", [5, 7])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_overlapping_stream_ends_near_batch_em(covariance_type, seed):
    assert overlapping_stream_gap(covariance_type, seed) < 0.05


@pytest.mark.parametrize("covariance_type, seed", [("full", 5), ("tied", 7)])
def test_one_em_iteration_on_the_first_batch_is_not_enough(covariance_type, seed, monkeypatch):
    # why the first call fits its batch (see _partial_fit.FIRST_BATCH_EM): measured
    import gmm_engine._partial_fit as partial_fit

    monkeypatch.setattr(partial_fit, "FIRST_BATCH_EM", False)
    assert overlapping_stream_gap(covariance_type, seed) > 0.05


# ---------------------------------------------------------------------------
# one pass per call, and its arithmetic


def test_a_call_after_the_first_is_one_pass_over_the_batch():
    gm = converged_fit("full")
    Xd, counter = counted_dask(X2, 50)
    gm.partial_fit(Xd)
    assert len(counter.reads) == 6  # every chunk read once: one pass, checks included


@pytest.mark.parametrize("weighted", [False, True])
def test_lazy_batches_on_a_cluster_equal_in_memory_ones(dask_cluster, weighted):
    distributed = pytest.importorskip("distributed")
    w = np.random.default_rng(1).integers(0, 3, size=X2.shape[0]).astype(float) if weighted else None
    want = converged_fit("full").partial_fit(X2, sample_weight=w)
    got = converged_fit("full")
    with distributed.Client(dask_cluster, set_as_default=False) as client, client.as_current():
        got.partial_fit(da.from_array(X2, chunks=(50, 3)),
                        sample_weight=None if w is None else da.from_array(w, chunks=(50,)))
    assert_params_close(got, want, 1e-12)
    assert got.online_state_.sum_weights_seen == want.online_state_.sum_weights_seen


def test_the_first_call_fits_its_batch():
    gm = GaussianMixture(3, random_state=0).partial_fit(X1)
    fitted = quiet(GaussianMixture(3, random_state=0).fit, X1)
    # EM on the first batch; the model is the M-step of that fit's last pass
    assert_params_close(gm, fitted, 1e-12)
    assert gm.n_iter_ == 1 and gm.converged_ is False and gm.lower_bounds_ == [gm.lower_bound_]
    assert gm.lower_bound_ == pytest.approx(fitted.lower_bound_, rel=1e-14)
    assert gm.online_state_.n_steps == 1 and gm.online_state_.mode == "stepwise"


def test_the_first_call_takes_the_users_start():
    start = start_of(converged_fit("diag"))
    gm = GaussianMixture(3, covariance_type="diag", max_iter=1, **start).partial_fit(X2)
    one_em = GaussianMixture(3, covariance_type="diag", max_iter=1, **start)
    assert_params_close(gm, quiet(one_em.fit, X2), 1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_stepwise_update_is_the_documented_arithmetic(covariance_type):
    gm = converged_fit(covariance_type)
    before = gm.online_state_
    *_, batch = score_rows(gm, X2, with_stats=True)
    gm.partial_fit(X2)
    eta = (10.0 + 1) ** -0.7  # t = 1: the first step after the fit
    S = before.stats.rebased(batch.shift).scaled(1 - eta).merge(batch.scaled(eta / batch.sum_weights))
    assert_params_close(gm, _as_model(m_step(S, gm.reg_covar)), 1e-12)
    assert gm.lower_bound_ == pytest.approx(batch.loglik / 300, rel=1e-13)
    state = gm.online_state_
    assert (state.n_steps, state.n_rows_seen, state.sum_weights_seen) == (1, 900, 900.0)
    assert state.stats.sum_weights == pytest.approx(1.0, rel=1e-14)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_forgetting_update_is_the_documented_arithmetic(covariance_type):
    gm = converged_fit(covariance_type, half_life=1000.0)
    before = gm.online_state_
    assert before.mode == "forgetting" and before.stats.sum_weights == 600.0
    *_, batch = score_rows(gm, X2, with_stats=True)
    gm.partial_fit(X2)
    lam = 2.0 ** (-300 / 1000.0)
    S = before.stats.rebased(batch.shift).scaled(lam).merge(batch)
    assert_params_close(gm, _as_model(m_step(S, gm.reg_covar)), 1e-12)
    assert gm.online_state_.stats.sum_weights == pytest.approx(600 * lam + 300, rel=1e-14)


def _as_model(params):
    class Model:
        pass

    m = Model()
    m.weights_, m.means_, m.covariances_ = params.weights, params.means, params.covariances
    m.precisions_cholesky_ = params.precisions_cholesky
    return m


def test_weighted_batches_weigh_as_repeated_rows():
    w = np.random.default_rng(0).integers(1, 4, size=X2.shape[0]).astype(float)
    a = converged_fit("full").partial_fit(X2, sample_weight=w)
    b = converged_fit("full").partial_fit(np.repeat(X2, w.astype(int), axis=0))
    assert_params_close(a, b, 1e-10)
    assert a.online_state_.sum_weights_seen == b.online_state_.sum_weights_seen


def test_changing_mode_between_steps():
    gm = converged_fit("tied")
    gm.partial_fit(X2)
    gm.set_params(half_life=500.0).partial_fit(X3)
    state = gm.online_state_
    assert state.mode == "forgetting" and state.n_steps == 2
    # switching rescaled the per-unit-weight statistics to the weight seen
    lam = 2.0 ** (-200 / 500.0)
    assert state.stats.sum_weights == pytest.approx(900 * lam + 200, rel=1e-12)
    gm.set_params(half_life=None).partial_fit(X2)
    assert gm.online_state_.stats.sum_weights == pytest.approx(1.0, rel=1e-12)


def test_lazy_batches_with_bad_rows_change_nothing():
    gm = converged_fit("full")
    before, state = copy.deepcopy(params_of(gm)), gm.online_state_
    bad = X2.copy()
    bad[17, 1] = np.nan
    with pytest.raises(DataValidationError, match=r"Input X contains NaN in 1 of 300 rows \(row indices 17\)"):
        gm.partial_fit(da.from_array(bad, chunks=(50, 3)))
    assert gm.online_state_ is state
    for attr, value in before.items():
        np.testing.assert_array_equal(getattr(gm, attr), value)


def test_later_calls_check_the_features():
    gm = converged_fit("full")
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3 features"):
        gm.partial_fit(X2[:, :2])
    gm.partial_fit(X2[:1])  # a single row is a batch


# ---------------------------------------------------------------------------
# updates from statistics


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_update_without_running_state_is_one_em_iteration(covariance_type):
    gm = converged_fit(covariance_type)
    one_em = quiet(GaussianMixture(3, covariance_type=covariance_type, max_iter=1, **start_of(gm)).fit, X2)
    *_, stats = score_rows(gm, X2, with_stats=True)
    # the running state weighted 0 ...
    forgotten = copy.deepcopy(gm).partial_fit_statistics(stats, half_life=1e-300)
    assert_params_close(forgotten, one_em, 1e-10)
    # ... or none at all (a model from initialize has none)
    start = GaussianMixture(3, covariance_type=covariance_type, **start_of(gm)).initialize(X1)
    assert start.online_state_ is None
    assert_params_close(start.partial_fit_statistics(stats), one_em, 1e-10)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_update_with_the_fits_state_is_one_weighted_em_iteration(covariance_type, lazy):
    gm = converged_fit(covariance_type)
    half_life = 500.0
    lam = 2.0 ** (-X2.shape[0] / half_life)
    weighted = np.r_[np.full(X1.shape[0], lam), np.ones(X2.shape[0])]
    one_em = GaussianMixture(3, covariance_type=covariance_type, max_iter=1, **start_of(gm))
    one_em = quiet(one_em.fit, np.vstack([X1, X2]), sample_weight=weighted)
    *_, stats = score_rows(gm, da.from_array(X2, chunks=(70, 3)) if lazy else X2, with_stats=True)
    if lazy:
        stats = stats.compute()
    gm.partial_fit_statistics(stats, half_life=half_life)
    assert_params_close(gm, one_em, 1e-10)
    assert gm.n_iter_ == 1 and gm.online_state_.n_rows_seen == 900


def test_update_refuses_statistics_from_other_parameters():
    gm = converged_fit("full")
    other = converged_fit("full", X2)
    *_, stats = score_rows(other, X2, with_stats=True)
    with pytest.raises(ValueError, match="not computed under this model's current parameters"):
        gm.partial_fit_statistics(stats)
    *_, diag = score_rows(converged_fit("diag"), X2, with_stats=True)
    with pytest.raises(ValueError, match="covariance_type='diag'"):
        gm.partial_fit_statistics(diag)
    with pytest.raises(TypeError, match="SufficientStatistics"):
        gm.partial_fit_statistics({"nk": 1})
    with pytest.raises(InvalidParameterError, match=re.escape(
        "The 'half_life' parameter of partial_fit_statistics must be a float in the range (0.0, inf) or None. Got -1"
    )):
        gm.partial_fit_statistics(score_rows(gm, X2, with_stats=True)[3], half_life=-1)


# ---------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize("param, value, interval", [
    ("learning_decay", 0.5, Interval(Real, 0.5, 1, closed="right")),
    ("learning_decay", 1.5, Interval(Real, 0.5, 1, closed="right")),
    ("learning_offset", -1.0, Interval(Real, 0, None, closed="left")),
    ("half_life", 0.0, Interval(Real, 0, None, closed="neither")),
])
def test_learning_parameters_validated_with_sklearn_wording(param, value, interval):
    extra = " or None" if param == "half_life" else ""
    message = f"The {param!r} parameter of GaussianMixture must be {interval}{extra}. Got {value!r} instead."
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        GaussianMixture(3, **{param: value}).partial_fit(X1)


def test_learning_parameters_defaults():
    gm = GaussianMixture()
    assert (gm.learning_decay, gm.learning_offset, gm.half_life) == (0.7, 10.0, None)


# ---------------------------------------------------------------------------
# persistence


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_state_survives_save_and_load_bit_for_bit(covariance_type, tmp_path):
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0, half_life=800.0).partial_fit(X1)
    gm.partial_fit(X2)
    back = GaussianMixture.load(gm.save(tmp_path / "m"))
    a, b = gm.online_state_, back.online_state_
    assert (a.n_steps, a.n_rows_seen, a.sum_weights_seen, a.mode) == (b.n_steps, b.n_rows_seen, b.sum_weights_seen, b.mode)
    for name in ("shift", "nk", "sums", "scatter"):
        np.testing.assert_array_equal(getattr(b.stats, name), getattr(a.stats, name), err_msg=name)
    assert (b.stats.loglik, b.stats.n_samples, b.stats.sum_weights) == (a.stats.loglik, a.stats.n_samples, a.stats.sum_weights)
    assert back.half_life == 800.0 and back.learning_decay == 0.7
    gm.partial_fit(X3)
    back.partial_fit(X3)
    for attr, value in params_of(gm).items():
        np.testing.assert_array_equal(getattr(back, attr), value, err_msg=attr)


_CONTINUE = """
import sys, numpy as np
from gmm_engine import GaussianMixture
gm = GaussianMixture.load(sys.argv[1])
gm.partial_fit(np.load(sys.argv[2]))
gm.save(sys.argv[3])
"""


def test_partial_fit_continues_in_another_process(tmp_path):
    gm = converged_fit("full")
    gm.partial_fit(X2)
    path = gm.save(tmp_path / "m")
    np.save(tmp_path / "x3.npy", X3)
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", _CONTINUE, str(path), str(tmp_path / "x3.npy"), str(tmp_path / "m2")],
                   check=True, cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    there = GaussianMixture.load(tmp_path / "m2")
    gm.partial_fit(X3)
    for attr, value in params_of(gm).items():
        np.testing.assert_array_equal(getattr(there, attr), value, err_msg=attr)
    np.testing.assert_array_equal(there.online_state_.stats.scatter, gm.online_state_.stats.scatter)
    assert there.n_iter_ == gm.n_iter_ == 2


def test_models_without_a_state_still_load(tmp_path):
    gm = GaussianMixture(3, random_state=0).initialize(X1)
    path = gm.save(tmp_path / "m")
    doc = json.loads((path / "model.json").read_text())
    assert "online" not in doc and not any(n.startswith("online") for n in doc["arrays"])
    assert GaussianMixture.load(path).online_state_ is None
