"""Error messages and warnings of ``gmm_engine.GaussianMixture``.

Where scikit-learn has a message for the same mistake, the oracle is
scikit-learn itself: the same call is made on
``sklearn.mixture.GaussianMixture`` and our text must equal (or contain)
its text.  Where we know more (which rows hold NaN), we check that we say so.
"""

from __future__ import annotations

import re
import warnings

import dask.array as da
import numpy as np
import pytest
import sklearn.exceptions
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from conftest import assert_same_params, quiet, sklearn_error, three_clusters
from gmm_engine import (
    COVARIANCE_TYPES,
    ComponentCollapseError,
    ConvergenceWarning,
    DataValidationError,
    GaussianMixture,
    InvalidParameterError,
    NotFittedError,
)


def _data(n=120, D=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D))
    X[: n // 2] += 4.0
    return X


#: three separated clusters, 300 rows in 3-D
CLUSTERS = three_clusters()


# ---------------------------------------------------------------------------
# NaN and infinity: how many rows, which rows, what to do


def _with_bad_values():
    X = _data()
    X[5, 1] = np.nan
    X[17, 0] = np.nan
    X[17, 2] = np.inf  # a row with both counts as a NaN row
    X[40, 3] = -np.inf
    return X


def _as_dask(X, chunks=13):
    return da.from_array(X, chunks=(chunks, X.shape[1]))


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_fit_nan_and_inf_message_names_rows(kind):
    X = _with_bad_values()
    Xin = X if kind == "numpy" else _as_dask(X)
    with pytest.raises(DataValidationError) as info:
        GaussianMixture(2).fit(Xin)
    msg = str(info.value)
    assert msg.startswith("Input X contains NaN and infinity")
    assert "in 3 of 120 rows (row indices 5, 17, 40)" in msg
    assert "impute or remove these rows" in msg
    # a ValueError like scikit-learn's, which says "Input X contains NaN."
    assert isinstance(info.value, ValueError)
    sk = sklearn_error({"n_components": 2}, X)
    assert str(sk).startswith("Input X contains NaN")


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_fit_only_infinity_says_infinity_not_nan(kind):
    X = _data()
    X[3, 2] = np.inf
    X[99, 0] = -np.inf
    Xin = X if kind == "numpy" else _as_dask(X, chunks=7)
    with pytest.raises(
        DataValidationError,
        match=re.escape("Input X contains infinity or a value too large for dtype('float64') "
                        "in 2 of 120 rows (row indices 3, 99)"),
    ) as info:
        GaussianMixture(2).fit(Xin)
    assert "NaN" not in str(info.value)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_fit_infinity_in_float32_names_float32(kind):
    X = _data().astype(np.float32)
    X[8, 1] = np.inf
    Xin = X if kind == "numpy" else _as_dask(X, chunks=50)
    sk = sklearn_error({"n_components": 2}, X)
    assert "dtype('float32')" in str(sk)
    with pytest.raises(
        DataValidationError,
        match=re.escape("infinity or a value too large for dtype('float32') in 1 of 120 rows (row indices 8)"),
    ):
        GaussianMixture(2).fit(Xin)


def test_fit_many_nan_rows_lists_first_ten_and_count():
    X = _data(n=200)
    bad = np.arange(3, 200, 9)  # 22 rows
    X[bad, 0] = np.nan
    shown = ", ".join(str(i) for i in bad[:10])
    with pytest.raises(DataValidationError, match=re.escape(f"in 22 of 200 rows (row indices {shown}, ...)")):
        GaussianMixture(2).fit(_as_dask(X, chunks=16))
    with pytest.raises(DataValidationError, match=re.escape(f"in 22 of 200 rows (row indices {shown}, ...)")):
        GaussianMixture(2).fit(X)


def test_predict_nan_numpy_names_rows():
    gm = GaussianMixture(2, random_state=0).fit(_data())
    X = _data(seed=1)
    X[[7, 11], 0] = np.nan
    for method in (gm.predict, gm.predict_proba, gm.score_samples, gm.score):
        with pytest.raises(DataValidationError, match=re.escape("Input X contains NaN in 2 of 120 rows (row indices 7, 11)")):
            method(X)


def test_predict_nan_dask_names_global_rows_of_the_chunk():
    gm = GaussianMixture(2, random_state=0).fit(_data())
    X = _data(seed=1)
    X[40, 0] = np.nan
    X[41, 2] = np.inf
    lazy = gm.predict(_as_dask(X, chunks=39))  # rows 39..77 form the second chunk
    with pytest.raises(DataValidationError) as info:
        lazy.compute()
    msg = str(info.value)
    assert msg.startswith("Input X contains NaN and infinity")
    # the message is readable English with the global row positions
    assert "in 2 of 39 rows of the chunk at rows 39 to 77 (row indices 40, 41)" in msg, msg
    assert "impute or remove these rows" in msg


# ---------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score"])
def test_wrong_number_of_features_at_predict(kind, method):
    gm = GaussianMixture(2, random_state=0).fit(_data(D=4))
    X3 = _data(D=3)
    sk = SkGaussianMixture(2, random_state=0).fit(_data(D=4))
    expected = str(_sk_method_error(sk, method, X3))
    assert expected == "X has 3 features, but GaussianMixture is expecting 4 features as input."
    Xin = X3 if kind == "numpy" else _as_dask(X3)
    with pytest.raises(ValueError, match=re.escape(expected)):
        getattr(gm, method)(Xin)


def _sk_method_error(est, method, X):
    try:
        getattr(est, method)(X)
    except ValueError as exc:
        return exc
    raise AssertionError("scikit-learn accepted the input")


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_n_components_greater_than_n_samples(kind):
    X = _data(n=4)
    expected = str(sklearn_error({"n_components": 5}, X))
    assert expected.startswith("Expected n_samples >= n_components")
    with pytest.raises(ValueError, match=re.escape(expected)):
        GaussianMixture(5).fit(X if kind == "numpy" else _as_dask(X, chunks=2))


@pytest.mark.parametrize(
    "X",
    [
        np.zeros((1, 3)),  # one sample
        np.zeros((5, 0)),  # no features
        np.zeros(5),  # 1-D
        np.zeros((3, 2, 2)),  # 3-D
    ],
    ids=["one-sample", "no-features", "1d", "3d"],
)
def test_bad_shapes_match_sklearn(X):
    expected = str(sklearn_error({"n_components": 1}, X))
    with pytest.raises(ValueError) as info:
        GaussianMixture(1).fit(X)
    # scikit-learn prints the array; we print it too but check the sentence
    assert str(info.value).split("\n")[0] == expected.split("\n")[0]


# ---------------------------------------------------------------------------
# constructor parameters: scikit-learn's InvalidParameterError wording


@pytest.mark.parametrize(
    "param, value",
    [
        ("n_components", 0),
        ("n_components", 2.5),
        ("covariance_type", "foo"),
        ("tol", -1.0),
        ("tol", "a"),
        ("reg_covar", -1e-3),
        ("max_iter", -1),
        ("max_iter", 1.0),
        ("n_init", 0),
        ("init_params", "kmeans++"),
        ("random_state", "seed"),
        ("random_state", -1),
        ("warm_start", 1),
        ("verbose", -1),
        ("verbose_interval", 0),
    ],
)
def test_invalid_parameters_have_sklearn_wording(param, value):
    X = _data()
    expected = sklearn_error({param: value}, X)
    assert type(expected).__name__ == "InvalidParameterError"
    with pytest.raises(InvalidParameterError) as info:
        GaussianMixture(**{param: value}).fit(X)
    # scikit-learn lists string options in set order, which depends on the
    # hash seed; we list them sorted.  Compare the sets, and the rest exactly.
    assert _normalise_options(str(info.value)) == _normalise_options(str(expected))
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def _normalise_options(msg):
    return re.sub(
        r"among \{([^}]*)\}",
        lambda m: "among {" + ", ".join(sorted(m.group(1).split(", "))) + "}",
        msg,
    )


def test_invalid_n_components_exact_text():
    with pytest.raises(
        InvalidParameterError,
        match=re.escape(
            "The 'n_components' parameter of GaussianMixture must be an int in the range "
            "[1, inf). Got 0 instead."
        ),
    ):
        GaussianMixture(n_components=0).fit(_data())


def test_invalid_persist_parameter():
    with pytest.raises(InvalidParameterError, match="The 'persist' parameter of GaussianMixture must be"):
        GaussianMixture(2, persist="yes").fit(_data())


# ---------------------------------------------------------------------------
# parameters and input scikit-learn refuses (or accepts) in its own words:
# NaN and infinities are not in [0.0, inf); strings, scalars and bools


@pytest.mark.parametrize("param", ["tol", "reg_covar"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float32("nan")])
def test_nan_and_inf_parameters_refused_with_sklearn_text(param, value):
    expected = sklearn_error({param: value}, CLUSTERS)
    assert type(expected).__name__ == "InvalidParameterError"
    with pytest.raises(InvalidParameterError, match=f"^{re.escape(str(expected))}$"):
        GaussianMixture(**{param: value}).fit(CLUSTERS)


@pytest.mark.parametrize(
    "param, value",
    [("means_init", "abc"), ("means_init", b"abc"), ("weights_init", "ab"),
     ("precisions_init", "x"), ("weights_init", 3), ("means_init", np.float64(2.0))],
)
def test_strings_and_scalars_are_not_array_like(param, value):
    expected = sklearn_error({"n_components": 2, param: value}, CLUSTERS)
    with pytest.raises(InvalidParameterError, match=f"^{re.escape(str(expected))}$"):
        GaussianMixture(2, **{param: value}).fit(CLUSTERS)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_iter": False}, {"n_init": True}, {"tol": True}, {"verbose_interval": True},
     {"reg_covar": False, "n_components": 1, "init_params": "kmeans"}, {"random_state": True}],
)
def test_bools_accepted_for_numbers_like_sklearn(kwargs):
    params = {"n_components": 2, "init_params": "random_from_data", "random_state": 0, **kwargs}
    sk = quiet(SkGaussianMixture(**params).fit, CLUSTERS)
    ours = quiet(GaussianMixture(**params).fit, CLUSTERS)
    assert_same_params(ours, sk, rtol=1e-7, atol=1e-9)
    assert ours.n_iter_ == sk.n_iter_


@pytest.mark.parametrize("param", ["max_iter", "n_init"])
def test_numpy_bool_is_not_an_int_like_sklearn(param):
    expected = sklearn_error({param: np.True_}, CLUSTERS)
    with pytest.raises(InvalidParameterError, match=f"^{re.escape(str(expected))}$"):
        GaussianMixture(**{param: np.True_}).fit(CLUSTERS)


def test_bool_n_components_refused_as_type_error():
    # scikit-learn lets n_components=True through its checks and then fails
    # with a bare TypeError; ours says which parameter (and is a TypeError too)
    assert isinstance(sklearn_error({"n_components": True}, CLUSTERS), TypeError)
    with pytest.raises(TypeError, match="The 'n_components' parameter of GaussianMixture must be an int"):
        GaussianMixture(n_components=True).fit(CLUSTERS)


@pytest.mark.parametrize("scalar", [3.0, np.float64(3.0), np.array(3.0), 7])
def test_scalar_input_uses_sklearn_scalar_wording(scalar):
    expected = str(sklearn_error({}, scalar))
    assert "got scalar array" in expected
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        GaussianMixture().fit(scalar)
    gm = GaussianMixture(random_state=0).fit(CLUSTERS[:, :1])
    with pytest.raises(ValueError, match=re.escape("Expected 2D array, got scalar array instead")):
        gm.predict(scalar)


# ---------------------------------------------------------------------------
# user initial parameters: scikit-learn's messages


def _init_cases():
    K, D = 2, 4
    eye = np.eye(D)
    return [
        ("full", {"weights_init": [0.5, 0.3]}),
        ("full", {"weights_init": [0.2, 0.3, 0.5]}),
        ("full", {"weights_init": [-0.5, 1.5]}),
        ("full", {"means_init": np.zeros((K, D - 1))}),
        ("full", {"means_init": np.zeros((K + 1, D))}),
        ("full", {"precisions_init": np.stack([eye] * (K + 1))}),
        ("full", {"precisions_init": np.stack([eye, -eye])}),
        ("full", {"precisions_init": np.stack([eye, eye + np.triu(np.ones((D, D)), 1)])}),
        ("tied", {"precisions_init": np.ones((D, D))}),
        ("diag", {"precisions_init": np.zeros((K, D))}),
        ("diag", {"precisions_init": np.ones((K, D + 1))}),
        ("spherical", {"precisions_init": -np.ones(K)}),
        ("spherical", {"precisions_init": np.ones((K, 1))}),
        # scikit-learn's check_array on the initial parameters
        ("full", {"weights_init": [np.nan, 0.5]}),
        ("full", {"weights_init": []}),
        ("full", {"means_init": np.full((K, D), np.nan)}),
        ("full", {"means_init": np.zeros((K, D, 1))}),
        ("full", {"means_init": np.zeros((K, 0))}),
        ("full", {"precisions_init": np.stack([eye, eye * np.nan])}),
        ("diag", {"precisions_init": np.full((K, D), np.inf)}),
        ("tied", {"precisions_init": np.stack([eye] * K)}),
        ("spherical", {"precisions_init": np.ones((K, 1, 1))}),
        ("full", {"weights_init": ["a", "b"]}),
    ]


@pytest.mark.parametrize("covariance_type, kwargs", _init_cases())
def test_bad_initial_parameters_have_sklearn_messages(covariance_type, kwargs):
    X = _data()
    expected = sklearn_error({"n_components": 2, "covariance_type": covariance_type, **kwargs}, X)
    with pytest.raises(ValueError, match=f"^{re.escape(str(expected))}$"):
        GaussianMixture(2, covariance_type=covariance_type, **kwargs).fit(X)


def test_float32_weights_use_float32_tolerance():
    # scikit-learn accepts float32 weights summing to 1 within 1e-6
    w = np.array([0.5, 0.5], dtype=np.float32) + np.float32(3e-7)
    X = _data()
    sk = SkGaussianMixture(2, weights_init=w, random_state=0).fit(X)
    ours = GaussianMixture(2, weights_init=w, random_state=0).fit(X)
    assert ours.weights_.dtype == np.float64
    assert np.isfinite(ours.lower_bound_) and np.isfinite(sk.lower_bound_)
    with pytest.raises(ValueError, match="should be normalized"):
        GaussianMixture(2, weights_init=w.astype(np.float64)).fit(X)


def test_bad_weights_message_text():
    with pytest.raises(
        ValueError,
        match=re.escape("The parameter 'weights' should be normalized, but got sum(weights) = 0.80000"),
    ):
        GaussianMixture(2, weights_init=[0.5, 0.3]).fit(_data())
    with pytest.raises(
        ValueError,
        match=re.escape("The parameter 'means' should have the shape of (2, 4), but got (2, 3)"),
    ):
        GaussianMixture(2, means_init=np.zeros((2, 3))).fit(_data())
    with pytest.raises(ValueError, match=re.escape("'full precision' should be symmetric, positive-definite")):
        GaussianMixture(2, precisions_init=np.zeros((2, 4, 4))).fit(_data())


def test_bad_initial_parameters_are_checked_before_reading_data():
    # validation of user parameters must not need a pass over (possibly huge) data
    X = _as_dask(_with_bad_values())
    with pytest.raises(ValueError, match="The parameter 'means' should have the shape"):
        GaussianMixture(2, means_init=np.zeros((2, 3))).fit(X)


# ---------------------------------------------------------------------------
# collapse


def _duplicates():
    rng = np.random.default_rng(3)
    return np.repeat(rng.normal(size=(3, 3)) * 5, 20, axis=0)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_collapsed_component_names_reg_covar(covariance_type, kind):
    X = _duplicates()
    kwargs = {"n_components": 3, "covariance_type": covariance_type, "reg_covar": 0.0, "random_state": 0}
    sk = sklearn_error(kwargs, X)
    assert "reg_covar" in str(sk)
    Xin = X if kind == "numpy" else _as_dask(X, chunks=11)
    with pytest.raises(ComponentCollapseError, match=re.escape(str(sk))) as info:
        GaussianMixture(**kwargs).fit(Xin)
    assert isinstance(info.value, ValueError)
    assert "reg_covar" in str(info.value)
    # and which covariance failed
    detail = "tied covariance" if covariance_type == "tied" else "Components whose covariance"
    assert detail in str(info.value)


def test_collapse_then_refit_with_warm_start_starts_afresh():
    # a failed fit must not leave a half-fitted estimator that warm_start resumes from
    X = _duplicates()
    gm = GaussianMixture(3, reg_covar=0.0, warm_start=True, random_state=0)
    with pytest.raises(ComponentCollapseError, match="increase reg_covar"):
        gm.fit(X)
    gm.set_params(reg_covar=1e-3)
    gm.fit(X)
    assert gm.converged_
    assert np.isfinite(gm.lower_bound_)


# ---------------------------------------------------------------------------
# not fitted, convergence


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score", "bic", "aic"])
def test_not_fitted(method):
    gm = GaussianMixture(2)
    msg = (
        "This GaussianMixture instance is not fitted yet. Call 'fit' with appropriate "
        "arguments before using this estimator."
    )
    with pytest.raises(NotFittedError, match=re.escape(msg)) as info:
        getattr(gm, method)(_data())
    assert isinstance(info.value, sklearn.exceptions.NotFittedError)


@pytest.mark.parametrize("call", ["sample", "save"])
def test_not_fitted_sample_and_save(call, tmp_path):
    gm = GaussianMixture(2)
    with pytest.raises(sklearn.exceptions.NotFittedError, match="is not fitted yet"):
        if call == "sample":
            gm.sample(3)
        else:
            gm.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_convergence_warning_when_max_iter_too_small():
    X = _data()
    with pytest.warns(ConvergenceWarning, match="Best performing initialization did not converge") as rec:
        gm = GaussianMixture(2, max_iter=1, random_state=0).fit(X)
    assert not gm.converged_
    assert any(issubclass(w.category, sklearn.exceptions.ConvergenceWarning) for w in rec)
    # and none when it converges
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert GaussianMixture(2, max_iter=200, random_state=0).fit(X).converged_


def test_no_convergence_warning_for_max_iter_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm = GaussianMixture(2, max_iter=0, random_state=0).fit(_data())
    assert gm.n_iter_ == 0
    assert gm.lower_bound_ == -np.inf


def test_sample_invalid_n_samples():
    gm = GaussianMixture(2, random_state=0).fit(_data())
    with pytest.raises(ValueError, match=re.escape("Invalid value for 'n_samples': 0 . The sampling requires at least one sample.")):
        gm.sample(0)


def test_set_params_unknown_parameter():
    with pytest.raises(ValueError, match="Invalid parameter 'n_component' for estimator"):
        GaussianMixture().set_params(n_component=3)


def test_dask_unknown_chunk_sizes_message():
    X = _as_dask(_data())
    Xu = X[X[:, 0] > -100]  # boolean mask: unknown chunk sizes
    with pytest.raises(ValueError, match=re.escape("call X.compute_chunk_sizes()")):
        GaussianMixture(2).fit(Xu)


def test_sparse_and_complex_input_rejected():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is required"):
        GaussianMixture(2).fit(scipy_sparse.csr_matrix(_data()))
    with pytest.raises(ValueError, match="Complex data not supported"):
        GaussianMixture(2).fit(_data() + 1j)
    with pytest.raises(ValueError, match="Complex data not supported"):
        GaussianMixture(2).fit(_as_dask(_data() + 1j))


def test_missing_zarr_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="No Zarr array at .*: check the path"):
        GaussianMixture(2).fit(str(tmp_path / "nope.zarr"))


# ---------------------------------------------------------------------------
# fitted state stays consistent (the kernels trust parameter shapes)


@pytest.mark.parametrize(
    "change, X_new",
    [
        ({}, _data(D=3)),
        ({}, _data(D=8)),
        ({"n_components": 3}, _data()),
        ({"covariance_type": "diag"}, _data()),
    ],
    ids=["fewer-features", "more-features", "n_components", "covariance_type"],
)
def test_warm_start_refuses_mismatched_parameters(change, X_new):
    gm = GaussianMixture(2, warm_start=True, random_state=0).fit(_data())
    means = gm.means_.copy()
    gm.set_params(**change)
    with pytest.raises(ValueError, match=re.escape("warm_start=True continues the previous fit, which has 2 components, 4 features")) as info:
        gm.fit(X_new)
    assert "set warm_start=False to start afresh" in str(info.value)
    np.testing.assert_array_equal(gm.means_, means)
    assert gm.n_features_in_ == 4
    # and starting afresh works
    gm.set_params(warm_start=False).fit(X_new)
    assert gm.n_features_in_ == X_new.shape[1]


@pytest.mark.parametrize(
    "kwargs, X_new, error",
    [
        ({"n_components": 5}, _data(n=4, D=3), "Expected n_samples >= n_components"),
        ({"means_init": np.zeros((2, 2))}, _data(D=3), "The parameter 'means' should have the shape"),
        ({"reg_covar": 0.0, "random_state": 0}, np.repeat(np.eye(3), 10, axis=0), "ill-defined empirical covariance"),
    ],
    ids=["too-few-samples", "bad-means", "collapse"],
)
def test_failed_refit_keeps_previous_fit_consistent(kwargs, X_new, error):
    import pandas as pd

    X4 = pd.DataFrame(_data(), columns=list("abcd"))
    gm = GaussianMixture(2, random_state=0).fit(X4)
    before = gm.predict(X4)
    gm.set_params(**kwargs)
    with pytest.raises(ValueError, match=error):
        gm.fit(X_new)
    # still the 4-feature model, with its names: no out-of-bounds scoring
    assert gm.n_features_in_ == 4 and list(gm.feature_names_in_) == list("abcd")
    np.testing.assert_array_equal(gm.predict(X4), before)
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 4 features"):
        gm.predict(X_new[:, :3] if isinstance(X_new, np.ndarray) else X_new)


def test_predict_refuses_attributes_that_disagree_with_parameters():
    gm = GaussianMixture(2, random_state=0).fit(_data())
    gm.n_features_in_ = 3  # e.g. set by hand
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 4 features"):
        gm.predict(_data(D=3))


def test_warm_start_refuses_another_covariance_type_of_the_same_shape():
    # K == D: 'diag' and 'tied' parameters have the same shapes
    X = np.random.default_rng(0).normal(size=(300, 3))
    gm = GaussianMixture(3, covariance_type="diag", warm_start=True, max_iter=200, random_state=0)
    gm.fit(X)
    gm.set_params(covariance_type="tied")
    with pytest.raises(ValueError, match="covariance_type='diag'.*now n_components=3, covariance_type='tied'"):
        gm.fit(X)
