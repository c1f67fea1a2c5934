"""What a fitted mixture says about rows: scores, labels, posteriors, criteria, draws.

:class:`Prediction` is the part of ``GaussianMixture`` that reads the
fitted parameters (through :func:`~gmm_engine._fitted.fitted_params`,
checked) and never changes them; its base :class:`Scoring` (scores,
labels, posteriors, draws, without the information criteria) is also
``BayesianGaussianMixture``'s.  Per-row outputs map a block function of
:mod:`gmm_engine._blocks` over X (lazily for dask input); weighted totals
(``sample_weight``) are one pass of :func:`~gmm_engine._stats.loglik_chunk`
that also checks lazy X and weights.
"""

from __future__ import annotations

import numpy as np

from . import _covariance
from ._blocks import map_rows, predict_block, proba_block, score_block
from ._criteria import InformationCriteria
from ._fitted import fitted_params
from ._input import fitted_data, scoring_input
from ._missing import marginalizes
from ._stats import loglik_chunk, refuse_bad_rows
from ._validation import check_is_fitted, check_random_state


class Scoring:
    """Scoring, prediction and sampling of a fitted mixture (scikit-learn's ``BaseMixture`` methods).

    The rows are scored with :meth:`_kernel_params`: the fitted Gaussian
    mixture's here; ``BayesianGaussianMixture`` overrides it with its
    variational constants.
    """

    def _kernel_params(self):
        """The kernels' parameters every score of this model is computed with (checked fitted arrays)."""
        return fitted_params(self, covariances=False).kernel_params(missing=marginalizes(self))

    def _apply(self, fn, X, per_component=False, dtype=np.float64):
        """fn over the rows of X: one value per row, or one per row and component."""
        X, lazy = scoring_input(X, self)
        kp = self._kernel_params()
        # the fitted component count, whatever n_components says now
        width = kp.n_components if per_component else None
        return map_rows(fn, X, kp, lazy=lazy, width=width, dtype=dtype)

    def score_samples(self, X):
        """Log-likelihood of every row under the model.

        Returns
        -------
        log_prob : ndarray of shape (n_samples,), or a lazy dask array for dask input
        """
        return self._apply(score_block, X)

    def predict(self, X):
        """Most likely component of every row.

        Returns
        -------
        labels : ndarray of shape (n_samples,), or a lazy dask array for dask input
        """
        return self._apply(predict_block, X, dtype=np.int64)

    def predict_proba(self, X):
        """Posterior probability of every component for every row.

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components), or a lazy dask array
        """
        return self._apply(proba_block, X, per_component=True)

    def score(self, X, y=None, sample_weight=None):
        """Mean log-likelihood of the rows of X (computed, also for dask input).

        With ``sample_weight`` (forms as for :meth:`fit`): the weighted
        mean, ``sum w log p(x) / sum w``.
        """
        if sample_weight is not None:
            loglik, total, _ = self._weighted_total(X, sample_weight)
            return loglik / total
        return self._total_score(X)[0]

    def _total_score(self, X):
        """(mean log-likelihood, row count) of X, from one evaluation."""
        s = self.score_samples(X)
        mean = s.mean().compute() if hasattr(s, "compute") else s.mean()
        return float(mean), int(s.shape[0])

    def _weighted_total(self, X, sample_weight):
        """(sum w log p(x), sum w, rows) of X, from one pass that also checks lazy X and weights."""
        data = fitted_data(X, self, sample_weight=sample_weight)
        kp = self._kernel_params()
        total = data.map_reduce(loglik_chunk, kp, not data.values_checked)
        if total.checks is not None:
            refuse_bad_rows(total.checks, data)
        return total.loglik, total.sum_weights, data.n_samples

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
        params = fitted_params(self)
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, params.weights)
        X = _covariance.get(params.covariance_type).sample(rng, params.means, params.covariances, counts)
        y = np.concatenate([np.full(int(c), k, dtype=np.int64) for k, c in enumerate(counts)])
        return X, y


class Prediction(Scoring):
    """:class:`Scoring` and the information criteria of a fitted Gaussian mixture (``GaussianMixture``'s extras)."""

    def n_parameters(self) -> int:
        """Free parameters of the fitted model: ``(K - 1) + K D`` plus the covariances'.

        The count BIC and AIC charge; scikit-learn's private ``_n_parameters``.
        """
        return fitted_params(self, covariances=False).n_parameters()

    # scikit-learn's name, for code written against it
    _n_parameters = n_parameters

    def information_criteria(self, X, sample_weight=None) -> InformationCriteria:
        """Log-likelihood, BIC and AIC of X from one pass over it.

        With ``sample_weight`` the log-likelihood is weighted and BIC's
        ``ln N`` takes the sum of the weights.

        Returns
        -------
        InformationCriteria
        """
        if sample_weight is not None:
            loglik, total, n = self._weighted_total(X, sample_weight)
            return InformationCriteria.of(loglik, n, self.n_parameters(), sum_weights=total)
        score, n = self._total_score(X)
        return InformationCriteria.of(score * n, n, self.n_parameters())

    def bic(self, X, sample_weight=None):
        """Bayesian information criterion on X (weighted, see :meth:`information_criteria`); lower is better."""
        return self.information_criteria(X, sample_weight).bic

    def aic(self, X, sample_weight=None):
        """Akaike information criterion on X (weighted, see :meth:`information_criteria`); lower is better."""
        return self.information_criteria(X, sample_weight).aic
