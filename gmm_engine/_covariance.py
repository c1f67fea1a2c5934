"""One registry entry per covariance type: what differs between them.

The entries mirror scikit-learn's ``sklearn.mixture._gaussian_mixture``
(shapes, precision Cholesky factors, log-determinants, parameter counts,
validation messages) and add what the chunked engine needs: the shape of
the shifted scatter statistic, the covariance from merged statistics, and
the per-chunk kernels.

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
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from . import _kernels as kern
from .exceptions import ComponentCollapseError

LOG_2PI = math.log(2.0 * math.pi)

COLLAPSE_MESSAGE = (
    "Fitting the mixture model failed because some components have "
    "ill-defined empirical covariance (for instance caused by singleton "
    "or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)


def _collapse_error(components) -> ComponentCollapseError:
    which = ", ".join(str(int(k)) for k in components)
    return ComponentCollapseError(
        f"{COLLAPSE_MESSAGE} Components whose covariance is not positive "
        f"definite: [{which}]."
    )


@dataclass(frozen=True, eq=False)
class KernelParams:
    """What a chunk kernel needs, shipped once per iteration to every worker.

    Attributes
    ----------
    covariance_type : str
    means : ndarray of shape (K, D)
    prec : ndarray
        Upper-triangular precision Cholesky factors (full: (K, D, D), tied:
        (D, D)) or precisions (diag: (K, D), spherical: (K,)).
    logc : ndarray of shape (K,)
        ``log w_k + log|U_k| - D/2 log(2 pi)``.
    center : ndarray of shape (D,)
        Tied only: the weighted mean of the means, the whitening origin.
    mu_white : ndarray of shape (K, D)
        Tied only: ``(mean_k - center) @ U``.
    """

    covariance_type: str
    means: np.ndarray
    prec: np.ndarray
    logc: np.ndarray
    center: np.ndarray | None = None
    mu_white: np.ndarray | None = None

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]


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

    def check_precisions(self, precisions, K: int, D: int) -> np.ndarray:
        """Validate user ``precisions_init`` with scikit-learn's messages."""
        precisions = np.asarray(precisions, dtype=np.float64)
        _check_shape(precisions, self.param_shape(K, D), "%s precision" % self.name)
        self._check_precision_values(precisions)
        return precisions


class _Full(CovarianceType):
    name = "full"

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
        out = np.empty_like(covariances)
        bad = []
        eye = np.eye(D)
        for k in range(K):
            try:
                chol = linalg.cholesky(covariances[k], lower=True)
            except (linalg.LinAlgError, ValueError):  # ValueError: NaN or inf
                bad.append(k)
                continue
            out[k] = linalg.solve_triangular(chol, eye, lower=True).T
        if bad:
            raise _collapse_error(bad)
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

    def log_det(self, prec_chol, D):
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)

    def kernel_params(self, weights, means, prec_chol):
        D = means.shape[1]
        logc = np.log(weights) + self.log_det(prec_chol, D) - 0.5 * D * LOG_2PI
        return KernelParams(self.name, means, np.ascontiguousarray(prec_chol), logc)

    def estep(self, X, kp, nk, sums, scatter):
        return kern.estep_full(X, kp.means, kp.prec, kp.logc, nk, sums, scatter)

    def weighted_log_prob(self, X, kp, out):
        kern.wlogprob_full(X, kp.means, kp.prec, kp.logc, out)

    def accumulate(self, X, resp, shift, nk, sums, scatter):
        kern.accumulate_full(X, resp, shift, nk, sums, scatter)

    def finish_scatter(self, scatter):
        # kernels write the upper triangle only
        iu = np.triu_indices(scatter.shape[-1], 1)
        scatter[:, iu[1], iu[0]] = scatter[:, iu[0], iu[1]]
        return scatter


class _Tied(CovarianceType):
    name = "tied"

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
            raise _collapse_error(["tied"]) from None
        return linalg.solve_triangular(chol, np.eye(covariance.shape[0]), lower=True).T

    def precision_cholesky_from_precisions(self, precisions):
        return _chol_upper_of_precision(precisions)

    def covariances_from_precision_cholesky(self, prec_chol):
        inv = linalg.solve_triangular(prec_chol, np.eye(prec_chol.shape[0]), lower=False)
        return inv.T @ inv

    def precisions(self, prec_chol):
        return prec_chol @ prec_chol.T

    def log_det(self, prec_chol, D):
        return np.log(np.diagonal(prec_chol)).sum()

    def kernel_params(self, weights, means, prec_chol):
        K, D = means.shape
        logc = np.log(weights) + self.log_det(prec_chol, D) - 0.5 * D * LOG_2PI
        center = np.average(means, axis=0, weights=weights)
        mu_white = (means - center) @ prec_chol
        return KernelParams(
            self.name,
            means,
            np.ascontiguousarray(prec_chol),
            np.broadcast_to(logc, (K,)).copy(),
            center,
            np.ascontiguousarray(mu_white),
        )

    def estep(self, X, kp, nk, sums, scatter):
        return kern.estep_tied(
            X, kp.means, kp.prec, kp.logc, kp.center, kp.mu_white, nk, sums, scatter
        )

    def weighted_log_prob(self, X, kp, out):
        kern.wlogprob_tied(X, kp.means, kp.prec, kp.logc, kp.center, kp.mu_white, out)

    def accumulate(self, X, resp, shift, nk, sums, scatter):
        K, D = shift.shape
        per_component = np.zeros((K, D, D))
        kern.accumulate_full(X, resp, shift, nk, sums, per_component)
        scatter += per_component.sum(axis=0)

    def finish_scatter(self, scatter):
        iu = np.triu_indices(scatter.shape[-1], 1)
        scatter[iu[1], iu[0]] = scatter[iu[0], iu[1]]
        return scatter


class _Diag(CovarianceType):
    name = "diag"

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

    def log_det(self, prec_chol, D):
        return np.log(prec_chol).sum(axis=1)

    def kernel_params(self, weights, means, prec_chol):
        D = means.shape[1]
        logc = np.log(weights) + self.log_det(prec_chol, D) - 0.5 * D * LOG_2PI
        return KernelParams(self.name, means, np.ascontiguousarray(prec_chol**2), logc)

    def estep(self, X, kp, nk, sums, scatter):
        return kern.estep_diag(X, kp.means, kp.prec, kp.logc, nk, sums, scatter)

    def weighted_log_prob(self, X, kp, out):
        kern.wlogprob_diag(X, kp.means, kp.prec, kp.logc, out)

    def accumulate(self, X, resp, shift, nk, sums, scatter):
        kern.accumulate_diag(X, resp, shift, nk, sums, scatter)

    def finish_scatter(self, scatter):
        return scatter


class _Spherical(_Diag):
    name = "spherical"

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
        D = means.shape[1]
        logc = np.log(weights) + self.log_det(prec_chol, D) - 0.5 * D * LOG_2PI
        return KernelParams(self.name, means, np.ascontiguousarray(prec_chol**2), logc)

    def estep(self, X, kp, nk, sums, scatter):
        return kern.estep_spherical(X, kp.means, kp.prec, kp.logc, nk, sums, scatter)

    def weighted_log_prob(self, X, kp, out):
        kern.wlogprob_spherical(X, kp.means, kp.prec, kp.logc, out)

    def accumulate(self, X, resp, shift, nk, sums, scatter):
        K, D = shift.shape
        per_feature = np.zeros((K, D))
        kern.accumulate_diag(X, resp, shift, nk, sums, per_feature)
        scatter += per_feature.sum(axis=1)


COVARIANCE_TYPES: dict[str, CovarianceType] = {
    c.name: c for c in (_Full(), _Tied(), _Diag(), _Spherical())
}


def get(covariance_type: str) -> CovarianceType:
    """Registry lookup; the estimator validates the name before this is reached."""
    return COVARIANCE_TYPES[covariance_type]
