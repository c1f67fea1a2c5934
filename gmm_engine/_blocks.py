"""Per-block scoring: the functions prediction maps over the rows of its input.

Every function here takes one block of rows (a NumPy array from either
backend) and the kernel parameters, and returns one value per row:

==================  =======================  ==============================
function            output per block         used by
==================  =======================  ==============================
``score_block``     (n,) log p(x)            ``score_samples``, ``score``
``predict_block``   (n,) int64 component     ``predict``
``proba_block``     (n, K) responsibilities  ``predict_proba``
``rows_block``      (n, 3) the three above   ``scoring.score_rows``
==================  =======================  ==============================

``score_block`` and ``predict_block`` use the fused kernels, which never
materialise the (n, K) log-probabilities; so does ``rows_block``, through
the E-step kernel's per-row output, wherever that is faster than the
log-probabilities and NumPy's log-sum-exp (every type up to
``fused_rows_max_features`` features, see the registry; score_rows
measured 1.5-3.8x faster at D = 4 and 16, its log-likelihoods now equal
to ``score_samples``' bit for bit, responsibilities to 1e-14).  The block functions take
``checked=True`` for in-memory input, which ``check_numpy`` has already
scanned for NaN and inf; a dask block is seen here for the first time and
is checked, its bad rows reported with their global positions.

:func:`map_rows` applies a block function to a whole input: lazily with
``map_blocks`` for a dask array, on local threads for a NumPy array.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _covariance
from ._chunked import NUMPY_BLOCK_ROWS, n_threads
from ._stats import SufficientStatistics
from ._validation import non_finite_message
from .exceptions import DataValidationError

#: columns of the (n, 3) array :func:`rows_block` produces
LOG_LIKELIHOOD, COMPONENT, RESPONSIBILITY = 0, 1, 2


def check_block_finite(block, start):
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        # Lazy scoring sees one chunk at a time: report that chunk's bad rows
        # with their global positions.
        bad = np.flatnonzero(~finite)
        nan_rows = np.isnan(block[bad]).any(axis=1)
        n = block.shape[0]
        raise DataValidationError(
            non_finite_message(
                int(nan_rows.sum()), int((~nan_rows).sum()), n,
                (start + bad[:10]).tolist(), dtype=block.dtype,
                scope=f"the chunk at rows {start} to {start + n - 1}",
            )
        )


def _block_start(block_info):
    return block_info[0]["array-location"][0][0] if block_info else 0


def logsumexp_rows(wlp):
    """``log(sum(exp(wlp), axis=1))``, shifted by the row maximum; -inf for all -inf rows."""
    m = wlp.max(axis=1)
    finite = np.isfinite(m)
    shift = np.where(finite, m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(wlp - shift[:, None]).sum(axis=1)) + shift


def _weighted_log_prob(block, kp, block_info, checked):
    if not checked:
        check_block_finite(block, _block_start(block_info))
    out = np.empty((block.shape[0], kp.n_components))
    _covariance.get(kp.covariance_type).weighted_log_prob(block, kp, out)
    return out


def score_block(block, kp, block_info=None, checked=False):
    if not checked:
        check_block_finite(block, _block_start(block_info))
    out = np.empty(block.shape[0])
    _covariance.get(kp.covariance_type).score_samples(block, kp, out)
    return out


def predict_block(block, kp, block_info=None, checked=False):
    if not checked:
        check_block_finite(block, _block_start(block_info))
    out = np.empty(block.shape[0], dtype=np.int64)
    _covariance.get(kp.covariance_type).predict(block, kp, out)
    return out


def proba_block(block, kp, block_info=None, checked=False):
    wlp = _weighted_log_prob(block, kp, block_info, checked)
    with np.errstate(under="ignore"):
        return np.exp(wlp - logsumexp_rows(wlp)[:, None])


def rows_block(block, kp, block_info=None, checked=False):
    """Log-likelihood, most likely component and its responsibility, from one evaluation."""
    cov = _covariance.get(kp.covariance_type)
    if kp.n_features <= cov.fused_rows_max_features:
        if not checked:
            check_block_finite(block, _block_start(block_info))
        out = np.empty((block.shape[0], 3))
        # the statistics it also accumulates are dropped: cheaper than the (n, K) route
        SufficientStatistics.from_estep(block, kp, rows=out)
        return out
    wlp = _weighted_log_prob(block, kp, block_info, checked)
    lse = logsumexp_rows(wlp)
    best = np.argmax(wlp, axis=1)
    out = np.empty((block.shape[0], 3))
    out[:, LOG_LIKELIHOOD] = lse
    out[:, COMPONENT] = best
    with np.errstate(under="ignore"):
        out[:, RESPONSIBILITY] = np.exp(wlp[np.arange(block.shape[0]), best] - lse)
    return out


def _map_rows_numpy(fn, X, kp, out):
    """Apply a block function over an in-memory array on local threads."""
    starts = range(0, X.shape[0], NUMPY_BLOCK_ROWS)

    def run(s):
        info = {0: {"array-location": [(s, min(s + NUMPY_BLOCK_ROWS, X.shape[0]))]}}
        out[s : s + NUMPY_BLOCK_ROWS] = fn(X[s : s + NUMPY_BLOCK_ROWS], kp, block_info=info)

    if len(starts) <= 1:
        for s in starts:
            run(s)
    else:
        with ThreadPoolExecutor(min(n_threads(), len(starts))) as pool:
            list(pool.map(run, starts))
    return out


def map_rows(fn, X, kp, *, lazy, width=None, dtype=np.float64):
    """``fn`` over the row blocks of X: one value per row, or ``width`` per row.

    Parameters
    ----------
    fn : block function of this module
    X : dask array (``lazy``) or ndarray of shape (n, D), validated
    kp : KernelParams
    lazy : bool
        X is a dask array: return a lazy dask array chunked like its rows
        (``kp`` enters the graph once).  Otherwise X was checked for NaN
        and inf, and the result is an ndarray.
    width : int, optional
        Columns of the output, or None for shape (n,).
    dtype : numpy dtype

    Returns
    -------
    ndarray or dask array of shape (n,) or (n, width)
    """
    if lazy:
        import dask

        node = dask.delayed(kp, pure=True, traverse=False)
        if width is None:
            return X.map_blocks(fn, node, drop_axis=1, dtype=dtype)
        return X.map_blocks(fn, node, chunks=(X.chunks[0], (width,)), dtype=dtype)
    shape = (X.shape[0],) if width is None else (X.shape[0], width)
    return _map_rows_numpy(functools.partial(fn, checked=True), X, kp, np.empty(shape, dtype=dtype))
