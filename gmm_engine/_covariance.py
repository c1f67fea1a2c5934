"""One registry entry per covariance type: what differs between them.

The entries mirror scikit-learn's ``sklearn.mixture._gaussian_mixture``
(shapes, precision Cholesky factors, log-determinants, parameter counts,
validation messages) and add what the chunked engine needs: the shape of
the shifted scatter statistic (and how it moves to another shift), the
covariance from merged statistics, and the per-chunk kernels (their
layout: :mod:`gmm_engine._kernel_params`).  The Wishart prior and posterior
of ``BayesianGaussianMixture`` are mixed into each entry from
:mod:`gmm_engine._wishart`.

Shapes, with K components and D features:

=========  ==============  =============  ================
type       covariances     scatter stat   precisions_chol
=========  ==============  =============  ================
full       (K, D, D)       (K, D, D)      (K, D, D) upper
tied       (D, D)          (D, D)         (D, D) upper
diag       (K, D)          (K, D)         (K, D)
spherical  (K,)            (K,)           (K,)
=========  ==============  =============  ================
"""

from __future__ import annotations

import math

import numpy as np

from ._kernel_params import KernelParams, kernel_rows, kernel_weights, pad_last, rows_layout, skip_threshold
from ._lazy import on_first_use
from ._wishart import DiagWishart, FullWishart, SphericalWishart, TiedWishart
from .exceptions import ComponentCollapseError


# The registry's names are read by the command line, which must answer in a fraction of a
# second: the compiled kernels (numba) and scipy's linear algebra load on first use.
kern = on_first_use("gmm_engine._kernels")
linalg = on_first_use("scipy.linalg")

LOG_2PI = math.log(2.0 * math.pi)

COLLAPSE_MESSAGE = (
    "Fitting the mixture model failed because some components have "
    "ill-defined empirical covariance (for instance caused by singleton "
    "or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)


def _collapse_error(components=None) -> ComponentCollapseError:
    """scikit-learn's message, then which components failed (None: the tied covariance)."""
    if components is None:
        detail = "The tied covariance shared by all components is not positive definite."
    else:
        which = ", ".join(str(int(k)) for k in components)
        detail = f"Components whose covariance is not positive definite: [{which}]."
    return ComponentCollapseError(f"{COLLAPSE_MESSAGE} {detail}")


def _max_abs_finite(a) -> float:
    err = np.abs(a)
    return float(np.max(err)) if np.all(np.isfinite(err)) else math.inf


def _check_shape(param, shape, name):
    if param.shape != shape:
        raise ValueError(
            "The parameter '%s' should have the shape of %s, but got %s"
            % (name, shape, param.shape)
        )


def _check_spd(matrix, covariance_type):
    if not (
        np.allclose(matrix, matrix.T, rtol=1e-5, atol=1e-8)
        and np.all(np.linalg.eigvalsh(matrix) > 0.0)
    ):
        raise ValueError(
            "'%s precision' should be symmetric, positive-definite" % covariance_type
        )


def _chol_upper_of_precision(precision):
    # precision = U U^T with U upper: Cholesky of the row/column-reversed
    # matrix, reversed back (scikit-learn #26415).
    flipped = precision[::-1, ::-1]
    return np.linalg.cholesky(flipped)[::-1, ::-1].copy()


# -- unconstrained coordinates (EM acceleration extrapolates in these) --------


def _cholesky_coordinates(matrices, D, scale):
    """The lower triangles of the Cholesky factors of (..., D, D) matrices, rows over ``scale``, flat."""
    rows, cols = np.tril_indices(D)
    chol = np.linalg.cholesky(np.asarray(matrices).reshape((-1, D, D)))
    return (chol / scale[:, None])[:, rows, cols].ravel()


def _from_cholesky_coordinates(z, D, scale, shape):
    """``L L^T`` from :func:`_cholesky_coordinates`; None unless every diagonal is positive."""
    rows, cols = np.tril_indices(D)
    chol = np.zeros((z.size // rows.size, D, D))
    chol[:, rows, cols] = z.reshape((-1, rows.size))
    chol *= scale[:, None]
    if not (np.all(np.isfinite(chol)) and np.all(np.diagonal(chol, axis1=1, axis2=2) > 0.0)):
        return None
    return (chol @ np.swapaxes(chol, 1, 2)).reshape(shape)


class CovarianceType:
    """Interface of one covariance type; see the module docstring for shapes."""

    name: str

    def param_shape(self, K: int, D: int) -> tuple:
        raise NotImplementedError  # pragma: no cover - abstract

    def scatter_shape(self, K: int, D: int) -> tuple:
        return self.param_shape(K, D)

    def n_cov_params(self, K: int, D: int) -> int:
        raise NotImplementedError  # pragma: no cover - abstract

    def n_parameters(self, K: int, D: int) -> int:
        """Free parameters: ``(K - 1) + K D + covariance parameters``."""
        return int(self.n_cov_params(K, D) + K * D + K - 1)

    # -- kernel-facing: scoring ----------------------------------------------

    def _logprob(self, X, kp, mode, out):  # pragma: no cover - abstract
        raise NotImplementedError

    def weighted_log_prob(self, X, kp, out):
        """``out`` (n, K) = log w_k + log N(x | mu_k, Sigma_k) for every row of X."""
        self._logprob(rows_layout(X), kp, kern.WLP, out)

    def score_samples(self, X, kp, out):
        """``out`` (n,) = log p(x) for every row of X (a fused log-sum-exp)."""
        direct = out.flags.c_contiguous and out.dtype == np.float64
        tmp = out if direct else np.empty(out.shape)
        self._logprob(rows_layout(X), kp, kern.SCORE, tmp.reshape(-1, 1))
        if not direct:
            out[:] = tmp

    def predict(self, X, kp, out):
        """``out`` (n,) int = the most likely component of every row (lowest on ties)."""
        labels = np.empty((X.shape[0], 1))
        self._logprob(rows_layout(X), kp, kern.LABEL, labels)
        out[:] = labels[:, 0]

    def rebase_scatter(self, scatter, nk, sums, delta) -> np.ndarray:
        """This type's scatter around shift ``a`` moved to ``b = a - delta`` (K, D), exactly (a new array).

        ``Q_b = Q_a + s_a delta^T + delta s_a^T + n delta delta^T`` per
        component (shared/EM-NOTES.md), reduced as the type keeps it;
        ``nk`` (K,) and ``sums`` (K, D) are the statistics around ``a``.
        """
        raise NotImplementedError  # pragma: no cover - abstract

    #: score_rows takes per-row scores from the E-step kernel up to this many
    #: features; above, its scatter costs more than the log-probability route
    #: (measured K=8: full/tied 0.96-1.2x at D=64, 1.3-1.5x at 128)
    fused_rows_max_features: float = math.inf

    #: user ``precisions_init`` may be a 3-D array (scikit-learn's allow_nd)
    init_allows_nd = False
    #: scikit-learn's start from one row per component ('random_from_data',
    #: 'k-means++') reads every row, not only the chosen ones: the tied
    #: covariance pools the raw second moment of all rows
    one_hot_start_reads_all_rows = False

    def to_full(self, covariances, K: int, D: int) -> np.ndarray:
        """(K, D, D) covariance matrices from this type's ``covariances_`` (a new array)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def from_full(self, full) -> np.ndarray:
        """This type's ``covariances_`` closest to (K, D, D) matrices ``full``.

        full: the matrices; tied: their mean; diag: their diagonals;
        spherical: the mean of each diagonal.
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def sample(self, rng, means, covariances, counts) -> np.ndarray:
        """``counts[k]`` rows from each component, stacked in component order.

        The draws are scikit-learn's ``GaussianMixture.sample`` for the same
        ``RandomState``.
        """
        K, D = means.shape
        full = self.to_full(covariances, K, D)
        return np.vstack([
            rng.multivariate_normal(mean, cov, int(c)) for mean, cov, c in zip(means, full, counts)
        ])

    def whitening_error(self, covariances, prec_chol) -> float:
        """Largest entry of ``|U^T Sigma U - I|``: 0 for a consistent pair, inf if not finite."""
        # full and tied: matrices; diag and spherical override with the elementwise form
        D = prec_chol.shape[-1]
        u = prec_chol.reshape((-1, D, D))
        c = np.asarray(covariances).reshape((-1, D, D))
        return _max_abs_finite(np.einsum("kji,kjl,klm->kim", u, c, u) - np.eye(D))

    def precision_factor_problem(self, prec_chol) -> str | None:
        """Why stored ``precisions_cholesky_`` cannot be this type's factors, or None."""
        D = prec_chol.shape[-1]
        mats = prec_chol.reshape((-1, D, D))
        if np.any(np.tril(mats, -1) != 0) or np.any(np.diagonal(mats, axis1=1, axis2=2) <= 0):
            return "precisions_cholesky_ are not upper triangular with a positive diagonal"
        return None

    def check_precisions(self, precisions, K: int, D: int) -> np.ndarray:
        """Validate user ``precisions_init`` with scikit-learn's messages."""
        precisions = np.asarray(precisions, dtype=np.float64)
        _check_shape(precisions, self.param_shape(K, D), "%s precision" % self.name)
        self._check_precision_values(precisions)
        return precisions

    def to_coordinates(self, covariances, scale) -> np.ndarray:
        """``covariances_`` as a flat vector of unconstrained coordinates.

        full and tied: the lower triangles of their Cholesky factors, in
        units of ``scale`` (D,) per feature (the factors of the covariances
        of x / scale); diag and spherical: log-variances, whose differences
        have no units.  Any vector near them maps back to positive definite
        covariances (:meth:`from_coordinates`), so EM acceleration can
        extrapolate there.
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def from_coordinates(self, z, K: int, D: int, scale):
        """``covariances_`` from :meth:`to_coordinates`, or None when not positive definite."""
        raise NotImplementedError  # pragma: no cover - abstract

    # -- missing values (gmm_engine._missing) ----------------------------------

    #: the covariances are diagonal: a row's missing features are independent of
    #: its observed ones, so their conditional mean is the component mean
    diagonal_covariances = False

    def scatter_from_components(self, per_component) -> np.ndarray:
        """This type's scatter statistic from per-component scatters around the component means.

        ``per_component`` is (K, D, D) (upper triangles suffice, as
        :meth:`finish_scatter` mirrors them), or (K, D) diagonals when
        :attr:`diagonal_covariances`: what the missing-value kernels
        accumulate.  full and diag keep it, tied sums the components,
        spherical the features.
        """
        return per_component


def _outer_terms(nk, sums, delta):
    """Per component ``s delta^T + delta s^T + n delta delta^T`` (K, D, D)."""
    cross = sums[:, :, None] * delta[:, None, :]
    return cross + np.swapaxes(cross, 1, 2) + nk[:, None, None] * delta[:, :, None] * delta[:, None, :]


class _Full(FullWishart, CovarianceType):
    name = "full"
    init_allows_nd = True
    fused_rows_max_features = 48

    def rebase_scatter(self, scatter, nk, sums, delta):
        return scatter + _outer_terms(nk, sums, delta)

    def to_full(self, covariances, K, D):
        return np.array(covariances, dtype=np.float64).reshape((K, D, D))

    def from_full(self, full):
        return np.array(full, dtype=np.float64)

    def param_shape(self, K, D):
        return (K, D, D)

    def n_cov_params(self, K, D):
        return K * D * (D + 1) // 2

    def _check_precision_values(self, precisions):
        for k in range(precisions.shape[0]):
            _check_spd(precisions[k], self.name)

    def covariances(self, nk, d, scatter, reg_covar):
        D = d.shape[1]
        cov = scatter / nk[:, None, None] - d[:, :, None] * d[:, None, :]
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        cov[:, np.arange(D), np.arange(D)] += reg_covar
        return cov

    def precision_cholesky(self, covariances):
        K, D, _ = covariances.shape
        chol = np.empty_like(covariances)
        bad = []
        for k in range(K):
            try:
                chol[k] = linalg.cholesky(covariances[k], lower=True)
            except (linalg.LinAlgError, ValueError):  # ValueError: NaN or inf
                bad.append(k)
        if bad:
            raise _collapse_error(bad)
        # inv(L).T without scipy's solve_triangular: see kern.inv_lower_transposed
        out = np.empty_like(covariances)
        kern.inv_lower_transposed(chol, out)
        return out

    def precision_cholesky_from_precisions(self, precisions):
        return np.stack([_chol_upper_of_precision(p) for p in precisions])

    def covariances_from_precision_cholesky(self, prec_chol):
        D = prec_chol.shape[-1]
        eye = np.eye(D)
        out = np.empty_like(prec_chol)
        for k in range(prec_chol.shape[0]):
            inv = linalg.solve_triangular(prec_chol[k], eye, lower=False)
            out[k] = inv.T @ inv
        return out

    def precisions(self, prec_chol):
        return prec_chol @ np.swapaxes(prec_chol, 1, 2)

    def to_coordinates(self, covariances, scale):
        return _cholesky_coordinates(covariances, covariances.shape[-1], scale)

    def from_coordinates(self, z, K, D, scale):
        return _from_cholesky_coordinates(z, D, scale, (K, D, D))

    def log_det(self, prec_chol, D):
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)

    def kernel_params(self, weights, means, prec_chol):
        D = means.shape[1]
        Dp = kern.padded_features(D)
        logc = np.log(weights) + self.log_det(prec_chol, D) - 0.5 * D * LOG_2PI
        return KernelParams(
            self.name, means, np.ascontiguousarray(prec_chol), logc,
            means_p=pad_last(means, Dp), prec_p=pad_last(prec_chol, Dp, axes=2),
            rmin=skip_threshold(weights),
        )

    def estep(self, X, kp, nk, sums, scatter, weights=None, rows=None):
        return kern.estep_full(rows_layout(X), kernel_weights(weights), kp.means_p, kp.prec_p, kp.logc,
                               kp.rmin, nk, sums, scatter, kernel_rows(rows))

    def _logprob(self, X, kp, mode, out):
        kern.wlogprob_full(X, kp.means_p, kp.prec_p, kp.logc, mode, out)

    def accumulate(self, X, resp, shift, nk, sums, scatter):
        Dp = kern.padded_features(shift.shape[1])
        kern.accumulate_full(rows_layout(X), resp, pad_last(shift, Dp), nk, sums, scatter)

    def finish_scatter(self, scatter):
        # kernels write the upper triangle only
        kern.mirror_upper(scatter)
        return scatter


class _Tied(TiedWishart, CovarianceType):
    name = "tied"
    one_hot_start_reads_all_rows = True
    fused_rows_max_features = 48

    def rebase_scatter(self, scatter, nk, sums, delta):
        # each component's part moves with its own shift: the per-component
        # n and s are kept for this
        return scatter + _outer_terms(nk, sums, delta).sum(axis=0)

    def to_full(self, covariances, K, D):
        return np.array(np.broadcast_to(np.asarray(covariances, dtype=np.float64), (K, D, D)))

    def from_full(self, full):
        return np.asarray(full, dtype=np.float64).mean(axis=0)

    def param_shape(self, K, D):
        return (D, D)

    def n_cov_params(self, K, D):
        return D * (D + 1) // 2

    def _check_precision_values(self, precisions):
        _check_spd(precisions, self.name)

    def covariances(self, nk, d, scatter, reg_covar):
        D = d.shape[1]
        between = (nk[:, None, None] * d[:, :, None] * d[:, None, :]).sum(axis=0)
        cov = (scatter - between) / nk.sum()
        cov = 0.5 * (cov + cov.T)
        cov[np.arange(D), np.arange(D)] += reg_covar
        return cov

    def precision_cholesky(self, covariance):
        try:
            chol = linalg.cholesky(covariance, lower=True)
        except (linalg.LinAlgError, ValueError):  # ValueError: NaN or inf
            raise _collapse_error() from None
        out = np.empty((1, *chol.shape))
        kern.inv_lower_transposed(np.ascontiguousarray(chol)[None], out)
        return out[0]

    def precision_cholesky_from_precisions(self, precisions):
        return _chol_upper_of_precision(precisions)

    def covariances_from_precision_cholesky(self, prec_chol):
        inv = linalg.solve_triangular(prec_chol, np.eye(prec_chol.shape[0]), lower=False)
        return inv.T @ inv

    def precisions(self, prec_chol):
        return prec_chol @ prec_chol.T

    def to_coordinates(self, covariances, scale):
        return _cholesky_coordinates(covariances, covariances.shape[-1], scale)

    def from_coordinates(self, z, K, D, scale):
        return _from_cholesky_coordinates(z, D, scale, (D, D))

    def log_det(self, prec_chol, D):
        return np.log(np.diagonal(prec_chol)).sum()

    def kernel_params(self, weights, means, prec_chol):
        K, D = means.shape
        logc = np.log(weights) + self.log_det(prec_chol, D) - 0.5 * D * LOG_2PI
        center = np.average(means, axis=0, weights=weights)
        mu_white = (means - center) @ prec_chol
        Dp = kern.padded_features(D)
        return KernelParams(
            self.name,
            means,
            np.ascontiguousarray(prec_chol),
            np.broadcast_to(logc, (K,)).copy(),
            center,
            np.ascontiguousarray(mu_white),
            means_p=pad_last(means, Dp),
            prec_p=pad_last(prec_chol, Dp, axes=2),
            center_p=pad_last(center, Dp),
            muw_p=pad_last(mu_white, Dp),
            rmin=skip_threshold(weights),
        )

    def estep(self, X, kp, nk, sums, scatter, weights=None, rows=None):
        return kern.estep_tied(
            rows_layout(X), kernel_weights(weights), kp.means_p, kp.prec_p, kp.logc, kp.center_p, kp.muw_p,
            kp.rmin, nk, sums, scatter, kernel_rows(rows),
        )

    def _logprob(self, X, kp, mode, out):
        kern.wlogprob_tied(X, kp.means_p, kp.prec_p, kp.logc, kp.center_p, kp.muw_p, mode, out)

    def scatter_from_components(self, per_component):
        return per_component.sum(axis=0)

    def accumulate(self, X, resp, shift, nk, sums, scatter):
        K, D = shift.shape
        per_component = np.zeros((K, D, D))
        kern.accumulate_full(rows_layout(X), resp, pad_last(shift, kern.padded_features(D)), nk, sums, per_component)
        scatter += per_component.sum(axis=0)

    def finish_scatter(self, scatter):
        # kernels write the upper triangle only
        kern.mirror_upper(scatter)
        return scatter


class _Diag(DiagWishart, CovarianceType):
    name = "diag"
    diagonal_covariances = True

    def rebase_scatter(self, scatter, nk, sums, delta):
        return scatter + 2.0 * sums * delta + nk[:, None] * delta * delta

    def _variances(self, covariances, K, D):
        return np.asarray(covariances, dtype=np.float64).reshape((K, D))

    def to_full(self, covariances, K, D):
        full = np.zeros((K, D, D))
        idx = np.arange(D)
        full[:, idx, idx] = self._variances(covariances, K, D)
        return full

    def from_full(self, full):
        return np.array(np.diagonal(np.asarray(full, dtype=np.float64), axis1=1, axis2=2))

    def sample(self, rng, means, covariances, counts):
        # scikit-learn's draws: independent normals scaled per feature
        D = means.shape[1]
        return np.vstack([
            mean + rng.standard_normal(size=(int(c), D)) * np.sqrt(cov)
            for mean, cov, c in zip(means, covariances, counts)
        ])

    def whitening_error(self, covariances, prec_chol):
        return _max_abs_finite(covariances * prec_chol**2 - 1.0)

    def precision_factor_problem(self, prec_chol):
        return "precisions_cholesky_ are not positive" if np.any(prec_chol <= 0) else None

    def param_shape(self, K, D):
        return (K, D)

    def n_cov_params(self, K, D):
        return K * D

    def _check_precision_values(self, precisions):
        if np.any(precisions <= 0.0):
            raise ValueError("'%s precision' should be positive" % self.name)

    def covariances(self, nk, d, scatter, reg_covar):
        return scatter / nk[:, None] - d * d + reg_covar

    def precision_cholesky(self, covariances):
        per_component = covariances.reshape(covariances.shape[0], -1)
        bad = np.flatnonzero(~np.all(per_component > 0.0, axis=1))
        if bad.size:
            raise _collapse_error(bad)
        return 1.0 / np.sqrt(covariances)

    def precision_cholesky_from_precisions(self, precisions):
        return np.sqrt(precisions)

    def covariances_from_precision_cholesky(self, prec_chol):
        return 1.0 / prec_chol**2

    def precisions(self, prec_chol):
        return prec_chol**2

    def to_coordinates(self, covariances, scale):
        return np.log(np.asarray(covariances, dtype=np.float64)).ravel()

    def from_coordinates(self, z, K, D, scale):
        with np.errstate(over="ignore"):
            variances = np.exp(z)
        ok = np.all(np.isfinite(variances)) and np.all(variances > 0.0)
        return variances.reshape(self.param_shape(K, D)) if ok else None

    def log_det(self, prec_chol, D):
        return np.log(prec_chol).sum(axis=1)

    def kernel_params(self, weights, means, prec_chol):
        D = means.shape[1]
        Dp = kern.padded_features(D)
        logc = np.log(weights) + self.log_det(prec_chol, D) - 0.5 * D * LOG_2PI
        prec = np.ascontiguousarray(prec_chol**2)
        return KernelParams(
            self.name, means, prec, logc, means_p=pad_last(means, Dp), prec_p=pad_last(prec, Dp)
        )

    def estep(self, X, kp, nk, sums, scatter, weights=None, rows=None):
        return kern.estep_diag(rows_layout(X), kernel_weights(weights), kp.means_p, kp.prec_p, kp.logc,
                               nk, sums, scatter, kernel_rows(rows))

    def _logprob(self, X, kp, mode, out):
        kern.wlogprob_diag(X, kp.means_p, kp.prec_p, kp.logc, mode, out)

    def accumulate(self, X, resp, shift, nk, sums, scatter):
        Dp = kern.padded_features(shift.shape[1])
        kern.accumulate_diag(rows_layout(X), resp, pad_last(shift, Dp), nk, sums, scatter)

    def finish_scatter(self, scatter):
        return scatter


class _Spherical(SphericalWishart, _Diag):
    name = "spherical"

    def rebase_scatter(self, scatter, nk, sums, delta):
        # the trace of the diagonal form
        return scatter + 2.0 * (sums * delta).sum(axis=1) + nk * (delta * delta).sum(axis=1)

    def _variances(self, covariances, K, D):
        return np.repeat(np.asarray(covariances, dtype=np.float64).reshape((K, 1)), D, axis=1)

    def from_full(self, full):
        return super().from_full(full).mean(axis=1)

    def param_shape(self, K, D):
        return (K,)

    def n_cov_params(self, K, D):
        return K

    def covariances(self, nk, d, scatter, reg_covar):
        D = d.shape[1]
        # the mean over features of the diagonal variances
        return (scatter / nk - (d * d).sum(axis=1)) / D + reg_covar

    def log_det(self, prec_chol, D):
        return D * np.log(prec_chol)

    def kernel_params(self, weights, means, prec_chol):
        K, D = means.shape
        Dp = kern.padded_features(D)
        logc = np.log(weights) + self.log_det(prec_chol, D) - 0.5 * D * LOG_2PI
        prec = np.ascontiguousarray(prec_chol**2)
        prec_p = np.zeros((K, Dp))
        prec_p[:, 0] = prec
        return KernelParams(
            self.name, means, prec, logc, means_p=pad_last(means, Dp), prec_p=prec_p
        )

    def estep(self, X, kp, nk, sums, scatter, weights=None, rows=None):
        return kern.estep_spherical(rows_layout(X), kernel_weights(weights), kp.means_p, kp.prec_p,
                                    kp.logc, nk, sums, scatter, kernel_rows(rows))

    def _logprob(self, X, kp, mode, out):
        kern.wlogprob_spherical(X, kp.means_p, kp.prec_p, kp.logc, mode, out)

    def scatter_from_components(self, per_component):
        return per_component.sum(axis=1)

    def accumulate(self, X, resp, shift, nk, sums, scatter):
        K, D = shift.shape
        per_feature = np.zeros((K, D))
        kern.accumulate_diag(rows_layout(X), resp, pad_last(shift, kern.padded_features(D)), nk, sums, per_feature)
        scatter += per_feature.sum(axis=1)


COVARIANCE_TYPES: dict[str, CovarianceType] = {
    c.name: c for c in (_Full(), _Tied(), _Diag(), _Spherical())
}

#: the covariance type names, in scikit-learn's order: the one list everything else uses
NAMES: tuple[str, ...] = tuple(COVARIANCE_TYPES)
#: the type whose statistics keep each component's whole scatter matrix (K, D, D)
FULL: str = _Full.name


def get(covariance_type: str) -> CovarianceType:
    """Registry lookup; the estimator validates the name before this is reached."""
    return COVARIANCE_TYPES[covariance_type]


def check_name(covariance_type) -> str:
    """``covariance_type`` if it names a registry entry, else scikit-learn's kind of error."""
    if not isinstance(covariance_type, str) or covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {', '.join(repr(n) for n in NAMES)}; "
            f"got {covariance_type!r}."
        )
    return covariance_type


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}: pass an int >= 1.")
    return int(value)


def covariances_from_full(full, covariance_type) -> np.ndarray:
    """``covariances_`` of ``covariance_type`` closest to the (K, D, D) matrices ``full``.

    full: a copy; tied: their mean; diag: their diagonals; spherical: the
    mean of each diagonal.  ``full_covariances`` of the result gives back
    matrices of that type.
    """
    full = np.asarray(full, dtype=np.float64)
    if full.ndim != 3 or full.shape[1] != full.shape[2]:
        raise ValueError(f"full must have shape (n_components, n_features, n_features), got {full.shape}")
    return get(check_name(covariance_type)).from_full(full)


def full_covariances(covariances, covariance_type, n_components, n_features) -> np.ndarray:
    """(K, D, D) covariance matrices from any type's ``covariances_``.

    Parameters
    ----------
    covariances : array-like
        ``GaussianMixture.covariances_``: (K, D, D) if 'full', (D, D) if
        'tied', (K, D) if 'diag', (K,) if 'spherical'.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    n_components, n_features : int
        K and D.

    Returns
    -------
    ndarray of shape (K, D, D), float64
        A new array, never a view of ``covariances``.

    Raises
    ------
    ValueError
        Unknown type, wrong shape, non-finite values, asymmetric matrices
        or negative variances; the message says what to pass instead.
    """
    cov_type = get(check_name(covariance_type))
    K, D = _positive_int(n_components, "n_components"), _positive_int(n_features, "n_features")
    try:
        cov = np.asarray(covariances, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("covariances must be a numeric array: pass GaussianMixture.covariances_.") from None
    expected = cov_type.param_shape(K, D)
    if cov.shape != expected:
        raise ValueError(
            f"covariances has shape {cov.shape} but covariance_type={covariance_type!r} with "
            f"n_components={K} and n_features={D} needs {expected}: pass the model's "
            "covariances_ together with its own covariance_type."
        )
    if not np.all(np.isfinite(cov)):
        raise ValueError("covariances contain NaN or infinity: the model is not usable; refit it.")
    full = cov_type.to_full(cov, K, D)
    scale = max(float(np.abs(full).max()), np.finfo(np.float64).tiny)
    asym = float(np.abs(full - np.swapaxes(full, -1, -2)).max())
    if asym > 1e-8 * scale:
        raise ValueError(
            f"covariances are not symmetric (max |C - C^T| = {asym:.3g}): pass covariance "
            "matrices, not precision Cholesky factors."
        )
    variances = np.diagonal(full, axis1=1, axis2=2)
    if (variances < 0).any():
        raise ValueError(
            f"{covariance_type} covariances must have variances >= 0, got minimum "
            f"{float(variances.min()):.3g}: pass covariances_, not log-variances or precisions."
        )
    return full
