"""Variational Bayes for a Gaussian mixture: priors, posterior (the M-step), E-step constants, lower bound.

scikit-learn 1.9's ``BayesianGaussianMixture`` (Bishop, PRML 10.2; Blei &
Jordan 2006 for the Dirichlet process) written on the engine's merged
statistics (shared/EM-NOTES.md, "Variational Bayes"):

* The E-step is the Gaussian kernel: with ``U_k`` the precision Cholesky
  factor of ``covariances_`` (``W_k^-1 / nu_k``), ``log rho_nk = c_k -
  |(x_n - m_k) U_k|^2 / 2`` with ``c_k = E[log pi_k] + log|U_k| - D/2 log
  2 pi - D/2 log nu_k + (D log 2 + sum_i psi((nu_k - i) / 2) - D / beta_k)
  / 2``.  :func:`kernel_params` passes ``c_k`` where the kernels take the
  log-weight constant, so the fused kernels do the pass.
* The M-step (:func:`posterior`) is a pure function of ``(N_k, x_k, S_k)``
  from the merged statistics (:func:`gmm_engine._params.gaussian_estimates`)
  and the prior, as scikit-learn's ``_m_step``.
* The lower bound (:func:`lower_bound`) needs the responsibilities' term
  ``sum_n w_n sum_k r_nk log r_nk``; :func:`sum_r_log_r` gets it from the
  statistics the kernels already return, with no change to them:
  ``sum_k r log r = sum_k r log rho_k - log p(x)`` per row, and summed over
  rows ``sum_nk r log rho = sum_k c_k N_k - <Q_k, U_k U_k^T> / 2`` because
  the scatter ``Q_k`` is accumulated around the same means ``m_k``.

The two weight priors are the small registry :data:`WEIGHT_PRIORS` (the
one place that branches on ``weight_concentration_prior_type``); what
differs between covariance types is in the covariance registry
(:mod:`gmm_engine._wishart`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from . import _covariance
from ._lazy import on_first_use
from ._params import GMMParams, gaussian_estimates
from ._stats import SufficientStatistics
from ._validation import check_init_array

special = on_first_use("scipy.special")

DIRICHLET_PROCESS = "dirichlet_process"
DIRICHLET_DISTRIBUTION = "dirichlet_distribution"


# ---------------------------------------------------------------------------
# the weight priors


class _StickBreaking:
    """Dirichlet process, truncated stick breaking: Beta(1 + N_k, gamma + sum_{j>k} N_j) per component."""

    name = DIRICHLET_PROCESS

    def concentration_shape(self, K):
        return (2, K)

    def concentration(self, nk, prior):
        return np.vstack((1.0 + nk, prior + np.hstack((np.cumsum(nk[::-1])[-2::-1], 0))))

    def weights(self, wc):
        a, b = wc
        total = a + b
        w = a / total * np.hstack((1, np.cumprod(b / total)[:-1]))
        return w / np.sum(w)

    def expected_log_weights(self, wc):
        a, b = wc
        digamma_sum = special.digamma(a + b)
        return special.digamma(a) - digamma_sum + np.hstack((0, np.cumsum(special.digamma(b) - digamma_sum)[:-1]))

    def log_norm(self, wc):
        return -np.sum(special.betaln(wc[0], wc[1]))

    def as_attribute(self, wc):
        # scikit-learn's weight_concentration_ is the pair of Beta parameters
        return (np.array(wc[0]), np.array(wc[1]))


class _Dirichlet:
    """Finite Dirichlet distribution: Dirichlet(gamma + N_k)."""

    name = DIRICHLET_DISTRIBUTION

    def concentration_shape(self, K):
        return (K,)

    def concentration(self, nk, prior):
        return prior + nk

    def weights(self, wc):
        return wc / np.sum(wc)

    def expected_log_weights(self, wc):
        return special.digamma(wc) - special.digamma(np.sum(wc))

    def log_norm(self, wc):
        return special.gammaln(np.sum(wc)) - np.sum(special.gammaln(wc))

    def as_attribute(self, wc):
        return np.array(wc)


WEIGHT_PRIORS = {p.name: p for p in (_StickBreaking(), _Dirichlet())}
#: ``weight_concentration_prior_type`` values, scikit-learn's default first
PRIOR_TYPES = tuple(WEIGHT_PRIORS)


# ---------------------------------------------------------------------------
# values


@dataclass(frozen=True, eq=False)
class VariationalPrior:
    """The resolved priors of one fit (scikit-learn's ``*_prior_`` attributes).

    Attributes
    ----------
    prior_type : {'dirichlet_process', 'dirichlet_distribution'}
    weight_concentration : float
        ``weight_concentration_prior_`` (gamma; default ``1 / K``).
    mean_precision : float
        ``mean_precision_prior_`` (beta_0; default 1).
    mean : ndarray of shape (D,)
        ``mean_prior_`` (default: the (weighted) mean of X).
    degrees_of_freedom : float
        ``degrees_of_freedom_prior_`` (nu_0; default D).
    covariance : ndarray or float
        ``covariance_prior_``, the registry's ``prior_shape`` (default:
        the covariance of X, its diagonal or its mean variance).
    """

    prior_type: str
    weight_concentration: float
    mean_precision: float
    mean: np.ndarray
    degrees_of_freedom: float
    covariance: object


@dataclass(frozen=True, eq=False)
class VariationalParams:
    """The variational posterior: what the E-step and every score need.

    Attributes
    ----------
    prior_type : str
    gaussian : GMMParams
        ``weights_`` (the posterior mean weights), ``means_``,
        ``covariances_`` (``W_k^-1 / nu_k``) and ``precisions_cholesky_``.
    weight_concentration : ndarray
        (2, K) Beta parameters (Dirichlet process) or (K,) Dirichlet ones.
    mean_precision : ndarray of shape (K,)
        beta_k.
    degrees_of_freedom : ndarray of shape (K,), or float (tied)
        nu_k.
    """

    prior_type: str
    gaussian: GMMParams
    weight_concentration: np.ndarray
    mean_precision: np.ndarray
    degrees_of_freedom: object

    @property
    def covariance_type(self) -> str:
        return self.gaussian.covariance_type

    @property
    def n_components(self) -> int:
        return self.gaussian.n_components

    @property
    def n_features(self) -> int:
        return self.gaussian.n_features


# ---------------------------------------------------------------------------
# priors


def check_prior_values(*, covariance_type, n_features, mean_prior, degrees_of_freedom_prior, covariance_prior):
    """The user's array and bounded priors, checked with scikit-learn's messages (no data read).

    Returns
    -------
    mean_prior, degrees_of_freedom_prior, covariance_prior
        Float64 arrays (or floats), None where the default is taken.
    """
    D = n_features
    if mean_prior is not None:
        mean_prior = check_init_array(mean_prior).astype(np.float64)
        if mean_prior.shape != (D,):
            raise ValueError(
                "The parameter 'means' should have the shape of %s, but got %s" % ((D,), mean_prior.shape)
            )
    if degrees_of_freedom_prior is not None and not degrees_of_freedom_prior > D - 1.0:
        raise ValueError(
            "The parameter 'degrees_of_freedom_prior' should be greater than %d, but got %.3f."
            % (D - 1, degrees_of_freedom_prior)
        )
    if covariance_prior is not None:
        prior = check_init_array(covariance_prior).astype(np.float64)
        covariance_prior = _covariance.get(covariance_type).check_covariance_prior(prior, D)
    return mean_prior, degrees_of_freedom_prior, covariance_prior


def resolve_prior(est, checked, D, summary, full_covariance) -> VariationalPrior:
    """The priors of a fit: the user's (``checked``) or scikit-learn's defaults from the data.

    Parameters
    ----------
    est : BayesianGaussianMixture
        Gives the prior type and the scalar priors.
    checked : tuple
        :func:`check_prior_values`' result.
    D : int
    summary : DataSummary
        The scan's (weighted) mean and squared deviations of X.
    full_covariance : callable
        ``() -> (D, D)``: the covariance of X (``np.cov(X.T)``), one pass;
        called only when the covariance type's default needs it.
    """
    mean_prior, dof_prior, cov_prior = checked
    K = est.n_components
    if cov_prior is None:
        if not summary.weight > 1:
            raise ValueError(
                "The default covariance_prior is the covariance of X with ddof=1 (sample weights count "
                f"as repeated rows), which needs a total weight above 1; the sample weights sum to "
                f"{float(summary.weight):.6g}. Pass covariance_prior, or weights that count rows."
            )
        variance = summary.m2 / (summary.weight - 1.0)  # np.var(X, axis=0, ddof=1)
        cov_prior = _covariance.get(est.covariance_type).default_covariance_prior(variance, full_covariance)
    return VariationalPrior(
        prior_type=est.weight_concentration_prior_type,
        weight_concentration=1.0 / K if est.weight_concentration_prior is None else float(est.weight_concentration_prior),
        mean_precision=1.0 if est.mean_precision_prior is None else float(est.mean_precision_prior),
        mean=np.array(summary.mean, dtype=np.float64) if mean_prior is None else mean_prior,
        degrees_of_freedom=D if dof_prior is None else float(dof_prior),
        covariance=cov_prior,
    )


def total_covariance_chunk(block, start, shift, weights=None):
    """Sum and scatter of all rows around ``shift`` (1, D): the statistics of ``np.cov(X.T)``."""
    resp = np.ones((block.shape[0], 1))
    return SufficientStatistics.from_resp(block, resp, shift, _covariance.FULL, weights)


def covariance_of(stats: SufficientStatistics) -> np.ndarray:
    """``np.cov(X.T)`` (``ddof=1``; weights count as repeated rows) from :func:`total_covariance_chunk`'s totals."""
    W = stats.sum_weights
    s = stats.sums[0]
    cov = (stats.scatter[0] - np.outer(s, s) / W) / (W - 1.0)
    return 0.5 * (cov + cov.T)


# ---------------------------------------------------------------------------
# the M-step, the E-step constants and the lower bound


def posterior(nk, xk, sk, prior: VariationalPrior, covariance_type: str) -> VariationalParams:
    """The variational posterior from ``(N_k, x_k, S_k)`` (scikit-learn's ``_m_step`` / ``_initialize``).

    Raises
    ------
    ComponentCollapseError
        A posterior covariance is not positive definite (scikit-learn's message).
    """
    wp = WEIGHT_PRIORS[prior.prior_type]
    cov = _covariance.get(covariance_type)
    wc = wp.concentration(nk, prior.weight_concentration)
    beta = prior.mean_precision + nk
    means = (prior.mean_precision * prior.mean + nk[:, None] * xk) / beta[:, None]
    dof, covariances = cov.wishart_posterior(nk, xk, sk, prior, beta)
    gaussian = GMMParams(covariance_type, wp.weights(wc), means, covariances, cov.precision_cholesky(covariances))
    return VariationalParams(prior.prior_type, gaussian, wc, beta, dof)


def m_step(stats: SufficientStatistics, reg_covar: float, prior: VariationalPrior) -> VariationalParams:
    """The posterior from the merged statistics of an E-step pass."""
    nk, xk, sk = gaussian_estimates(stats, reg_covar)
    return posterior(nk, xk, sk, prior, stats.covariance_type)


def _dof(vp: VariationalParams) -> np.ndarray:
    return np.broadcast_to(np.asarray(vp.degrees_of_freedom, dtype=np.float64), (vp.n_components,))


def kernel_params(vp: VariationalParams):
    """The kernels' parameters for the variational E-step: the Gaussian layout with ``logc = c_k``.

    Scoring with them gives scikit-learn's ``_estimate_weighted_log_prob``
    (``score_samples`` is its log-sum-exp, ``predict_proba`` its softmax).
    """
    g = vp.gaussian
    cov = _covariance.get(g.covariance_type)
    D = g.n_features
    with np.errstate(divide="ignore"):  # a weight that underflowed: its log is replaced below
        kp = g.kernel_params()
    nu = _dof(vp)
    log_lambda = D * math.log(2.0) + np.sum(special.digamma(0.5 * (nu - np.arange(D)[:, None])), 0)
    logc = (
        WEIGHT_PRIORS[vp.prior_type].expected_log_weights(vp.weight_concentration)
        + cov.log_det(g.precisions_cholesky, D)
        - 0.5 * D * _covariance.LOG_2PI
        - 0.5 * D * np.log(nu)
        + 0.5 * (log_lambda - D / vp.mean_precision)
    )
    return dataclasses.replace(kp, logc=np.ascontiguousarray(logc, dtype=np.float64))


def sum_r_log_r(stats: SufficientStatistics, kp, precisions) -> float:
    """``sum_n w_n sum_k r_nk log r_nk`` of the pass that gave ``stats`` under ``kp``.

    ``precisions`` are those of the parameters ``kp`` was built from
    (``GMMParams.precisions``); ``stats`` must be around ``kp.means``, as
    E-step statistics are.  Per row ``sum_k r log r = sum_k r log rho_k -
    log p(x)``; summed over rows the first term is ``sum_k c_k N_k`` minus
    half of ``sum_k <Q_k, U_k U_k^T>`` (full: per component; tied: the
    pooled scatter; diag: per feature; spherical: the trace times the
    precision), so no per-row value is needed.
    """
    quadratic = float(np.sum(stats.scatter * precisions))
    return float(np.dot(kp.logc, stats.nk)) - 0.5 * quadratic - stats.loglik


def lower_bound(vp: VariationalParams, r_log_r: float) -> float:
    """scikit-learn's ``_compute_lower_bound`` (constants dropped as it drops them).

    Parameters
    ----------
    vp : VariationalParams
        After the M-step.
    r_log_r : float
        :func:`sum_r_log_r` of the E-step that led to it.
    """
    g = vp.gaussian
    D, K = g.n_features, g.n_components
    nu = _dof(vp)
    log_det = np.broadcast_to(_covariance.get(g.covariance_type).log_det(g.precisions_cholesky, D), (K,))
    log_det = log_det - 0.5 * D * np.log(nu)
    log_wishart = -(
        nu * log_det + nu * D * 0.5 * math.log(2.0)
        + np.sum(special.gammaln(0.5 * (nu - np.arange(D)[:, None])), 0)
    )
    return float(
        -r_log_r
        - np.sum(log_wishart)
        - WEIGHT_PRIORS[vp.prior_type].log_norm(vp.weight_concentration)
        - 0.5 * D * np.sum(np.log(vp.mean_precision))
    )
