"""The Wishart part of variational Bayes, per covariance type (mixed into the registry entries).

``BayesianGaussianMixture`` puts a Gaussian-Wishart prior on every
component; what differs between covariance types is the shape of the
Wishart's scale (the ``covariance_prior``), whether one Wishart is shared
(``tied``) and its posterior update.  Each class here is a mixin of the
matching entry of :mod:`gmm_engine._covariance` (the one place that
branches on a covariance type), so the variational code reaches it as
``_covariance.get(covariance_type).wishart_posterior(...)``.  The formulas
and messages are scikit-learn 1.9's ``_estimate_wishart_*`` and
``_checkcovariance_prior_parameter``; like scikit-learn, the stored
"covariances" are the Wishart scales divided by the degrees of freedom,
``W_k^-1 / nu_k``.

Shapes, with K components and D features:

=========  ================  ==================  =================
type       covariance_prior  degrees_of_freedom  covariances_
=========  ================  ==================  =================
full       (D, D)            (K,)                (K, D, D)
tied       (D, D)            () one, shared      (D, D)
diag       (D,)              (K,)                (K, D)
spherical  () a float        (K,)                (K,)
=========  ================  ==================  =================

This module imports only NumPy: the registry's names stay cheap to import.
"""

from __future__ import annotations

import numpy as np


def _check_prior_shape(prior, shape, covariance_type):
    if prior.shape != shape:
        raise ValueError(
            "The parameter '%s covariance_prior' should have the shape of %s, but got %s"
            % (covariance_type, shape, prior.shape)
        )


class _WishartBase:
    """What every covariance type's Wishart answers; see the module docstring for shapes."""

    def prior_shape(self, D: int) -> tuple:
        raise NotImplementedError  # pragma: no cover - abstract

    def dof_shape(self, K: int) -> tuple:
        """Shape of ``degrees_of_freedom_``: one per component, or () when shared."""
        return (K,)

    def default_covariance_prior(self, variance, full_covariance):
        """scikit-learn's default ``covariance_prior_`` from the data.

        Parameters
        ----------
        variance : ndarray of shape (D,)
            Per-feature variance with ``ddof=1`` (``np.var(X, 0, ddof=1)``).
        full_covariance : callable
            ``full_covariance() -> (D, D)`` ``np.cov(X.T)``; called only by
            the types that need it (it costs a pass over the data).
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def check_covariance_prior(self, prior, D: int):
        """A user ``covariance_prior`` (already a finite float array), checked with scikit-learn's messages."""
        raise NotImplementedError  # pragma: no cover - abstract

    def wishart_posterior(self, nk, xk, sk, prior, mean_precision):
        """``(degrees_of_freedom, covariances)`` of the posterior Wishart (scikit-learn's formulas).

        Parameters
        ----------
        nk : ndarray of shape (K,)
            Soft counts (with scikit-learn's ``10 eps``).
        xk : ndarray of shape (K, D)
            Responsibility-weighted means of the data.
        sk : ndarray
            Their covariances (``reg_covar`` included), of this type's shape.
        prior : VariationalPrior
            ``mean``, ``mean_precision``, ``degrees_of_freedom``, ``covariance``.
        mean_precision : ndarray of shape (K,)
            The posterior ``mean_precision_`` (``beta_k``).
        """
        raise NotImplementedError  # pragma: no cover - abstract


class FullWishart(_WishartBase):
    def prior_shape(self, D):
        return (D, D)

    def default_covariance_prior(self, variance, full_covariance):
        return np.atleast_2d(full_covariance())

    def check_covariance_prior(self, prior, D):
        _check_prior_shape(prior, (D, D), self.name)
        self._check_precision_values(prior[None])  # scikit-learn's 'full precision' message
        return prior

    def wishart_posterior(self, nk, xk, sk, prior, mean_precision):
        dof = prior.degrees_of_freedom + nk
        diff = xk - prior.mean
        scale = nk * prior.mean_precision / mean_precision
        cov = (
            prior.covariance
            + nk[:, None, None] * sk
            + scale[:, None, None] * (diff[:, :, None] * diff[:, None, :])
        )
        return dof, cov / dof[:, None, None]


class TiedWishart(_WishartBase):
    def prior_shape(self, D):
        return (D, D)

    def dof_shape(self, K):
        return ()

    def default_covariance_prior(self, variance, full_covariance):
        return np.atleast_2d(full_covariance())

    def check_covariance_prior(self, prior, D):
        _check_prior_shape(prior, (D, D), self.name)
        self._check_precision_values(prior)
        return prior

    def wishart_posterior(self, nk, xk, sk, prior, mean_precision):
        K = nk.shape[0]
        dof = prior.degrees_of_freedom + nk.sum() / K
        diff = xk - prior.mean
        cov = (
            prior.covariance
            + sk * nk.sum() / K
            + prior.mean_precision / K * np.dot((nk / mean_precision) * diff.T, diff)
        )
        return float(dof), cov / dof


class DiagWishart(_WishartBase):
    def prior_shape(self, D):
        return (D,)

    def default_covariance_prior(self, variance, full_covariance):
        return np.array(variance, dtype=np.float64)

    def check_covariance_prior(self, prior, D):
        _check_prior_shape(prior, (D,), self.name)
        self._check_precision_values(prior)  # scikit-learn's 'diag precision' message
        return prior

    def wishart_posterior(self, nk, xk, sk, prior, mean_precision):
        dof = prior.degrees_of_freedom + nk
        diff = xk - prior.mean
        cov = prior.covariance + nk[:, None] * (sk + (prior.mean_precision / mean_precision)[:, None] * np.square(diff))
        return dof, cov / dof[:, None]


class SphericalWishart(_WishartBase):
    def prior_shape(self, D):
        return ()

    def default_covariance_prior(self, variance, full_covariance):
        return float(np.mean(variance))

    def check_covariance_prior(self, prior, D):
        # scikit-learn takes a float here; an array of another shape would
        # broadcast into wrong covariances, so it is refused
        _check_prior_shape(prior, (), self.name)
        self._check_precision_values(prior)
        return float(prior)

    def wishart_posterior(self, nk, xk, sk, prior, mean_precision):
        dof = prior.degrees_of_freedom + nk
        diff = xk - prior.mean
        cov = prior.covariance + nk * (sk + prior.mean_precision / mean_precision * np.mean(np.square(diff), 1))
        return dof, cov / dof
