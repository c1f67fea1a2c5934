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
                    (n, 4) with observed     ``score_rows(n_observed=True)``
                    features counted
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
is checked, its bad rows reported with their global positions.  With
``kp.marginal`` set (``missing='marginalize'``) NaN entries are
marginalised (:func:`gmm_engine._missing.kernels`) and the checks refuse
only the rows that cannot be.

:func:`map_rows` applies a block function to a whole input: lazily with
``map_blocks`` for a dask array, on local threads for a NumPy array.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _missing
from ._chunked import NUMPY_BLOCK_ROWS, n_threads
from ._stats import SufficientStatistics
from ._validation import missing_value_rows, non_finite_message, unusable_rows_message
from .exceptions import DataValidationError

#: columns of the (n, 3) array :func:`rows_block` produces (and the fourth with ``observed``)
LOG_LIKELIHOOD, COMPONENT, RESPONSIBILITY, N_OBSERVED = 0, 1, 2, 3


def _check_block_usable(block, start, finite):
    """Refuse the rows of a block that cannot be marginalised, with their global positions."""
    candidates = np.flatnonzero(~finite)
    inf_rows, empty_rows = missing_value_rows(block[candidates])
    bad = candidates[inf_rows | empty_rows]
    if bad.size:
        n = block.shape[0]
        raise DataValidationError(
            unusable_rows_message(
                int(inf_rows.sum()), int(empty_rows.sum()), n, (start + bad[:10]).tolist(), dtype=block.dtype,
                scope=f"the chunk at rows {start} to {start + n - 1}",
            )
        )


def check_block_finite(block, start, missing=False):
    """Refuse a block's rows with NaN or inf; with ``missing``, only those that cannot be marginalised."""
    finite = np.isfinite(block).all(axis=1)
    if missing and not finite.all():
        _check_block_usable(block, start, finite)
    elif not finite.all():
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


def _check(block, kp, block_info, checked):
    if not checked:
        check_block_finite(block, _block_start(block_info), missing=kp.marginal is not None)


def _weighted_log_prob(block, kp, block_info, checked):
    _check(block, kp, block_info, checked)
    out = np.empty((block.shape[0], kp.n_components))
    _missing.kernels(kp).weighted_log_prob(block, kp, out)
    return out


def score_block(block, kp, block_info=None, checked=False):
    _check(block, kp, block_info, checked)
    out = np.empty(block.shape[0])
    _missing.kernels(kp).score_samples(block, kp, out)
    return out


def predict_block(block, kp, block_info=None, checked=False):
    _check(block, kp, block_info, checked)
    out = np.empty(block.shape[0], dtype=np.int64)
    _missing.kernels(kp).predict(block, kp, out)
    return out


def proba_block(block, kp, block_info=None, checked=False):
    wlp = _weighted_log_prob(block, kp, block_info, checked)
    with np.errstate(under="ignore"):
        return np.exp(wlp - logsumexp_rows(wlp)[:, None])


def rows_block(block, kp, block_info=None, checked=False, observed=False):
    """Log-likelihood, most likely component and its responsibility, from one evaluation.

    ``observed=True`` adds a fourth column: the features of each row that
    are not NaN (all of them without missing values).
    """
    cov = _missing.kernels(kp)
    out = np.empty((block.shape[0], 4 if observed else 3))
    if kp.n_features <= cov.fused_rows_max_features:
        _check(block, kp, block_info, checked)
        rows = out if not observed else np.empty((block.shape[0], 3))
        # the statistics it also accumulates are dropped: cheaper than the (n, K) route
        SufficientStatistics.from_estep(block, kp, rows=rows)
        if observed:
            out[:, :3] = rows
    else:
        wlp = _weighted_log_prob(block, kp, block_info, checked)
        lse = logsumexp_rows(wlp)
        best = np.argmax(wlp, axis=1)
        out[:, LOG_LIKELIHOOD] = lse
        out[:, COMPONENT] = best
        with np.errstate(under="ignore"):
            out[:, RESPONSIBILITY] = np.exp(wlp[np.arange(block.shape[0]), best] - lse)
    if observed:
        out[:, N_OBSERVED] = _missing.observed_counts(block)
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
