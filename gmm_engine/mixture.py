"""``GaussianMixture``: scikit-learn's estimator, fitted out of core on Dask."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import _covariance
from ._data import NUMPY_BLOCK_ROWS, TARGET_CHUNK_BYTES, DaskData, NumpyData, n_threads
from ._em import EMState, run_em
from ._init import initialize
from ._params import GMMParams
from ._persist import load_model, save_model
from ._stats import summary_chunk
from ._validation import (
    check_dim_and_dtype,
    check_feature_names,
    check_init_array,
    check_is_fitted,
    check_means,
    check_n_features,
    check_n_samples,
    check_numpy,
    check_random_state,
    check_weights,
    get_feature_names,
    is_dask_array,
    is_dask_dataframe,
    is_path_like,
    is_zarr_array,
    is_zarr_group,
    non_finite_message,
    validate_params,
)
from ._zarr_io import ZarrRows
from .exceptions import ConvergenceWarning, DataValidationError, compatible

logger = logging.getLogger("gmm_engine")

__all__ = ["GaussianMixture", "InformationCriteria"]


@dataclass(frozen=True)
class InformationCriteria:
    """What model selection compares, from one pass over the data.

    Attributes
    ----------
    loglik : float
        Total log-likelihood of the data under the model.
    n_samples : int
        Rows (the effective sample size of BIC's ``ln N``).
    n_parameters : int
    bic, aic : float
        ``-2 loglik + p ln N`` and ``-2 loglik + 2 p``; lower is better.
    """

    loglik: float
    n_samples: int
    n_parameters: int
    bic: float
    aic: float

    @property
    def mean_loglik(self) -> float:
        return self.loglik / self.n_samples

    @classmethod
    def of(cls, loglik: float, n_samples: int, n_parameters: int) -> "InformationCriteria":
        return cls(float(loglik), int(n_samples), int(n_parameters),
                   -2.0 * loglik + n_parameters * math.log(n_samples), -2.0 * loglik + 2.0 * n_parameters)


# ---------------------------------------------------------------------------
# input handling


def _group_message(path, group):
    arrays = sorted(str(k) for k in group.array_keys())
    groups = sorted(str(k) for k in group.group_keys())
    where = str(path).rstrip("/")
    if arrays:
        listing = "its arrays: " + ", ".join(repr(a) for a in arrays)
        example = f"for example {where}/{arrays[0]}"
    else:
        listing = "it holds no arrays"
        example = "the path of a 2-D Zarr array"
    if groups:
        listing += "; its groups: " + ", ".join(repr(g) for g in groups)
    return (
        f"{where} is a Zarr group, not an array ({listing}). GaussianMixture reads one "
        f"2-D array of shape (n_samples, n_features): pass its path instead, {example}."
    )


def open_zarr_array(path, storage_options=None):
    """Open a Zarr array read-only from a local path or any fsspec URL."""
    import zarr

    try:
        return zarr.open_array(str(path), mode="r", storage_options=storage_options)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No Zarr array at {path!s}: check the path, or ingest the data first "
            "(`gmm ingest` or pipeline.ingest)."
        ) from None
    except Exception as exc:  # zarr's own error for a group is internal jargon
        try:
            group = zarr.open_group(str(path), mode="r", storage_options=storage_options)
        except Exception:  # noqa: BLE001 - not a group either: zarr's error stands
            raise exc from None
        raise ValueError(_group_message(path, group)) from None


def zarr_to_dask(z):
    """A dask array over a Zarr array, chunked in whole storage chunks of ~64 MiB."""
    import dask.array as da

    # scikit-learn's messages for a 1-D or 3-D array, before anything is read
    check_dim_and_dtype(z.shape, z.dtype, array_repr=repr(z))
    n, D = z.shape
    unit = int((getattr(z, "shards", None) or z.chunks)[0])
    row_bytes = max(1, D * z.dtype.itemsize)
    rows = max(unit, (TARGET_CHUNK_BYTES // row_bytes) // unit * unit)
    # ZarrRows reads local chunk files straight into the rows (see _zarr_io); a random
    # name spares tokenising the array's store on every call
    return da.from_array(ZarrRows(z), chunks=(min(rows, max(n, 1)), D), asarray=False, lock=False,
                         name=False, meta=np.empty((0, 0), dtype=z.dtype))


def _lazy_input(X, min_samples):
    """Validate a dask array's metadata (no data read) and fix its dtype."""
    if len(X.shape) == 2 and any(math.isnan(c) for c in X.chunks[0]):
        raise ValueError(
            "The dask array has unknown chunk sizes; call X.compute_chunk_sizes() "
            "(or X = X.persist()) before passing it to GaussianMixture."
        )
    check_dim_and_dtype(X.shape, X.dtype, array_repr=repr(X))
    check_n_samples(X.shape[0], X.shape[1], X.shape, min_samples)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    return X


def _resolve(X):
    """Turn paths, Zarr arrays and dask DataFrames into dask arrays; return (array, names source).

    A dask DataFrame becomes a dask array lazily (``to_dask_array(lengths=True)``
    computes the partition lengths, not the data); its columns stay the
    names source.
    """
    if is_path_like(X):
        X = open_zarr_array(X)
    if is_zarr_group(X):
        raise ValueError(_group_message(getattr(X, "store_path", X), X))
    if is_zarr_array(X):
        return zarr_to_dask(X), X
    if is_dask_dataframe(X):
        return X.to_dask_array(lengths=True), X
    return X, X


# ---------------------------------------------------------------------------
# per-block scoring (numpy blocks from either backend)


def _check_block_finite(block, start):
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        # Lazy scoring sees one chunk at a time: report that chunk's bad rows
        # with their global positions.
        bad = np.flatnonzero(~finite)
        nan_rows = np.isnan(block[bad]).any(axis=1)
        n = block.shape[0]
        raise DataValidationError(
            non_finite_message(
                int(nan_rows.sum()), int((~nan_rows).sum()), n,
                (start + bad[:10]).tolist(), dtype=block.dtype,
                scope=f"the chunk at rows {start} to {start + n - 1}",
            )
        )


def _block_start(block_info):
    return block_info[0]["array-location"][0][0] if block_info else 0


def _weighted_log_prob(block, kp, start=0, checked=False):
    if not checked:
        _check_block_finite(block, start)
    out = np.empty((block.shape[0], kp.n_components))
    _covariance.get(kp.covariance_type).weighted_log_prob(block, kp, out)
    return out


def _logsumexp_rows(wlp):
    m = wlp.max(axis=1)
    finite = np.isfinite(m)
    shift = np.where(finite, m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(wlp - shift[:, None]).sum(axis=1)) + shift


# The block functions take ``checked=True`` for in-memory input, which
# ``check_numpy`` has already scanned for NaN and inf; a dask block is seen
# here for the first time and is checked.  score_samples and predict use the
# fused kernels, which never materialise the (n, K) log-probabilities.


def _score_block(block, kp, block_info=None, checked=False):
    if not checked:
        _check_block_finite(block, _block_start(block_info))
    out = np.empty(block.shape[0])
    _covariance.get(kp.covariance_type).score_samples(block, kp, out)
    return out


def _predict_block(block, kp, block_info=None, checked=False):
    if not checked:
        _check_block_finite(block, _block_start(block_info))
    out = np.empty(block.shape[0], dtype=np.int64)
    _covariance.get(kp.covariance_type).predict(block, kp, out)
    return out


def _proba_block(block, kp, block_info=None, checked=False):
    wlp = _weighted_log_prob(block, kp, _block_start(block_info), checked)
    with np.errstate(under="ignore"):
        return np.exp(wlp - _logsumexp_rows(wlp)[:, None])


def _map_rows_numpy(fn, X, kp, out):
    """Apply a block function over an in-memory array on local threads."""
    starts = range(0, X.shape[0], NUMPY_BLOCK_ROWS)

    def run(s):
        info = {0: {"array-location": [(s, min(s + NUMPY_BLOCK_ROWS, X.shape[0]))]}}
        out[s : s + NUMPY_BLOCK_ROWS] = fn(X[s : s + NUMPY_BLOCK_ROWS], kp, block_info=info)

    if len(starts) <= 1:
        for s in starts:
            run(s)
    else:
        with ThreadPoolExecutor(min(n_threads(), len(starts))) as pool:
            list(pool.map(run, starts))
    return out


# ---------------------------------------------------------------------------


class GaussianMixture:
    """Gaussian mixture fitted by EM with one pass over chunked data per iteration.

    A drop-in for :class:`sklearn.mixture.GaussianMixture` (same parameters,
    defaults, attributes, methods, warnings and error messages) that also
    accepts dask arrays, dask DataFrames, Zarr arrays and paths or URLs of
    Zarr arrays, and never gathers the data on the client.  Each EM iteration is one pass
    over the chunks: every chunk yields its sufficient statistics and
    log-likelihood, a tree reduction merges them, and the M-step is a pure
    function of the merged statistics.  Dask input is computed on the
    active ``distributed.Client`` when there is one, else on the threaded
    scheduler; in-memory input runs on local threads.  A dask array of
    in-memory chunks (``da.from_array(X)``) is sent to the cluster once per
    fit, not with every pass.

    Parameters
    ----------
    n_components : int, default=1
        The number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        Each component has its own general covariance matrix ('full'), all
        share one ('tied'), each has its own diagonal ('diag') or a single
        variance ('spherical').
    tol : float, default=1e-3
        EM stops when the mean log-likelihood changes by less than this.
    reg_covar : float, default=1e-6
        Non-negative value added to the diagonal of every covariance.
    max_iter : int, default=100
        The number of EM iterations to perform.
    n_init : int, default=1
        The number of initialisations; the best lower bound is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, \
default='kmeans'
        'kmeans' runs k-means|| then Lloyd passes over the chunks;
        'k-means++' draws greedy k-means++ centres (one pass per centre);
        'random' draws random responsibilities; 'random_from_data' takes
        random rows as means (the same rows as scikit-learn for the same
        ``random_state``).
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        (n_components,) if 'spherical', (n_features, n_features) if 'tied',
        (n_components, n_features) if 'diag',
        (n_components, n_features, n_features) if 'full'.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and ``sample``.  Row-level randomness is a
        function of the row index, so the fit does not depend on chunking.
    warm_start : bool, default=False
        Start from the last fit's parameters; ``n_init`` is then ignored.
    verbose : int, default=0
        1 or more shows a progress bar over EM iterations with the current
        mean log-likelihood.  Every iteration is also logged at INFO on the
        ``gmm_engine`` logger.
    verbose_interval : int, default=10
        Kept for scikit-learn compatibility (the bar refreshes every
        iteration).
    persist : bool, default=False
        Keep dask input in (cluster) memory for the whole fit instead of
        reading it from its store on every pass.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
        Shape set by ``covariance_type`` (see ``precisions_init``).
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
        Upper-triangular ``U`` with ``precision = U U^T``.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood of the training data under the parameters before
        the last M-step (scikit-learn's definition).
    lower_bounds_ : list of float
        One per iteration of the best initialisation.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when the input had string feature names (DataFrame columns or
        a Zarr array's ``feature_names`` attribute).

    Notes
    -----
    Fitted arrays are float64 whatever the input dtype; the arithmetic is
    float64 with statistics accumulated around the current means, so data
    far from the origin and float32 input keep full accuracy.
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        persist=False,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.persist = persist

    # -- scikit-learn estimator protocol ------------------------------------

    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self")

    def get_params(self, deep=True):
        """Parameters of this estimator, as scikit-learn's ``get_params``."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set parameters, as scikit-learn's ``set_params``; returns self."""
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(
                    f"Invalid parameter {key!r} for estimator {self}. Valid parameters "
                    f"are: {valid!r}."
                )
            setattr(self, key, value)
        return self

    def __repr__(self):
        defaults = {
            p.name: p.default
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.name != "self"
        }
        changed = []
        for name in defaults:  # signature order, as scikit-learn prints
            value = getattr(self, name)
            default = defaults[name]
            same = value is default or (
                not isinstance(value, np.ndarray)
                and not isinstance(default, np.ndarray)
                and type(value) is type(default)
                and value == default
            )
            if not same:
                changed.append((name, value))
        changed.sort(key=lambda kv: kv[0])
        args = ", ".join(f"{k}={v!r}" for k, v in changed)
        return f"{type(self).__name__}({args})"

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, so it is importable here.
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(
            estimator_type="density_estimator",
            target_tags=TargetTags(required=False),
            input_tags=InputTags(),
        )

    # -- fitting -------------------------------------------------------------

    def _training_data(self, X, warm=False):
        """ChunkedData for X, and the input's feature names (or None).

        Nothing fitted changes here: ``n_features_in_`` and
        ``feature_names_in_`` are set with the parameters when the fit
        succeeds (:meth:`_set_fitted`), so a failed fit never leaves them
        disagreeing with ``means_``.  With ``warm=True`` (a warm start will
        follow), X must fit the current parameters.
        """
        X, names_source = _resolve(X)
        if is_dask_array(X):
            X = _lazy_input(X, min_samples=2)
        else:
            X = check_numpy(X, min_samples=2)
        names = get_feature_names(names_source)  # raises on mixed name types
        if warm:
            self._check_warm_start(X.shape[1])
        data = DaskData(X, persist=self.persist) if is_dask_array(X) else NumpyData(X)
        return data, names

    def _will_warm_start(self):
        # Continue only from a fit that finished: a fit that raised (say, a
        # collapsed component) leaves no parameters to continue from.
        return bool(self.warm_start and hasattr(self, "converged_") and hasattr(self, "means_"))

    def _check_warm_start(self, n_features):
        """Refuse to continue a fit whose parameters do not fit X and the estimator.

        The chunk kernels trust the parameter shapes; a mismatch would read
        past the rows instead of failing.
        """
        K = self.n_components
        expected = _covariance.get(self.covariance_type).param_shape(K, n_features)
        means_shape, cov_shape = np.shape(self.means_), np.shape(self.covariances_)
        # shapes alone cannot tell 'diag' from 'tied' when K == D
        fitted_type = getattr(self, "_fitted_covariance_type", self.covariance_type)
        if means_shape != (K, n_features) or cov_shape != expected or fitted_type != self.covariance_type:
            raise ValueError(
                "warm_start=True continues the previous fit, which has "
                f"{means_shape[0]} components, {means_shape[1]} features and "
                f"covariance_type={fitted_type!r} (covariances of shape {cov_shape}), "
                f"but now n_components={K}, covariance_type="
                f"{self.covariance_type!r} and X has {n_features} features (covariances of "
                f"shape {expected}). Pass data and parameters that match the previous fit, "
                "or set warm_start=False to start afresh."
            )

    def fit(self, X, y=None, *, on_iteration=None):
        """Estimate the parameters with EM; see :meth:`fit_predict`.

        Parameters
        ----------
        X : array-like, dask array, dask DataFrame, zarr array, or path/URL of a \
Zarr array, of shape (n_samples, n_features)
        y : Ignored
        on_iteration : callable, optional
            Called after every EM iteration with an ``EMState`` (parameters,
            iteration count, lower bounds): the hook for checkpoints.

        Returns
        -------
        self : GaussianMixture
        """
        self._fit(X, on_iteration=on_iteration)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then return the most likely component of every row of X.

        Returns
        -------
        labels : ndarray of shape (n_samples,), or a lazy dask array for dask input
        """
        self._fit(X)
        return self.predict(X)

    def _check_init_params(self, n_features):
        K = self.n_components
        weights = None if self.weights_init is None else check_weights(self.weights_init, K)
        means = None if self.means_init is None else check_means(self.means_init, K, n_features)
        precisions = None
        if self.precisions_init is not None:
            precisions = check_init_array(
                self.precisions_init, allow_nd=self.covariance_type == "full"
            )
            precisions = _covariance.get(self.covariance_type).check_precisions(
                precisions, K, n_features
            )
        return weights, means, precisions

    def _fit(self, X, on_iteration=None):
        validate_params(self)
        do_init = not self._will_warm_start()
        data, names = self._training_data(X, warm=not do_init)
        self._check_n_samples(data)
        weights_init, means_init, precisions_init = self._check_init_params(data.n_features)
        summary = self._scan(data)

        n_init = self.n_init if do_init else 1
        rs = check_random_state(self.random_state)
        best = None
        for init in range(n_init):
            if do_init:
                params = initialize(
                    data, summary,
                    n_components=self.n_components,
                    covariance_type=self.covariance_type,
                    init_params=self.init_params,
                    reg_covar=self.reg_covar,
                    rs=rs,
                    weights_init=weights_init,
                    means_init=means_init,
                    precisions_init=precisions_init,
                )
                start = EMState(params, 0, -math.inf)
            else:
                start = EMState(self._params(), 0, self.lower_bound_)
            logger.info("Initialization %d", init)
            state = self._run(data, start, init, n_init, on_iteration)
            if self.max_iter == 0 or best is None or state.lower_bound > best.lower_bound or best.lower_bound == -math.inf:
                best = state
        return self._finish(best, data.n_features, names)

    def _check_n_samples(self, data):
        """scikit-learn's check that there are at least as many rows as components."""
        if data.n_samples < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components "
                f"but got n_components = {self.n_components}, n_samples = {data.n_samples}"
            )

    @staticmethod
    def _scan(data):
        """One pass over the training data: refuse NaN and inf, with their row positions.

        Also gives the per-feature mean and variance the initialisers need.
        """
        summary = data.map_reduce(summary_chunk)
        if summary.n_bad_rows:
            raise DataValidationError(
                non_finite_message(
                    summary.n_nan_rows, summary.n_inf_rows, data.n_samples,
                    list(summary.bad_rows), dtype=data.dtype,
                )
            )
        return summary

    def _finish(self, state, n_features, names):
        """Warn if EM stopped short, then set every fitted attribute from ``state``."""
        if not state.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                compatible(ConvergenceWarning),
            )
        self._set_fitted(state.params, n_features, names)
        self.converged_ = bool(state.converged)
        self.n_iter_ = int(state.n_iter)
        self.lower_bound_ = float(state.lower_bound) if self.max_iter > 0 else -math.inf
        self.lower_bounds_ = list(state.lower_bounds)
        return self

    def _run(self, data, start, init, n_init, on_iteration):
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            desc = f"EM init {init + 1}/{n_init}" if n_init > 1 else "EM"
            bar = tqdm(total=self.max_iter, desc=desc, unit="iter", leave=True)

        def hook(state):
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loglik=f"{state.lower_bound:.6g}", change=f"{state.change:.2g}")
            if on_iteration is not None:
                on_iteration(state)

        try:
            return run_em(
                data, start, reg_covar=self.reg_covar, tol=self.tol,
                max_iter=self.max_iter, on_iteration=hook,
            )
        finally:
            if bar is not None:
                bar.close()

    def resume(self, X, state, *, on_iteration=None):
        """Continue an interrupted fit from a checkpointed :class:`EMState`.

        The iteration budget ``max_iter`` counts the iterations already in
        ``state``; on the same data the result equals an uninterrupted fit.

        Parameters
        ----------
        X : as for :meth:`fit`
        state : EMState
            As passed to ``on_iteration`` during the interrupted fit.

        Returns
        -------
        self : GaussianMixture
        """
        validate_params(self)
        data, names = self._training_data(X)
        # the same checks as fit: too few rows, then NaN or inf (one scan)
        self._check_n_samples(data)
        if (
            state.params.n_features != data.n_features
            or state.params.covariance_type != self.covariance_type
            or state.params.n_components != self.n_components
        ):
            raise ValueError(
                "The checkpoint does not match this estimator and data: it has "
                f"{state.params.n_features} features, {state.params.n_components} components "
                f"and covariance_type={state.params.covariance_type!r}; the data has "
                f"{data.n_features} features and the estimator n_components="
                f"{self.n_components}, covariance_type={self.covariance_type!r}. Resume "
                "with the estimator parameters and data of the interrupted fit."
            )
        self._scan(data)
        return self._finish(self._run(data, state, 0, 1, on_iteration), data.n_features, names)

    def _set_fitted(self, params: GMMParams, n_features, names):
        """Set the fitted parameters and the input's feature count and names together."""
        self._set_params_from(params)
        self.n_features_in_ = int(n_features)
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _set_params_from(self, params: GMMParams):
        self._fitted_covariance_type = params.covariance_type
        self.weights_ = params.weights
        self.means_ = params.means
        self.covariances_ = params.covariances
        self.precisions_cholesky_ = params.precisions_cholesky
        self.precisions_ = params.precisions

    def _fitted_covariance(self) -> str:
        """The covariance type the fitted parameters have.

        ``set_params(covariance_type=...)`` after a fit changes what the next
        fit does, not what ``covariances_`` and ``precisions_cholesky_`` are:
        scoring, sampling and parameter counts use the type they were fitted
        with (scikit-learn reads them with the new type and fails or returns
        NaN).
        """
        return getattr(self, "_fitted_covariance_type", self.covariance_type)

    def _params(self, *, covariances=True) -> GMMParams:
        """The fitted parameters, checked against each other before any kernel reads them.

        The kernels do no bounds checks: an attribute replaced after the fit
        (``gm.means_ = gm.means_[:2]``) must fail here, not read past an
        array.  ``covariances=False`` skips ``covariances_``, which scoring
        does not use.
        """
        ctype = self._fitted_covariance()
        cov = _covariance.get(ctype)
        arrays = {"covariances_": np.empty(0)}  # not read by the kernels
        names = ("weights_", "means_", "precisions_cholesky_") + (("covariances_",) if covariances else ())
        for attr in names:
            value = getattr(self, attr)
            try:
                arrays[attr] = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"The fitted attribute {attr} of this {type(self).__name__} is not a "
                    f"numeric array ({exc}). Refit the model, or restore the attribute."
                ) from None
        weights, means = arrays["weights_"], arrays["means_"]
        K = weights.shape[0] if weights.ndim == 1 else None
        D = getattr(self, "n_features_in_", means.shape[1] if means.ndim == 2 else None)
        checks = [("weights_", (K,)), ("means_", (K, D)), ("precisions_cholesky_", None)]
        if covariances:
            checks.append(("covariances_", None))
        problems = []
        if K is None:
            problems.append(f"weights_ has shape {weights.shape}, expected (n_components,)")
        else:
            for attr, shape in checks:
                shape = shape or cov.param_shape(K, D)
                if arrays[attr].shape != shape:
                    problems.append(f"{attr} has shape {arrays[attr].shape}, expected {shape}")
        if problems:
            raise ValueError(
                f"The fitted parameters of this {type(self).__name__} do not agree with each "
                f"other: {'; '.join(problems)} (for {K or 'n_components'} components, {D} "
                f"features and covariance_type={ctype!r}, the type they were fitted with). An attribute "
                "was changed after fitting: refit the model, or set all of weights_, "
                "means_, covariances_ and precisions_cholesky_ consistently."
            )
        return GMMParams(ctype, weights, means, arrays["covariances_"], arrays["precisions_cholesky_"])

    # -- prediction ------------------------------------------------------------

    def _prepare(self, X, in_memory=False):
        """Validate X for prediction; return (array, is_lazy).

        With ``in_memory`` a Zarr array or dask array is read into memory
        first (its feature names are still checked) and scored as NumPy.
        """
        check_is_fitted(self)
        X, names_source = _resolve(X)
        if in_memory and is_dask_array(X):
            X = np.asarray(names_source[...]) if is_zarr_array(names_source) else X.compute(scheduler="sync")
        if is_dask_array(X):
            X = _lazy_input(X, min_samples=1)
            lazy = True
        else:
            X = check_numpy(X, min_samples=1)
            lazy = False
        check_n_features(self, X.shape[1], reset=False)
        # The kernels trust the parameter shapes (no bounds checks): refuse
        # attributes that disagree with X however they came to be.
        means_shape = np.shape(self.means_)
        if len(means_shape) == 2:  # other shapes: refused by _params
            check_n_features(self, X.shape[1], reset=False, expected=means_shape[1])
        check_feature_names(self, names_source, reset=False)
        return X, lazy

    def _apply(self, fn, X, per_component=False):
        """fn over the rows of X: one value per row, or one per row and component."""
        X, lazy = self._prepare(X)
        params = self._params(covariances=False)
        # the fitted component count, whatever n_components says now
        n_out = params.n_components if per_component else None
        kp = params.kernel_params()
        if lazy:
            import dask

            kp_node = dask.delayed(kp, pure=True, traverse=False)
            if n_out is None:
                return X.map_blocks(fn, kp_node, drop_axis=1, dtype=np.int64 if fn is _predict_block else np.float64)
            return X.map_blocks(fn, kp_node, chunks=(X.chunks[0], (n_out,)), dtype=np.float64)
        shape = (X.shape[0],) if n_out is None else (X.shape[0], n_out)
        dtype = np.int64 if fn is _predict_block else np.float64
        return _map_rows_numpy(functools.partial(fn, checked=True), X, kp, np.empty(shape, dtype=dtype))

    def score_samples(self, X):
        """Log-likelihood of every row under the model.

        Returns
        -------
        log_prob : ndarray of shape (n_samples,), or a lazy dask array for dask input
        """
        return self._apply(_score_block, X)

    def predict(self, X):
        """Most likely component of every row.

        Returns
        -------
        labels : ndarray of shape (n_samples,), or a lazy dask array for dask input
        """
        return self._apply(_predict_block, X)

    def predict_proba(self, X):
        """Posterior probability of every component for every row.

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components), or a lazy dask array
        """
        return self._apply(_proba_block, X, per_component=True)

    def score(self, X, y=None):
        """Mean log-likelihood of the rows of X (computed, also for dask input)."""
        return self._total_score(X)[0]

    def _total_score(self, X):
        """(mean log-likelihood, row count) of X, from one evaluation."""
        s = self.score_samples(X)
        mean = s.mean().compute() if hasattr(s, "compute") else s.mean()
        return float(mean), int(s.shape[0])

    def n_parameters(self) -> int:
        """Free parameters of the fitted model: ``(K - 1) + K D`` plus the covariances'.

        The count BIC and AIC charge; scikit-learn's private ``_n_parameters``.
        """
        params = self._params(covariances=False)
        return _covariance.get(params.covariance_type).n_parameters(
            params.n_components, params.n_features
        )

    # scikit-learn's name, for code written against it
    _n_parameters = n_parameters

    def information_criteria(self, X) -> InformationCriteria:
        """Log-likelihood, BIC and AIC of X from one pass over it.

        Returns
        -------
        InformationCriteria
        """
        score, n = self._total_score(X)
        return InformationCriteria.of(score * n, n, self.n_parameters())

    def bic(self, X):
        """Bayesian information criterion on X; lower is better."""
        return self.information_criteria(X).bic

    def aic(self, X):
        """Akaike information criterion on X; lower is better."""
        return self.information_criteria(X).aic

    def sample(self, n_samples=1):
        """Draw rows from the fitted mixture (scikit-learn's draws for a given seed).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            Component of every row.
        """
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(
                "Invalid value for 'n_samples': %d . The sampling requires at least one "
                "sample." % n_samples
            )
        params = self._params()
        means, covariances = params.means, params.covariances
        n_features = params.n_features
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, params.weights)
        if params.covariance_type == "full":
            X = np.vstack([
                rng.multivariate_normal(mean, cov, int(c))
                for mean, cov, c in zip(means, covariances, counts)
            ])
        elif params.covariance_type == "tied":
            X = np.vstack([
                rng.multivariate_normal(mean, covariances, int(c))
                for mean, c in zip(means, counts)
            ])
        else:
            X = np.vstack([
                mean + rng.standard_normal(size=(c, n_features)) * np.sqrt(cov)
                for mean, cov, c in zip(means, covariances, counts)
            ])
        y = np.concatenate([np.full(int(c), k, dtype=np.int64) for k, c in enumerate(counts)])
        return X, y

    # -- persistence ---------------------------------------------------------

    def save(self, path, *, metadata=None, overwrite=False):
        """Write the fitted model to a directory (JSON + .npy; never pickle).

        Parameters
        ----------
        path : str or PathLike
        metadata : dict, optional
            JSON-serialisable information stored with the model.
        overwrite : bool, default=False
            Replace a model directory already at ``path``.  Anything else
            there (a file, a directory that is not a saved model, a model
            directory holding other files) is left alone and refused with
            ``FileExistsError``.

        Returns
        -------
        pathlib.Path

        Warns
        -----
        UserWarning
            When a parameter cannot be stored (``random_state`` given as a
            ``RandomState`` instance): it is saved as None.
        """
        check_is_fitted(self)
        return save_model(self, path, metadata=metadata, overwrite=overwrite)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`, verifying checksums, shapes and dtypes.

        Raises
        ------
        ModelFormatError
            The directory is missing, corrupt, tampered with or not a model.
        """
        est, _ = load_model(cls, path)
        return est
