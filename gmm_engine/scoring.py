"""Per-row scoring in one pass: log-likelihood, best component, its responsibility.

``GaussianMixture.score_samples``, ``predict`` and ``predict_proba`` each
recompute the weighted log-probabilities; scoring a partition needs all
three, so :func:`score_rows` derives them from one evaluation per chunk
(:func:`gmm_engine._blocks.rows_block`), on the same validated input and
checked fitted parameters as the estimator's own methods.
"""

from __future__ import annotations

import numpy as np

from ._blocks import COMPONENT, LOG_LIKELIHOOD, RESPONSIBILITY, map_rows, rows_block
from ._fitted import fitted_params
from ._input import scoring_input

__all__ = ["score_rows", "LOG_LIKELIHOOD", "COMPONENT", "RESPONSIBILITY"]


def score_rows(model, X, *, in_memory=False):
    """Log-likelihood, most likely component and its responsibility of every row.

    Parameters
    ----------
    model : GaussianMixture
        Fitted.
    X : array-like, dask array, zarr array or path of a Zarr array, \
of shape (n_samples, n_features)
    in_memory : bool
        Read a Zarr or dask ``X`` into memory and score it on local threads,
        returning NumPy arrays: for small inputs, whose Dask graph costs more
        than their arithmetic.  Feature names are checked as for lazy input.

    Returns
    -------
    log_likelihood : ndarray or dask array of shape (n_samples,), float64
    component : ndarray or dask array of shape (n_samples,), int64
    responsibility : ndarray or dask array of shape (n_samples,), float64
        Lazy dask arrays (sharing one evaluation per chunk) for lazy input.
    """
    X, lazy = scoring_input(X, model, in_memory=in_memory)
    kp = fitted_params(model, covariances=False).kernel_params()
    out = map_rows(rows_block, X, kp, lazy=lazy, width=3)
    return (
        out[:, LOG_LIKELIHOOD],
        out[:, COMPONENT].astype(np.int64),
        out[:, RESPONSIBILITY],
    )
