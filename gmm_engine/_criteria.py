"""Information criteria: what model selection compares, from one pass over the data.

``GaussianMixture.information_criteria(X)`` scores X once and returns the
total log-likelihood with the row count and the parameter count the
criteria charge; BIC and AIC follow from those three numbers, so a
caller never recomputes them (nor counts parameters) by hand.
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
