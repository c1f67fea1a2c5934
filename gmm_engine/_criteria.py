"""Information criteria: what model selection compares, from one pass over the data.

``GaussianMixture.information_criteria(X)`` scores X once and returns the
total log-likelihood with the row count and the parameter count the
criteria charge; BIC and AIC follow from those three numbers, so a
caller never recomputes them (nor counts parameters) by hand.  With
``sample_weight`` the log-likelihood is weighted and BIC's effective
number of samples is the sum of the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class InformationCriteria:
    """What model selection compares, from one pass over the data.

    Attributes
    ----------
    loglik : float
        Total (weighted) log-likelihood of the data under the model.
    n_samples : int
        Rows.
    n_parameters : int
    bic, aic : float
        ``-2 loglik + p ln N`` and ``-2 loglik + 2 p``; lower is better.
    sum_weights : float or None
        The sum of the row weights, BIC's ``N`` (None without weights:
        ``N`` is ``n_samples``).
    """

    loglik: float
    n_samples: int
    n_parameters: int
    bic: float
    aic: float
    sum_weights: float | None = None

    @property
    def effective_n_samples(self) -> float:
        """BIC's ``N``: the rows, or the sum of their weights."""
        return self.n_samples if self.sum_weights is None else self.sum_weights

    @property
    def mean_loglik(self) -> float:
        return self.loglik / self.effective_n_samples

    @classmethod
    def of(cls, loglik: float, n_samples: int, n_parameters: int, sum_weights=None) -> "InformationCriteria":
        N = n_samples if sum_weights is None else float(sum_weights)
        return cls(float(loglik), int(n_samples), int(n_parameters),
                   -2.0 * loglik + n_parameters * math.log(N), -2.0 * loglik + 2.0 * n_parameters,
                   None if sum_weights is None else float(sum_weights))
