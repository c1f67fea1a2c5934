"""Per-row scoring in one pass: log-likelihood, best component, its responsibility.

``GaussianMixture.score_samples``, ``predict`` and ``predict_proba`` each
recompute the weighted log-probabilities; scoring a partition needs all
three, so :func:`score_rows` derives them from one evaluation per chunk.
"""

from __future__ import annotations

import functools

import numpy as np

from .mixture import _block_start, _logsumexp_rows, _map_rows_numpy, _weighted_log_prob

#: columns of the (n, 3) array a scoring block produces
LOG_LIKELIHOOD, COMPONENT, RESPONSIBILITY = 0, 1, 2


def _rows_block(block, kp, block_info=None, checked=False):
    wlp = _weighted_log_prob(block, kp, _block_start(block_info), checked)
    lse = _logsumexp_rows(wlp)
    best = np.argmax(wlp, axis=1)
    out = np.empty((block.shape[0], 3))
    out[:, LOG_LIKELIHOOD] = lse
    out[:, COMPONENT] = best
    with np.errstate(under="ignore"):
        out[:, RESPONSIBILITY] = np.exp(wlp[np.arange(block.shape[0]), best] - lse)
    return out


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
    X, lazy = model._prepare(X, in_memory=in_memory)
    kp = model._params(covariances=False).kernel_params()
    if lazy:
        import dask

        node = dask.delayed(kp, pure=True, traverse=False)
        out = X.map_blocks(_rows_block, node, chunks=(X.chunks[0], (3,)), dtype=np.float64)
    else:
        # in-memory X was checked for NaN and inf by model._prepare
        out = _map_rows_numpy(functools.partial(_rows_block, checked=True), X, kp,
                              np.empty((X.shape[0], 3)))
    return (
        out[:, LOG_LIKELIHOOD],
        out[:, COMPONENT].astype(np.int64),
        out[:, RESPONSIBILITY],
    )
