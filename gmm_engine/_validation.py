"""Parameter and input validation with scikit-learn's wording.

scikit-learn is not a runtime dependency, so its ``validate_data`` and
parameter constraints are reproduced here for what ``GaussianMixture``
uses.  Error texts match scikit-learn's where it has one; where we know
more (which rows hold NaN), the message says so.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings

import numpy as np

from . import _covariance
from .exceptions import DataValidationError, InvalidParameterError, NotFittedError, compatible

# ---------------------------------------------------------------------------
# random_state


def check_random_state(seed) -> np.random.RandomState:
    """scikit-learn's ``check_random_state``: None, int or RandomState."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(
        "%r cannot be used to seed a numpy.random.RandomState instance" % seed
    )


# ---------------------------------------------------------------------------
# constructor parameters


class _Interval:
    """scikit-learn's ``Interval``: a typed range, NaN never in it.

    Like scikit-learn, Python ``bool`` counts as an int (and so as a real):
    ``max_iter=False`` is 0 and ``tol=True`` is 1.0; ``numpy.bool_`` is
    neither.  A missing bound is infinite and open unless ``closed`` says
    otherwise, so ``inf`` is outside ``[0, inf)``.  ``allow_bool=False``
    refuses bools where scikit-learn accepts them only to fail later (with a
    bare ``TypeError``, which ``InvalidParameterError`` also is).
    """

    def __init__(self, kind, left, right, closed, allow_bool=True):
        self.kind, self.left, self.right, self.closed = kind, left, right, closed
        self.allow_bool = allow_bool

    def ok(self, v):
        if not isinstance(v, self.kind):
            return False
        if isinstance(v, bool) and not self.allow_bool:
            return False
        if not isinstance(v, numbers.Integral) and math.isnan(v):
            return False
        left = -math.inf if self.left is None else self.left
        right = math.inf if self.right is None else self.right
        if v < left or (v == left and self.closed not in ("left", "both")):
            return False
        if v > right or (v == right and self.closed not in ("right", "both")):
            return False
        return True

    def __str__(self):
        kind = "an int" if self.kind is numbers.Integral else "a float"
        left = self.left if self.left is not None else "-inf"
        right = self.right if self.right is not None else "inf"
        if self.kind is numbers.Real and self.left is not None:
            left = float(self.left)
        lb = "[" if self.closed in ("left", "both") and self.left is not None else "("
        rb = "]" if self.closed in ("right", "both") and self.right is not None else ")"
        return f"{kind} in the range {lb}{left}, {right}{rb}"


class _Options:
    def __init__(self, options):
        self.options = set(options)

    def ok(self, v):
        return isinstance(v, str) and v in self.options

    def __str__(self):
        return "a str among {%s}" % ", ".join(repr(o) for o in sorted(self.options))


class _Const:
    def __init__(self, text, predicate):
        self.text, self.predicate = text, predicate

    def ok(self, v):
        return self.predicate(v)

    def __str__(self):
        return self.text


_BOOL = [
    _Const("an instance of 'bool'", lambda v: isinstance(v, bool)),
    _Const("an instance of 'numpy.bool'", lambda v: isinstance(v, np.bool_)),
]
_NONE = _Const("None", lambda v: v is None)
# scikit-learn's ``_is_arraylike_not_scalar``: strings and bytes have a
# length but are scalars, so means_init='abc' is refused here
_ARRAY_LIKE = _Const(
    "an array-like",
    lambda v: (hasattr(v, "__len__") or hasattr(v, "shape") or hasattr(v, "__array__"))
    and not np.isscalar(v),
)

PARAMETER_CONSTRAINTS = {
    "n_components": [_Interval(numbers.Integral, 1, None, "left", allow_bool=False)],
    "covariance_type": [_Options(_covariance.NAMES)],
    "tol": [_Interval(numbers.Real, 0.0, None, "left")],
    "reg_covar": [_Interval(numbers.Real, 0.0, None, "left")],
    "max_iter": [_Interval(numbers.Integral, 0, None, "left")],
    "n_init": [_Interval(numbers.Integral, 1, None, "left")],
    "init_params": [_Options({"kmeans", "random", "random_from_data", "k-means++"})],
    "init_size": [_Interval(numbers.Integral, 1, None, "left", allow_bool=False), _NONE],
    "weights_init": [_ARRAY_LIKE, _NONE],
    "means_init": [_ARRAY_LIKE, _NONE],
    "precisions_init": [_ARRAY_LIKE, _NONE],
    "random_state": [
        _Interval(numbers.Integral, 0, 2**32 - 1, "both"),
        _Const(
            "an instance of 'numpy.random.mtrand.RandomState'",
            lambda v: isinstance(v, np.random.RandomState),
        ),
        _NONE,
    ],
    "warm_start": _BOOL,
    "verbose": [_Interval(numbers.Integral, 0, None, "left"), *_BOOL],
    "verbose_interval": [_Interval(numbers.Integral, 1, None, "left")],
    "persist": _BOOL,
    "acceleration": [_Options({"squarem"}), _NONE],  # gmm_engine._squarem
    # partial_fit: LatentDirichletAllocation's names for the stepwise schedule,
    # and the half-life (rows) of forgetting
    "learning_decay": [_Interval(numbers.Real, 0.5, 1.0, "right")],
    "learning_offset": [_Interval(numbers.Real, 0.0, None, "left")],
    "half_life": [_Interval(numbers.Real, 0.0, None, "neither"), _NONE],
    # BayesianGaussianMixture's priors (scikit-learn's constraints, in its order)
    "weight_concentration_prior_type": [_Options({"dirichlet_process", "dirichlet_distribution"})],
    "weight_concentration_prior": [_NONE, _Interval(numbers.Real, 0.0, None, "neither")],
    "mean_precision_prior": [_NONE, _Interval(numbers.Real, 0.0, None, "neither")],
    "mean_prior": [_NONE, _ARRAY_LIKE],
    "degrees_of_freedom_prior": [_NONE, _Interval(numbers.Real, 0.0, None, "neither")],
    "covariance_prior": [_NONE, _ARRAY_LIKE, _Interval(numbers.Real, 0.0, None, "neither")],
    # NaN entries: refused, or marginalised (gmm_engine._missing)
    "missing": [_Options({"error", "marginalize"})],
}


def _join(constraints):
    texts = [str(c) for c in constraints]
    if len(texts) == 1:
        return texts[0]
    return ", ".join(texts[:-1]) + " or " + texts[-1]


def validate_params(estimator) -> None:
    """Raise ``InvalidParameterError`` for the first invalid constructor parameter."""
    name = type(estimator).__name__
    for param, value in estimator.get_params(deep=False).items():
        constraints = PARAMETER_CONSTRAINTS.get(param)
        if constraints is None or any(c.ok(value) for c in constraints):
            continue
        raise InvalidParameterError(
            f"The {param!r} parameter of {name} must be {_join(constraints)}. "
            f"Got {value!r} instead."
        )


# ---------------------------------------------------------------------------
# user-supplied initial parameters (scikit-learn's wording)


def check_init_array(value, *, allow_nd=False) -> np.ndarray:
    """scikit-learn's ``check_array(dtype=[float64, float32], ensure_2d=False)``.

    Applied to user initial parameters before their shapes and values are
    checked, with scikit-learn's messages: NaN or infinity, too many
    dimensions, or no entries are refused.

    Parameters
    ----------
    value : array-like
    allow_nd : bool
        Accept more than two dimensions (full precisions).

    Returns
    -------
    ndarray
        float32 if given float32, else float64.
    """
    arr = np.asarray(value)
    if arr.dtype not in (np.float32, np.float64):
        arr = np.asarray(value, dtype=np.float64)
    if arr.ndim >= 3 and not allow_nd:
        raise ValueError(f"Found array with dim {arr.ndim}, while dim <= 2 is required.")
    if np.isnan(arr).any():
        raise ValueError("Input contains NaN.")
    if np.isinf(arr).any():
        raise ValueError(f"Input contains infinity or a value too large for {arr.dtype!r}.")
    if arr.ndim >= 1 and arr.shape[0] < 1:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if arr.ndim == 2 and arr.shape[1] < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    return arr


def check_weights(weights, n_components):
    weights = check_init_array(weights)
    # scikit-learn's tolerance on the sum depends on the precision given
    atol = 1e-6 if weights.dtype == np.float32 else 1e-8
    weights = weights.astype(np.float64)
    if weights.shape != (n_components,):
        raise ValueError(
            "The parameter 'weights' should have the shape of %s, but got %s"
            % ((n_components,), weights.shape)
        )
    if np.any(weights < 0.0) or np.any(weights > 1.0):
        # scikit-learn's text, with its order of min and max
        raise ValueError(
            "The parameter 'weights' should be in the range "
            "[0, 1], but got max value %.5f, min value %.5f"
            % (np.min(weights), np.max(weights))
        )
    if not np.allclose(abs(1.0 - weights.sum()), 0.0, atol=atol):
        raise ValueError(
            "The parameter 'weights' should be normalized, but got sum(weights) = %.5f"
            % weights.sum()
        )
    return weights


def check_means(means, n_components, n_features):
    means = check_init_array(means).astype(np.float64)
    if means.shape != (n_components, n_features):
        raise ValueError(
            "The parameter 'means' should have the shape of %s, but got %s"
            % ((n_components, n_features), means.shape)
        )
    return means


# ---------------------------------------------------------------------------
# input arrays


def is_dask_array(X) -> bool:
    return type(X).__module__.startswith("dask.") and hasattr(X, "chunks") and hasattr(X, "dask")


def is_zarr_array(X) -> bool:
    return type(X).__module__.startswith("zarr.") and hasattr(X, "chunks") and hasattr(X, "attrs")


def is_dask_dataframe(X) -> bool:
    """A dask DataFrame or Series (converted lazily, never gathered on the client)."""
    return type(X).__module__.startswith("dask") and hasattr(X, "to_dask_array") and hasattr(X, "npartitions")


def is_zarr_group(X) -> bool:
    return type(X).__module__.startswith("zarr.") and hasattr(X, "array_keys") and hasattr(X, "group_keys")


def is_path_like(X) -> bool:
    return isinstance(X, (str, os.PathLike))


def non_finite_message(
    n_nan_rows, n_inf_rows, n_rows, bad_rows, what="X", dtype=np.float64, scope=None, name="GaussianMixture"
) -> str:
    """Say what is wrong (NaN or infinity), in how many rows, where, and the fix.

    Parameters
    ----------
    n_nan_rows, n_inf_rows : int
        Rows holding a NaN, and rows holding an infinity but no NaN.
    n_rows : int
        Rows inspected.
    bad_rows : list of int
        The first offending global row indices.
    what : str
        Name of the input in the message.
    dtype : dtype
        Input dtype, named as scikit-learn does for infinities.
    scope : str, optional
        What part of the input was inspected (e.g. one chunk), when not all of it.
    name : str
        The estimator that refuses them.
    """
    kinds = []
    if n_nan_rows:
        kinds.append("NaN")
    if n_inf_rows:
        kinds.append(f"infinity or a value too large for {np.dtype(dtype)!r}")
    n_bad = n_nan_rows + n_inf_rows
    shown = ", ".join(str(r) for r in bad_rows)
    more = ", ..." if n_bad > len(bad_rows) else ""
    where = f" of {scope}" if scope else ""
    marginalize = (
        " To fit and score rows with missing features as they are, set missing='marginalize' "
        "on the GaussianMixture."
        if n_nan_rows else ""
    )
    return (
        f"Input {what} contains {' and '.join(kinds)} in {n_bad} of {n_rows} rows{where} "
        f"(row indices {shown}{more}). {name} does not accept missing or "
        "infinite values: impute or remove these rows first, for example with "
        "pipeline.ingest(..., bad_rows='drop'), which drops them and records how many."
        f"{marginalize}"
    )


def missing_value_rows(X):
    """The rows ``missing='marginalize'`` cannot use: ``(inf_rows, empty_rows)``, boolean (n,) each.

    ``inf_rows`` hold an infinity (whatever else); ``empty_rows`` have every
    feature NaN and no infinity.  Other NaN entries are missing values.
    """
    X = np.asarray(X)
    inf_rows = np.isinf(X).any(axis=1)
    empty_rows = np.isnan(X).all(axis=1) & ~inf_rows
    return inf_rows, empty_rows


def unusable_rows_message(n_inf_rows, n_empty_rows, n_rows, bad_rows, what="X", dtype=np.float64, scope=None) -> str:
    """:func:`non_finite_message` for ``missing='marginalize'``: the rows that cannot be marginalised.

    Parameters
    ----------
    n_inf_rows, n_empty_rows : int
        Rows holding an infinity, and rows with every feature NaN (and no infinity).
    n_rows, bad_rows, what, dtype, scope
        As for :func:`non_finite_message`.
    """
    kinds = []
    if n_inf_rows:
        kinds.append(f"{n_inf_rows} with infinity or a value too large for {np.dtype(dtype)!r}")
    if n_empty_rows:
        kinds.append(f"{n_empty_rows} with every feature missing (NaN)")
    n_bad = n_inf_rows + n_empty_rows
    shown = ", ".join(str(r) for r in bad_rows)
    more = ", ..." if n_bad > len(bad_rows) else ""
    where = f" of {scope}" if scope else ""
    return (
        f"Input {what} has {n_bad} of {n_rows} rows{where} that cannot be marginalised "
        f"({'; '.join(kinds)}; row indices {shown}{more}). With missing='marginalize' NaN "
        "entries are missing features, but an infinity is not a missing value and a row with "
        "no observed feature has no likelihood: fix or remove these rows first."
    )


def _sparse_error():
    return TypeError(
        "Sparse data was passed for X, but dense data is required. Use '.toarray()' "
        "to convert to a dense numpy array."
    )


def _is_sparse(X) -> bool:
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def check_dim_and_dtype(shape, dtype, name="GaussianMixture", array_repr=None):
    """Shape/dtype checks shared by in-memory and lazy inputs."""
    if len(shape) == 0:
        raise ValueError(
            f"Expected 2D array, got scalar array instead:\narray={array_repr}.\n"
            "Reshape your data either using array.reshape(-1, 1) if your data has a "
            "single feature or array.reshape(1, -1) if it contains a single sample."
        )
    if len(shape) == 1:
        raise ValueError(
            f"Expected 2D array, got 1D array instead:\narray={array_repr}.\n"
            "Reshape your data either using array.reshape(-1, 1) if your data has a "
            "single feature or array.reshape(1, -1) if it contains a single sample."
        )
    if len(shape) > 2:
        raise ValueError(
            f"Found array with dim {len(shape)}, while dim <= 2 is required by {name}."
        )
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"Complex data not supported\n{array_repr}\n")


def check_n_samples(n_samples, n_features, shape, min_samples, name="GaussianMixture"):
    if n_samples < min_samples:
        raise ValueError(
            f"Found array with {n_samples} sample(s) (shape={tuple(shape)}) while a "
            f"minimum of {min_samples} is required by {name}."
        )
    if n_features < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(shape)}) while a minimum of "
            f"1 is required by {name}."
        )


def check_numpy(X, *, min_samples=1, name="GaussianMixture", missing=False) -> np.ndarray:
    """scikit-learn's ``check_array`` for dense in-memory input.

    Returns a C-contiguous float32 or float64 array (other numeric dtypes
    become float64) and raises on sparse, complex, non-2D, too small or
    non-finite input.  With ``missing=True`` (``missing='marginalize'``)
    NaN entries are accepted, infinities and rows with every feature NaN
    are not (:func:`missing_value_rows`).
    """
    if _is_sparse(X):
        raise _sparse_error()
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # pandas
        X = X.to_numpy()
    arr = np.asarray(X)
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"Complex data not supported\n{arr}\n")
    if arr.ndim == 0:
        # before ascontiguousarray, which makes a scalar a 1-D array; shown as
        # scikit-learn shows it, converted to float
        shown = arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)
        check_dim_and_dtype(arr.shape, arr.dtype, name, array_repr=shown)
    dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float64
    if arr.dtype.kind == "O":
        arr = arr.astype(np.float64)
    arr = np.ascontiguousarray(arr, dtype=dtype)
    check_dim_and_dtype(arr.shape, arr.dtype, name, array_repr=arr)
    check_n_samples(arr.shape[0], arr.shape[1], arr.shape, min_samples, name)
    finite_rows = np.isfinite(arr).all(axis=1)
    if missing and not finite_rows.all():
        _refuse_unusable_rows(arr, np.flatnonzero(~finite_rows))
    elif not finite_rows.all():
        bad = np.flatnonzero(~finite_rows)
        nan_rows = np.isnan(arr[bad]).any(axis=1)
        raise DataValidationError(
            non_finite_message(
                int(nan_rows.sum()), int((~nan_rows).sum()), arr.shape[0], bad[:10].tolist(),
                dtype=arr.dtype, name=name,
            )
        )
    return arr


def _refuse_unusable_rows(arr, candidates):
    """Raise for the rows among ``candidates`` (the non-finite ones) that cannot be marginalised."""
    inf_rows, empty_rows = missing_value_rows(arr[candidates])
    bad = candidates[inf_rows | empty_rows]
    if bad.size:
        raise DataValidationError(
            unusable_rows_message(int(inf_rows.sum()), int(empty_rows.sum()), arr.shape[0], bad[:10].tolist(),
                                  dtype=arr.dtype)
        )


# ---------------------------------------------------------------------------
# fitted state, feature counts and feature names


def check_is_fitted(estimator, attribute="means_"):
    if not hasattr(estimator, attribute):
        raise compatible(NotFittedError)(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' "
            "with appropriate arguments before using this estimator."
        )


def check_n_features(estimator, n_features, expected=None):
    """scikit-learn's check of X's feature count against ``n_features_in_``, and its message.

    ``expected`` overrides ``n_features_in_`` as the count to compare with.
    The fitted attributes themselves are set with the parameters, never here.
    """
    if expected is None:
        expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and n_features != expected:
        raise ValueError(
            f"X has {n_features} features, but {type(estimator).__name__} is expecting "
            f"{expected} features as input."
        )


def get_feature_names(X):
    """Column names of a DataFrame, or ``feature_names`` of a Zarr array, or None."""
    names = None
    if hasattr(X, "columns"):
        names = list(X.columns)
    elif is_zarr_array(X):
        names = X.attrs.get("feature_names")
    if names is None or len(names) == 0:
        return None
    kinds = {type(n) for n in names}
    if all(isinstance(n, str) for n in names):
        return np.asarray(names, dtype=object)
    if len(kinds) > 1 and any(issubclass(k, str) for k in kinds):
        raise TypeError(
            "Feature names are only supported if all input features have string names, "
            f"but your input has {sorted(k.__name__ for k in kinds)} as feature name / "
            "column name types. If you want feature names to be stored and validated, "
            "you must convert them all to strings, by using X.columns = "
            "X.columns.astype(str) for example. Otherwise you can remove feature / "
            "column names from your input data, or convert them all to a non-string "
            "data type."
        )
    return None


def check_feature_names(estimator, X):
    """scikit-learn's check of X's feature names against ``feature_names_in_``, and its messages."""
    name = type(estimator).__name__
    names = get_feature_names(X)
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None and names is None:
        return
    if names is not None and fitted is None:
        warnings.warn(
            f"X has feature names, but {name} was fitted without feature names",
            UserWarning,
        )
        return
    if names is None and fitted is not None:
        warnings.warn(
            f"X does not have valid feature names, but {name} was fitted with "
            "feature names",
            UserWarning,
        )
        return
    if len(fitted) != len(names) or np.any(fitted != names):
        message = "The feature names should match those that were passed during fit.\n"
        fitted_set, new_set = set(fitted), set(names)
        unexpected = sorted(new_set - fitted_set)
        missing = sorted(fitted_set - new_set)

        def listing(header, items, max_n=5):
            out = header
            for item in items[:max_n]:
                out += f"- {item}\n"
            if len(items) > max_n:
                out += "- ...\n"
            return out

        if unexpected:
            message += listing("Feature names unseen at fit time:\n", unexpected)
        if missing:
            message += listing("Feature names seen at fit time, yet now missing:\n", missing)
        if not missing and not unexpected:
            message += "Feature names must be in the same order as they were in fit.\n"
        raise ValueError(message)
