"""Per-row scoring in one pass: log-likelihood, best component, its responsibility (and statistics).

``GaussianMixture.score_samples``, ``predict`` and ``predict_proba`` each
recompute the weighted log-probabilities; scoring a partition needs all
three, so :func:`score_rows` derives them from one evaluation per chunk
(:func:`gmm_engine._blocks.rows_block`), on the same validated input and
checked fitted parameters as the estimator's own methods.  With
``with_stats=True`` the same kernel call per chunk also gives the
sufficient statistics of the rows under the model
(:mod:`gmm_engine._fused_scoring`): what
``GaussianMixture.partial_fit_statistics`` updates the model from, so an
update never reads the data again; ``chunk_summary=`` runs a caller's
summary of each chunk's rows (the pipeline's drift counts) in the same
chunk task and sums it over the chunks.

With ``missing='marginalize'`` rows with NaN entries are scored on their
observed features (the log-likelihood is their marginal density, the
component and responsibility the posterior given them), and
``n_observed=True`` also returns how many features each row had.
"""

from __future__ import annotations

import functools

from ._blocks import COMPONENT, LOG_LIKELIHOOD, N_OBSERVED, RESPONSIBILITY, map_rows, rows_block
from ._fused_scoring import LazyStatistics, LazySummary, row_columns, rows_and_stats_lazy, rows_and_stats_numpy
from ._input import scoring_input
from ._missing import marginalizes

__all__ = ["score_rows", "LazyStatistics", "LazySummary", "LOG_LIKELIHOOD", "COMPONENT", "RESPONSIBILITY",
           "N_OBSERVED"]


def score_rows(model, X, *, in_memory=False, with_stats=False, n_observed=False, feature_names=None,
               chunk_summary=None):
    """Log-likelihood, most likely component and its responsibility of every row.

    Parameters
    ----------
    model : GaussianMixture or BayesianGaussianMixture
        Fitted.
    X : array-like, dask array, zarr array or path of a Zarr array, \
of shape (n_samples, n_features)
    in_memory : bool
        Read a Zarr or dask ``X`` into memory and score it on local threads,
        returning NumPy arrays: for small inputs, whose Dask graph costs more
        than their arithmetic.  Feature names are checked as for lazy input.
    with_stats : bool
        Also return the sufficient statistics of X under the model, from
        the same pass (one E-step kernel call per chunk gives the rows and
        the statistics).
    n_observed : bool
        Also return, per row, the number of features that are not NaN:
        ``n_features`` for a complete row, fewer for the incomplete rows a
        model with ``missing='marginalize'`` scores (from the same chunk
        tasks).
    feature_names : sequence of str, optional
        The names of X's columns when X carries none (a NumPy array read
        by the caller), checked against the model's as a DataFrame's
        columns would be.
    chunk_summary : callable, optional
        ``chunk_summary(log_likelihood, component, responsibility[, n_observed])
        -> ndarray of shape (w,)``: a summary of a chunk's rows (counts,
        sums) computed in the chunk's own task while its rows are at hand,
        and summed over the chunks: one more output.  It must be additive
        over chunks, picklable for a distributed cluster (a top-level
        function or a ``functools.partial`` of one) and return the same
        length for every chunk, an empty one included.

    Returns
    -------
    log_likelihood : ndarray or dask array of shape (n_samples,), float64
        With ``missing='marginalize'``, of the row's observed features.
    component : ndarray or dask array of shape (n_samples,), int64
    responsibility : ndarray or dask array of shape (n_samples,), float64
        Lazy dask arrays (sharing one evaluation per chunk) for lazy input.
    n_observed : ndarray or dask array of shape (n_samples,), int64
        Only with ``n_observed``: the observed features of each row.
    stats : SufficientStatistics or LazyStatistics
        Only with ``with_stats``: around the model's means, unweighted, its
        ``loglik`` the sum of ``log_likelihood``.  For lazy input a dask
        collection sharing the chunk tasks of the three arrays: compute it
        with them (``dask.compute(ll, comp, resp, stats)``, or with
        ``dask.array.store`` of them) and each chunk runs once.
    summary : ndarray of shape (w,), float64, or LazySummary
        Only with ``chunk_summary``: the sum of its chunk vectors (for lazy
        input a collection sharing the chunk tasks, as ``stats``).
    """
    X, lazy = scoring_input(X, model, in_memory=in_memory, feature_names=feature_names)
    kp = model._kernel_params()  # the model's own scores (variational constants for a BayesianGaussianMixture)
    observed = bool(n_observed)
    if not with_stats and chunk_summary is None:
        fn = functools.partial(rows_block, observed=True) if observed else rows_block
        return row_columns(map_rows(fn, X, kp, lazy=lazy, width=4 if observed else 3), observed)
    # the summary rides on the E-step kernel's pass, which gives the statistics at no extra cost
    if lazy:
        results = rows_and_stats_lazy(X, kp, observed, chunk_summary)
    else:
        out, *values = rows_and_stats_numpy(X, kp, observed, chunk_summary)
        results = (*row_columns(out, observed), *values)
    n = 4 if observed else 3
    columns, stats, summary = results[:n], results[n], results[n + 1:]
    return (*columns, *((stats,) if with_stats else ()), *summary)
