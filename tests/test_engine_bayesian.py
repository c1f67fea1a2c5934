"""BayesianGaussianMixture: parity with scikit-learn, API, errors, persistence, out of core.

The oracle is ``sklearn.mixture.BayesianGaussianMixture``.  From the same
initial responsibilities ('random_from_data' draws scikit-learn's rows for
the same seed) both run the same variational iterations, so every fitted
attribute and the lower bound agree up to rounding (asserted to 1e-6
relative; measured ~1e-13) after 25 iterations, for both weight priors,
the four covariance types and NumPy, ragged dask and Zarr input.  Every
random draw here is seeded: the tests are deterministic (no false alarms).
"""

from __future__ import annotations

import json
import re
import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SkBGM
from sklearn.utils.estimator_checks import check_estimator

from conftest import gaussian_clusters, quiet
from gmm_engine import (
    COVARIANCE_TYPES,
    EFFECTIVE_WEIGHT_FLOOR,
    BayesianGaussianMixture,
    ConvergenceWarning,
    GaussianMixture,
    ModelFormatError,
    NotFittedError,
    load_model,
)
from gmm_engine._stats import SufficientStatistics
from gmm_engine._variational import kernel_params, sum_r_log_r
from gmm_engine._fitted import fitted_variational
from gmm_engine.scoring import score_rows

RTOL = 1e-6
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
CENTERS = np.array([[0.0, 0.0, 0.0], [4.0, 3.0, 0.0], [0.0, 3.0, 4.0]])
X = gaussian_clusters(900, CENTERS, (0.45, 0.35, 0.2), seed=1, mixing=0.3)
RAGGED = ((100, 333, 7, 460), (3,))
POSTERIOR = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
             "mean_precision_", "degrees_of_freedom_")


def sk_fit(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        return SkBGM(**kwargs).fit(X)


def assert_close(actual, expected, rtol=RTOL, what=""):
    """Relative agreement, with an absolute floor at rtol times the largest entry."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=rtol * scale,
                               err_msg=what)


def assert_same_fit(ours, sk, rtol=RTOL):
    for attr in POSTERIOR:
        assert np.shape(getattr(ours, attr)) == np.shape(getattr(sk, attr)), attr
        assert_close(getattr(ours, attr), getattr(sk, attr), rtol, attr)
    assert_close(np.asarray(ours.weight_concentration_), np.asarray(sk.weight_concentration_), rtol, "wc")
    # scikit-learn's tied lower bound is a (1,) array
    assert ours.lower_bound_ == pytest.approx(np.asarray(sk.lower_bound_).item(), rel=rtol)
    assert_close(ours.lower_bounds_, np.ravel(sk.lower_bounds_), rtol, "lower_bounds_")
    assert ours.n_iter_ == sk.n_iter_ and ours.converged_ == sk.converged_
    assert_close(ours.mean_prior_, sk.mean_prior_, 1e-12, "mean_prior_")
    assert_close(ours.covariance_prior_, sk.covariance_prior_, 1e-12, "covariance_prior_")


def _input(kind, tmp_path):
    if kind == "numpy":
        return X
    if kind == "dask":
        return da.from_array(X, chunks=RAGGED)
    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, chunks=(128, 3), dtype=X.dtype)
    z[...] = X
    return str(tmp_path / "x.zarr")


# ---------------------------------------------------------------------------
# parity with scikit-learn


@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr"])
@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_parity_after_25_iterations(covariance_type, prior_type, kind, tmp_path):
    kw = dict(n_components=4, covariance_type=covariance_type, weight_concentration_prior_type=prior_type,
              init_params="random_from_data", random_state=3, max_iter=25, tol=0.0)
    sk = sk_fit(**kw)
    with pytest.warns(ConvergenceWarning, match="Best performing initialization did not converge"):
        ours = BayesianGaussianMixture(**kw).fit(_input(kind, tmp_path))
    assert ours.n_iter_ == 25
    assert_same_fit(ours, sk)
    assert_close(ours.score_samples(X), sk.score_samples(X), 1e-9, "score_samples")
    assert_close(ours.predict_proba(X), sk.predict_proba(X), 1e-9, "predict_proba")
    np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
    assert ours.score(X) == pytest.approx(sk.score(X), rel=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_parity_with_given_priors(covariance_type):
    D = X.shape[1]
    cov_prior = {"full": np.diag([1.0, 2.0, 0.5]) + 0.1, "tied": np.diag([1.0, 2.0, 0.5]) + 0.1,
                 "diag": np.array([1.0, 2.0, 0.5]), "spherical": 0.7}[covariance_type]
    kw = dict(n_components=3, covariance_type=covariance_type, init_params="random_from_data", random_state=0,
              weight_concentration_prior=0.5, mean_precision_prior=0.2, mean_prior=np.arange(D) * 0.5,
              degrees_of_freedom_prior=D + 1.5, covariance_prior=cov_prior, max_iter=25, tol=0.0)
    ours = quiet(BayesianGaussianMixture(**kw).fit, X)
    assert_same_fit(ours, sk_fit(**kw))
    assert ours.degrees_of_freedom_prior_ == D + 1.5 and ours.mean_precision_prior_ == 0.2


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_parity_to_convergence_n_init_and_warm_start(covariance_type, prior_type):
    kw = dict(n_components=5, covariance_type=covariance_type, weight_concentration_prior_type=prior_type,
              init_params="random_from_data", random_state=7, n_init=3, max_iter=300)
    ours = quiet(BayesianGaussianMixture(**kw).fit, X)
    sk = sk_fit(**kw)
    assert ours.converged_ and sk.converged_
    assert_same_fit(ours, sk, rtol=1e-6)
    # warm start: continue 5 more iterations from a short fit, compared with the bound it had
    warm = dict(kw, n_init=1, max_iter=5, warm_start=True, tol=0.0)
    ours, sk = BayesianGaussianMixture(**warm), SkBGM(**warm)
    for _ in range(2):
        quiet(ours.fit, X)
        quiet(sk.fit, X)
    assert_same_fit(ours, sk)


def test_max_iter_zero_is_the_start_without_warning():
    kw = dict(n_components=3, init_params="random_from_data", random_state=0, max_iter=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = BayesianGaussianMixture(**kw).fit(X)
    sk = SkBGM(**kw).fit(X)
    assert ours.lower_bound_ == -np.inf and ours.n_iter_ == 0 and ours.lower_bounds_ == []
    assert not ours.converged_
    for attr in POSTERIOR:
        assert_close(getattr(ours, attr), getattr(sk, attr), 1e-9, attr)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_input_fits_as_its_float64_values(covariance_type):
    X32 = X.astype(np.float32)
    kw = dict(n_components=3, covariance_type=covariance_type, init_params="random_from_data", random_state=0,
              max_iter=20, tol=0.0)
    a = quiet(BayesianGaussianMixture(**kw).fit, X32)
    b = quiet(BayesianGaussianMixture(**kw).fit, X32.astype(np.float64))
    for attr in POSTERIOR:
        assert np.asarray(getattr(a, attr)).dtype == np.float64
        assert_close(getattr(a, attr), getattr(b, attr), 1e-10, attr)
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-10)


# ---------------------------------------------------------------------------
# the kernels' statistics give the responsibilities' entropy


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sum_r_log_r_from_statistics_equals_the_direct_sum(covariance_type, weighted):
    est = quiet(BayesianGaussianMixture(n_components=4, covariance_type=covariance_type, max_iter=3,
                                        random_state=0).fit, X)
    vp = fitted_variational(est)
    kp = kernel_params(vp)
    w = np.random.default_rng(0).uniform(0, 3, size=X.shape[0]) if weighted else None
    stats = SufficientStatistics.from_estep(X, kp, weights=w)
    r = est.predict_proba(X)
    with np.errstate(divide="ignore", invalid="ignore"):
        direct = np.nansum(r * np.log(r), axis=1)
    direct = float(direct.sum() if w is None else direct @ w)
    assert sum_r_log_r(stats, kp, vp.gaussian.precisions) == pytest.approx(direct, rel=1e-9, abs=1e-9)


# ---------------------------------------------------------------------------
# sample_weight: counts of repeated rows


def _warm_pair(covariance_type, weights):
    """Two estimators sharing one start (fitted with max_iter=0 on the repeated rows), set to continue."""
    X_rep = np.repeat(X, weights.astype(int), axis=0)
    start = BayesianGaussianMixture(n_components=3, covariance_type=covariance_type, init_params="random_from_data",
                                    random_state=0, max_iter=0).fit(X_rep)
    import copy

    a, b = copy.deepcopy(start), copy.deepcopy(start)
    for est in (a, b):
        est.set_params(warm_start=True, max_iter=15, tol=0.0)
    return X_rep, a, b


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_fit_as_repeated_rows(covariance_type):
    w = np.random.default_rng(2).integers(0, 4, size=X.shape[0]).astype(np.float64)
    X_rep, rep, wtd = _warm_pair(covariance_type, w)
    quiet(rep.fit, X_rep)
    quiet(wtd.fit, da.from_array(X, chunks=RAGGED), sample_weight=da.from_array(w, chunks=250))
    for attr in (*POSTERIOR, "mean_prior_", "covariance_prior_"):
        assert_close(getattr(wtd, attr), getattr(rep, attr), 1e-9, attr)
    assert wtd.lower_bound_ == pytest.approx(rep.lower_bound_, rel=1e-9)


def test_weights_summing_to_one_need_a_covariance_prior():
    w = np.full(X.shape[0], 1.0 / X.shape[0])
    with pytest.raises(ValueError, match="the sample weights sum to 1. Pass covariance_prior"):
        BayesianGaussianMixture(n_components=2).fit(X, sample_weight=w)
    est = quiet(BayesianGaussianMixture(n_components=2, covariance_type="spherical", covariance_prior=1.0).fit,
                X, sample_weight=w)
    assert est.covariance_prior_ == 1.0


def test_bad_weights_refused_with_scikit_learns_words():
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        BayesianGaussianMixture().fit(X, sample_weight=-np.ones(X.shape[0]))


# ---------------------------------------------------------------------------
# the estimator API


@pytest.mark.filterwarnings("ignore::UserWarning:sklearn")
def test_check_estimator_passes():
    results = check_estimator(BayesianGaussianMixture(), on_fail=None)
    assert len(results) > 30
    bad = [(r["check_name"], r["status"], str(r["exception"])[:300]) for r in results
           if r["status"] != "passed"
           and not (r["check_name"] == "check_array_api_input" and r["status"] == "skipped")]
    assert bad == []


def test_parameters_are_scikit_learns_plus_persist():
    ours, sk = BayesianGaussianMixture().get_params(), SkBGM().get_params()
    assert set(ours) == set(sk) | {"persist"}
    assert {k: ours[k] for k in sk} == sk
    est = BayesianGaussianMixture(n_components=3, covariance_prior=2.0, random_state=1)
    assert repr(est) == "BayesianGaussianMixture(covariance_prior=2.0, n_components=3, random_state=1)"
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(TypeError):
        BayesianGaussianMixture(3)  # keyword-only, as scikit-learn's


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fitted_attributes(covariance_type):
    est = quiet(BayesianGaussianMixture(n_components=3, covariance_type=covariance_type, random_state=0).fit, X)
    sk = sk_fit(n_components=3, covariance_type=covariance_type, random_state=0)
    for attr in (*POSTERIOR, "mean_prior_", "covariance_prior_"):
        assert np.shape(getattr(est, attr)) == np.shape(getattr(sk, attr)), attr
    assert isinstance(est.weight_concentration_, tuple) and len(est.weight_concentration_) == 2
    assert isinstance(est.lower_bound_, float) and est.lower_bounds_[-1] == est.lower_bound_
    assert est.n_features_in_ == 3 and est.n_passes_ >= est.n_iter_ + 2
    assert est.weights_.sum() == pytest.approx(1.0)
    assert not hasattr(est, "bic") and not hasattr(est, "partial_fit")  # as scikit-learn's


def test_dask_in_lazy_out_and_feature_names():
    est = quiet(BayesianGaussianMixture(n_components=3, random_state=0).fit,
                pd.DataFrame(X, columns=["a", "b", "c"]))
    assert list(est.feature_names_in_) == ["a", "b", "c"]
    Xd = da.from_array(X, chunks=RAGGED)
    with pytest.warns(UserWarning, match="X does not have valid feature names, but BayesianGaussianMixture"):
        lazy = est.predict_proba(Xd)
    assert isinstance(lazy, da.Array) and lazy.chunks == (RAGGED[0], (3,))
    np.testing.assert_allclose(lazy.compute(), quiet(est.predict_proba, X), rtol=1e-12)


def test_score_rows_scores_with_the_variational_constants():
    est = quiet(BayesianGaussianMixture(n_components=3, random_state=0).fit, X)
    ll, comp, resp = score_rows(est, X)
    np.testing.assert_allclose(ll, est.score_samples(X), rtol=1e-12)
    np.testing.assert_array_equal(comp, est.predict(X))
    np.testing.assert_allclose(resp, est.predict_proba(X).max(axis=1), rtol=1e-10)


def test_sample_is_scikit_learns_draw():
    kw = dict(n_components=3, init_params="random_from_data", random_state=4, max_iter=10)
    ours, sk = quiet(BayesianGaussianMixture(**kw).fit, X), sk_fit(**kw)
    (a, ya), (b, yb) = ours.sample(50), sk.sample(50)
    np.testing.assert_array_equal(ya, yb)
    assert_close(a, b, 1e-6)


def test_out_of_core_on_a_distributed_cluster_equals_in_memory(dask_cluster):
    from distributed import Client

    kw = dict(n_components=3, init_params="random_from_data", random_state=0, max_iter=15, tol=0.0)
    local = quiet(BayesianGaussianMixture(**kw).fit, X)
    with Client(dask_cluster):
        remote = quiet(BayesianGaussianMixture(**kw).fit, da.from_array(X, chunks=RAGGED))
    for attr in POSTERIOR:
        assert_close(getattr(remote, attr), getattr(local, attr), 1e-10, attr)


# ---------------------------------------------------------------------------
# errors and warnings, in scikit-learn's words


def _sk_error(kwargs, Xin=X):
    try:
        quiet(SkBGM(**kwargs).fit, Xin)
    except Exception as exc:  # noqa: BLE001 - the oracle
        return exc
    raise AssertionError(f"scikit-learn accepted {kwargs}")


@pytest.mark.parametrize("kwargs", [
    dict(weight_concentration_prior=0),
    dict(mean_precision_prior=-1.0), dict(mean_prior="abc"), dict(mean_prior=[1.0, 2.0]),
    dict(mean_prior=[np.nan, 1.0, 2.0]), dict(degrees_of_freedom_prior=1.5), dict(degrees_of_freedom_prior=0),
    dict(covariance_prior="abc"), dict(covariance_prior=-1.0), dict(covariance_prior=np.eye(2)),
    dict(covariance_prior=-np.eye(3)), dict(covariance_prior=[[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
    dict(covariance_type="diag", covariance_prior=[1.0, 2.0]), dict(covariance_type="diag", covariance_prior=[1, -2, 1]),
    dict(covariance_type="tied", covariance_prior=np.ones((3, 3))), dict(n_components=1000), dict(n_components=0),
    dict(reg_covar=-1.0), dict(max_iter=-1),
])
def test_errors_match_scikit_learn(kwargs):
    expected = _sk_error(kwargs)
    # scikit-learn's InvalidParameterError is its own class; both are ValueErrors
    with pytest.raises(ValueError if isinstance(expected, ValueError) else type(expected),
                       match=re.escape(str(expected))):
        BayesianGaussianMixture(**kwargs).fit(X)


def test_unknown_weight_prior_type_refused():
    # scikit-learn prints the options as a set, in no fixed order; they are sorted here
    with pytest.raises(ValueError, match=re.escape(
            "The 'weight_concentration_prior_type' parameter of BayesianGaussianMixture must be a str among "
            "{'dirichlet_distribution', 'dirichlet_process'}. Got 'stick' instead.")):
        BayesianGaussianMixture(weight_concentration_prior_type="stick").fit(X)


def test_one_row_and_scoring_errors_match_scikit_learn():
    expected = _sk_error({}, X[:1])
    with pytest.raises(ValueError, match=re.escape(str(expected))):
        BayesianGaussianMixture().fit(X[:1])
    est = quiet(BayesianGaussianMixture(n_components=2).fit, X)
    with pytest.raises(ValueError, match=re.escape("X has 2 features, but BayesianGaussianMixture is expecting 3")):
        est.predict(X[:, :2])
    with pytest.raises(NotFittedError, match="This BayesianGaussianMixture instance is not fitted yet"):
        BayesianGaussianMixture().predict(X)
    with pytest.raises(ValueError, match="BayesianGaussianMixture does not accept missing or infinite values"):
        BayesianGaussianMixture().fit(np.where(np.arange(X.size).reshape(X.shape) == 4, np.nan, X))


def test_a_scalar_covariance_prior_needs_the_types_shape():
    # scikit-learn fails inside check_array with a TypeError; the shape is named here
    with pytest.raises(ValueError, match=re.escape("'full covariance_prior' should have the shape of (3, 3), but got ()")):
        BayesianGaussianMixture(covariance_prior=2.0).fit(X)
    with pytest.raises(ValueError, match=re.escape("'spherical covariance_prior' should have the shape of (), but got (3,)")):
        BayesianGaussianMixture(covariance_type="spherical", covariance_prior=[1.0, 1.0, 1.0]).fit(X)


def test_convergence_warning_is_scikit_learns():
    with pytest.warns(SkConvergenceWarning, match="Best performing initialization did not converge"):
        BayesianGaussianMixture(n_components=3, max_iter=2, random_state=0).fit(X)


def test_warm_start_refuses_a_mismatch():
    est = quiet(BayesianGaussianMixture(n_components=3, random_state=0, warm_start=True).fit, X)
    est.set_params(weight_concentration_prior_type="dirichlet_distribution")
    with pytest.raises(ValueError, match="warm_start=True continues the previous fit.*set warm_start=False"):
        est.fit(X)


# ---------------------------------------------------------------------------
# persistence


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_save_load_round_trip(covariance_type, prior_type, tmp_path):
    est = quiet(BayesianGaussianMixture(n_components=3, covariance_type=covariance_type, random_state=0,
                                        weight_concentration_prior_type=prior_type, mean_prior=[0.0, 1.0, 2.0]).fit, X)
    path = est.save(tmp_path / "m", metadata={"threshold": -7.5})
    assert sorted(p.suffix for p in path.iterdir()) == [".json"] + [".npy"] * 10
    for f in path.glob("*.npy"):
        np.load(f, allow_pickle=False)  # plain arrays, nothing pickled
    back = BayesianGaussianMixture.load(path)
    model, meta = load_model(path)
    assert type(model) is BayesianGaussianMixture and meta == {"threshold": -7.5}
    for loaded in (back, model):
        assert loaded.get_params().keys() == est.get_params().keys()
        np.testing.assert_array_equal(loaded.mean_prior, est.mean_prior)
        for attr in (*POSTERIOR, "mean_prior_", "covariance_prior_", "lower_bounds_", "n_iter_", "converged_"):
            np.testing.assert_array_equal(getattr(loaded, attr), getattr(est, attr), err_msg=attr)
        np.testing.assert_array_equal(np.asarray(loaded.weight_concentration_), np.asarray(est.weight_concentration_))
        assert type(loaded.weight_concentration_) is type(est.weight_concentration_)
        np.testing.assert_array_equal(loaded.score_samples(X), est.score_samples(X))


def test_each_loader_refuses_the_other_estimator(tmp_path):
    bgm = quiet(BayesianGaussianMixture(n_components=2, random_state=0).fit, X).save(tmp_path / "b")
    gmm = GaussianMixture(2, random_state=0).fit(X).save(tmp_path / "g")
    with pytest.raises(ModelFormatError, match="it holds a BayesianGaussianMixture, not a GaussianMixture. "
                                               "To fix: load it with BayesianGaussianMixture.load"):
        GaussianMixture.load(bgm)
    with pytest.raises(ModelFormatError, match="it holds a GaussianMixture, not a BayesianGaussianMixture"):
        BayesianGaussianMixture.load(gmm)
    assert type(load_model(gmm)[0]) is GaussianMixture
    assert type(load_model(bgm)[0]) is BayesianGaussianMixture


def test_scalar_and_array_priors_round_trip(tmp_path):
    est = quiet(BayesianGaussianMixture(n_components=2, covariance_type="spherical", covariance_prior=0.5,
                                        degrees_of_freedom_prior=4.0, random_state=0).fit, X)
    back = BayesianGaussianMixture.load(est.save(tmp_path / "s"))
    assert back.covariance_prior == 0.5 and back.covariance_prior_ == 0.5 and back.degrees_of_freedom_prior == 4.0
    est = quiet(BayesianGaussianMixture(n_components=2, covariance_prior=np.eye(3), random_state=0).fit, X)
    back = BayesianGaussianMixture.load(est.save(tmp_path / "f"))
    np.testing.assert_array_equal(back.covariance_prior, np.eye(3))


def _edit(path, fn):
    from gmm_engine._persist import _doc_checksum

    doc = json.loads((path / "model.json").read_text())
    fn(doc)
    doc["checksum"] = _doc_checksum(doc)
    (path / "model.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("edit, pattern", [
    (lambda d: d.pop("variational"), "lacks the 'variational' section"),
    (lambda d: d["variational"].__setitem__("weight_concentration_prior_type", "x"), "unknown weight_concentration"),
    (lambda d: d["variational"].__setitem__("mean_precision_prior_", -1), "mean_precision_prior_ must be a positive"),
    (lambda d: d["arrays"].pop("degrees_of_freedom_"), "has no entry for degrees_of_freedom_"),
    (lambda d: d["params"].__setitem__("covariance_prior", "x"), "the parameter covariance_prior is 'x'"),
])
def test_tampered_documents_refused(tmp_path, edit, pattern):
    path = quiet(BayesianGaussianMixture(n_components=2, random_state=0).fit, X).save(tmp_path / "m")
    _edit(path, edit)
    with pytest.raises(ModelFormatError, match=pattern):
        BayesianGaussianMixture.load(path)


def test_tampered_array_refused(tmp_path):
    path = quiet(BayesianGaussianMixture(n_components=2, random_state=0).fit, X).save(tmp_path / "m")
    np.save(path / "mean_precision.npy", np.ones(2))
    with pytest.raises(ModelFormatError, match="mean_precision.npy does not match its sha256"):
        load_model(path)


# ---------------------------------------------------------------------------
# the effective number of components (``gmm select`` method: variational)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dirichlet_process_with_generous_k_finds_the_demos_4_components(seed):
    """The demo's data (pipeline.demo_data: 4 well-separated full components in 6-D, 0.5% anomalies).

    Deterministic for each seed (no false-alarm rate).  Variational EM
    prunes the unused components slowly: these fits converge after
    180-370 iterations, so max_iter is 500.
    """
    from pipeline.demo_data import make_true_mixture, sample_rows

    rng = np.random.default_rng(seed)
    truth = make_true_mixture(4, 6, "full", rng)
    rows, _, _ = sample_rows(truth, 20_000, 0.005, -30.0, rng)
    est = quiet(BayesianGaussianMixture(n_components=12, max_iter=500, random_state=0).fit, rows)
    assert est.converged_
    assert est.effective_n_components() == 4
    # the unused components hold almost nothing: the anomalies' broad one stays below the floor
    assert np.sort(est.weights_)[-5] < EFFECTIVE_WEIGHT_FLOOR
    np.testing.assert_allclose(np.sort(est.weights_)[-4:], np.sort(truth.weights), atol=0.02)


@pytest.mark.parametrize("seed", [3, 4])
def test_at_the_demos_select_sample_size_fit_a_sample_then_warm_start(seed):
    """200,000 demo rows: the recipe for ``gmm select`` (method: variational).

    A K=12 fit from the k-means start on all 200,000 rows splits true
    components into pairs that variational EM does not merge (a local
    optimum of the bound, scikit-learn's too: measured 6-8 effective
    components after 600 iterations, bounds ~800 below the 4-component
    fit's).  Fitted first on a uniform sample of 20,000 rows and then
    continued on all rows (``warm_start``), it finds the 4 (6 of 6 seeds
    measured, ~1 s).  Deterministic for each seed.
    """
    from pipeline.demo_data import make_true_mixture, sample_rows

    rng = np.random.default_rng(seed)
    truth = make_true_mixture(4, 6, "full", rng)
    rows, _, _ = sample_rows(truth, 200_000, 0.005, -30.0, rng)
    sample = rows[np.random.default_rng(1).choice(len(rows), 20_000, replace=False)]
    est = quiet(BayesianGaussianMixture(n_components=12, max_iter=500, random_state=0).fit, sample)
    assert est.effective_n_components() == 4
    quiet(est.set_params(warm_start=True).fit, rows)
    assert est.converged_ and est.effective_n_components() == 4


def test_effective_n_components_floor():
    est = quiet(BayesianGaussianMixture(n_components=3, random_state=0).fit, X)
    assert est.effective_n_components(floor=0.0) == 3
    assert est.effective_n_components(floor=0.99) == 0
    with pytest.raises(ValueError, match=re.escape("floor must be a weight in [0, 1), got 1.5")):
        est.effective_n_components(floor=1.5)
    with pytest.raises(NotFittedError):
        BayesianGaussianMixture().effective_n_components()
