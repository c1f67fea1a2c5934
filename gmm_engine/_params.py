"""Mixture parameters and the M-step, a pure function of merged statistics."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import _covariance
from ._missing import MarginalParams
from ._stats import SuffStats

# scikit-learn adds 10 machine epsilons to every soft count so that an empty
# component divides by a tiny number instead of zero.
_NK_EPS = 10 * np.finfo(np.float64).eps


@dataclass(frozen=True, eq=False)
class GMMParams:
    """Weights, means, covariances and precision Cholesky factors.

    Attributes
    ----------
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    covariances : ndarray
        Shape set by ``covariance_type`` (see ``_covariance``).
    precisions_cholesky : ndarray
        Same shape as ``covariances``.
    """

    covariance_type: str
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    @property
    def precisions(self) -> np.ndarray:
        return _covariance.get(self.covariance_type).precisions(self.precisions_cholesky)

    def kernel_params(self, missing: bool = False):
        """The compact form the chunk kernels consume, built once per pass.

        ``missing=True`` adds what marginalising NaN entries needs
        (``KernelParams.marginal``); the chunk functions then accept rows
        with missing features.
        """
        cov = _covariance.get(self.covariance_type)
        kp = cov.kernel_params(
            np.ascontiguousarray(self.weights, dtype=np.float64),
            np.ascontiguousarray(self.means, dtype=np.float64),
            np.asarray(self.precisions_cholesky, dtype=np.float64),
        )
        if not missing:
            return kp
        marginal = MarginalParams.of(self.covariance_type, self.weights, self.means, self.precisions_cholesky)
        return dataclasses.replace(kp, marginal=marginal)

    def n_parameters(self) -> int:
        return _covariance.get(self.covariance_type).n_parameters(
            self.n_components, self.n_features
        )

    @classmethod
    def from_precisions_cholesky(cls, covariance_type, weights, means, precisions_cholesky):
        cov = _covariance.get(covariance_type)
        return cls(
            covariance_type,
            np.asarray(weights, dtype=np.float64),
            np.asarray(means, dtype=np.float64),
            cov.covariances_from_precision_cholesky(precisions_cholesky),
            np.asarray(precisions_cholesky, dtype=np.float64),
        )


def gaussian_estimates(stats: SuffStats, reg_covar: float):
    """scikit-learn's ``_estimate_gaussian_parameters`` from merged statistics: ``(nk, means, covariances)``.

    ``nk`` (K,) are the soft counts plus ``10 eps``, ``means`` (K, D) the
    responsibility-weighted means and ``covariances`` (the type's shape)
    the weighted covariances around them plus ``reg_covar``; no Cholesky
    factor is taken (the variational M-step adds its prior first).
    """
    nk = stats.nk + _NK_EPS
    d = stats.sums / nk[:, None]
    return nk, stats.shift + d, _covariance.get(stats.covariance_type).covariances(nk, d, stats.scatter, reg_covar)


def m_step(stats: SuffStats, reg_covar: float, n_samples: int | None = None) -> GMMParams:
    """Parameters maximising the expected log-likelihood of merged statistics.

    Parameters
    ----------
    stats : SuffStats
        Totals over the whole data set.
    reg_covar : float
        Added to the diagonal of every covariance.
    n_samples : int, optional
        When given, weights are ``nk / n_samples`` (scikit-learn's
        initialisation from responsibilities); otherwise ``nk / sum(nk)``.

    Returns
    -------
    GMMParams

    Raises
    ------
    ComponentCollapseError
        When a covariance is not positive definite; the message names
        ``reg_covar``.
    """
    cov = _covariance.get(stats.covariance_type)
    nk, means, covariances = gaussian_estimates(stats, reg_covar)
    weights = nk / (n_samples if n_samples is not None else nk.sum())
    return GMMParams(
        stats.covariance_type,
        weights,
        means,
        covariances,
        cov.precision_cholesky(covariances),
    )
