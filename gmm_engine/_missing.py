"""Missing values by marginalisation: ``GaussianMixture(missing='marginalize')``.

Ghahramani & Jordan (1994); the arithmetic is in shared/EM-NOTES.md
("Missing values") and :mod:`gmm_engine._missing_kernels`.  A NaN entry
is a missing feature: the row's likelihood is the marginal density of its
observed features, and the M-step uses the row completed by its
conditional expectation under each component plus the conditional
covariance of the missing block, so EM climbs the exact observed-data
log-likelihood.  Infinities are not missing values, and a row with every
feature missing has no likelihood: both stay refused (with the rows named,
:func:`gmm_engine._validation.unusable_rows_message`).

How it reaches the kernels:

* :class:`MarginalParams` (built once per pass from the parameters, on the
  client) rides in ``KernelParams.marginal``: its presence is what tells
  every chunk function that NaN entries are to be marginalised.  Without
  it (``missing='error'``) nothing here runs.
* :func:`kernels` gives a chunk function the registry entry, or
  :class:`MarginalKernels` around it: per chunk, the complete rows go to
  the entry's fused kernels unchanged; the incomplete rows are grouped by
  missing pattern (:func:`group_patterns`) and go to the pattern kernels,
  which compute each pattern's Schur complements once per component.
* :class:`ImputedData` is the training data as the initialisation reads
  it: missing entries filled with their feature's mean (over observed
  entries).  k-means and the other starts only need a start; EM on the
  marginal likelihood takes it from there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from . import _covariance
from ._chunked import ChunkedData
from ._kernel_params import kernel_weights
from ._lazy import on_first_use
from .exceptions import ComponentCollapseError, DataValidationError

logger = logging.getLogger("gmm_engine")
mkern = on_first_use("gmm_engine._missing_kernels")  # numba loads when a kernel is first needed

#: the ``missing`` option that marginalises NaN entries ('error' refuses them)
MARGINALIZE = "marginalize"

_NO_ROWS = np.empty((0, 3))
_NO_KEYS = np.empty(0, dtype=np.uint64)


def marginalizes(estimator) -> bool:
    """Whether ``estimator`` marginalises missing values (estimators without the option do not)."""
    return getattr(estimator, "missing", "error") == MARGINALIZE


@dataclass(frozen=True, eq=False)
class MarginalParams:
    """What the pattern kernels need besides ``KernelParams.means``.

    Attributes
    ----------
    covariances : ndarray of shape (K, D, D)
        The component covariances as full matrices, computed from the
        precision Cholesky factors the fused kernels use (so complete and
        incomplete rows are scored under the same model); diagonal matrices
        for the diagonal types.
    log_weights : ndarray of shape (K,)
    diagonal : bool
        The covariance type's ``diagonal_covariances``: missing features are
        independent of the observed ones.
    """

    covariances: np.ndarray
    log_weights: np.ndarray
    diagonal: bool

    @classmethod
    def of(cls, covariance_type, weights, means, prec_chol) -> "MarginalParams":
        """From fitted-parameter arrays: weights (K,), means (K, D) and ``precisions_cholesky_``."""
        cov = _covariance.get(covariance_type)
        K, D = np.shape(means)
        full = cov.to_full(cov.covariances_from_precision_cholesky(np.asarray(prec_chol, dtype=np.float64)), K, D)
        with np.errstate(divide="ignore"):  # a weight of 0 is a log-weight of -inf, as in logc
            logw = np.log(np.asarray(weights, dtype=np.float64))
        return cls(np.ascontiguousarray(full), logw, bool(cov.diagonal_covariances))


# ---------------------------------------------------------------------------
# rows and patterns


def observed_counts(X) -> np.ndarray:
    """Features that are not NaN, per row: (n,) int64 (``score_rows(..., n_observed=True)``)."""
    X = X if X.flags.c_contiguous else np.ascontiguousarray(X)
    out = np.empty(X.shape[0], dtype=np.int64)
    mkern.count_observed(X, out)
    return out


@dataclass(frozen=True, eq=False)
class Partition:
    """A chunk's rows split for the kernels: complete (and refused) rows, and incomplete rows.

    Attributes
    ----------
    complete, incomplete : ndarray of shape (nc, D) and (ni, D)
        The rows, in order, C-contiguous, in X's dtype.
    complete_at, incomplete_at : ndarray of shape (nc,) and (ni,), intp
        Their positions in the chunk.
    keys : ndarray of shape (ni,), uint64, or None
        The incomplete rows' missing-feature bit masks (up to 64 features).
    """

    complete: np.ndarray
    complete_at: np.ndarray
    incomplete: np.ndarray
    incomplete_at: np.ndarray
    keys: np.ndarray | None


def partition(X) -> Partition | None:
    """X's rows split for the kernels (one pass), or None when no row is incomplete (nothing copied)."""
    X = X if X.flags.c_contiguous else np.ascontiguousarray(X)
    n, D = X.shape
    Xc, Xi = np.empty_like(X), np.empty_like(X)  # only the rows written are touched
    at_c, at_i = np.empty(n, dtype=np.intp), np.empty(n, dtype=np.intp)
    keys = np.empty(n, dtype=np.uint64) if D <= 64 else _NO_KEYS
    nc, ni = mkern.partition_rows(X, Xc, at_c, Xi, at_i, keys)
    if not ni:
        return None
    return Partition(Xc[:nc], at_c[:nc], Xi[:ni], at_i[:ni], keys[:ni] if D <= 64 else None)


@dataclass(frozen=True, eq=False)
class Patterns:
    """Rows grouped by missing pattern.

    Attributes
    ----------
    order : ndarray of shape (n,), intp
        Row positions sorted by pattern (stable within a pattern).
    bounds : ndarray of shape (P + 1,), int64
        Pattern p is ``order[bounds[p]:bounds[p + 1]]``.
    masks : ndarray of shape (P, D), uint8
        1 where pattern p's features are missing.
    """

    order: np.ndarray
    bounds: np.ndarray
    masks: np.ndarray


def group_patterns(X, keys=None) -> Patterns:
    """Group the rows of X (n, D) by the pattern of their NaN entries.

    ``keys`` (n,) uint64 are the patterns' bit masks (:func:`partition`,
    up to 64 features): one stable 1-D sort.  Without them the rows'
    packed NaN masks are sorted.
    """
    D = X.shape[1]
    if keys is not None:
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
        bits = (ordered[starts, None] >> np.arange(D, dtype=np.uint64)) & np.uint64(1)
        masks = np.ascontiguousarray(bits, dtype=np.uint8)
    else:
        packed = np.packbits(np.isnan(X), axis=1, bitorder="little")
        _, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
        order = np.argsort(inverse.ravel(), kind="stable")
        starts = np.concatenate([[0], np.cumsum(np.bincount(inverse.ravel()))[:-1]])
        masks = np.ascontiguousarray(np.isnan(X[first]), dtype=np.uint8)
    bounds = np.append(starts, X.shape[0]).astype(np.int64)
    return Patterns(order, bounds, masks)


def _logsumexp(wlp):
    m = wlp.max(axis=1)
    shift = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(wlp - shift[:, None]).sum(axis=1)) + shift


def _variances(mp) -> np.ndarray:
    """(K, D) the component variances of diagonal ``MarginalParams``; refused unless all positive."""
    var = np.ascontiguousarray(np.diagonal(mp.covariances, axis1=1, axis2=2))
    bad = np.flatnonzero(~(np.isfinite(var) & (var > 0.0)).all(axis=1))
    if bad.size:
        raise _collapse(int(bad[0]))
    return var


def _collapse(component) -> ComponentCollapseError:
    return ComponentCollapseError(
        f"{_covariance.COLLAPSE_MESSAGE} The covariance of component {component} restricted to the "
        "observed features of some rows is not positive definite."
    )


# ---------------------------------------------------------------------------
# the kernels of a registry entry, with NaN entries marginalised


class MarginalKernels:
    """A covariance registry entry's chunk kernels for rows that may hold NaN entries.

    Complete rows go to the entry's own (fused) kernels, incomplete rows
    (some but not all features NaN, no infinity) to the pattern kernels.
    Rows the checks refuse (an infinity, every feature NaN) go with the
    complete rows, as they would without marginalisation, and give
    NaN/inf: every path checks its rows before it uses the results.
    Everything else is the entry's (``fused_rows_max_features``,
    ``finish_scatter``, ...).
    """

    def __init__(self, cov):
        self.cov = cov

    def __getattr__(self, name):
        return getattr(self.cov, name)

    def estep(self, X, kp, nk, sums, scatter, weights=None, rows=None):
        """The entry's ``estep`` contract (statistics added in place, upper triangles; returns the loglik)."""
        part = partition(X)
        if part is None:
            return self.cov.estep(X, kp, nk, sums, scatter, weights=weights, rows=rows)
        loglik = 0.0
        if part.complete_at.size:
            at = part.complete_at
            sub = None if rows is None else np.empty((at.size, 3))
            loglik += self.cov.estep(part.complete, kp, nk, sums, scatter,
                                     weights=None if weights is None else weights[at], rows=sub)
            if rows is not None:
                rows[at] = sub
        return loglik + self._incomplete_estep(part, kp, nk, sums, scatter, weights, rows)

    def _incomplete_estep(self, part, kp, nk, sums, scatter, weights, rows):
        mp = kp.marginal
        K, D = kp.means.shape
        if mp.diagonal:
            return self._diagonal_estep(part, kp, nk, sums, scatter, weights, rows)
        pat = group_patterns(part.incomplete, part.keys)
        sel = part.incomplete_at[pat.order]
        per = np.zeros((K, D, D))
        out = _NO_ROWS if rows is None else np.empty((sel.size, 3))
        # the rows the fused kernels skip (the diagonal types skip none and go above)
        rmin = kp.rmin if kp.rmin is not None else np.zeros(K)
        loglik, bad = mkern.marginal_estep(
            part.incomplete[pat.order], kernel_weights(None if weights is None else weights[sel]),
            pat.bounds, pat.masks, kp.means, mp.covariances, mp.log_weights, rmin, nk, sums, per, out,
        )
        if bad >= 0:
            raise _collapse(bad)
        scatter += self.cov.scatter_from_components(per)
        if rows is not None:
            rows[sel] = out
        return loglik

    def _diagonal_estep(self, part, kp, nk, sums, scatter, weights, rows):
        """:meth:`_incomplete_estep` of the diagonal types: the rows in their order, no patterns."""
        K, D = kp.means.shape
        at = part.incomplete_at
        per = np.zeros((K, 1, D))
        out = _NO_ROWS if rows is None else np.empty((at.size, 3))
        loglik = mkern.diagonal_marginal_estep(
            part.incomplete, kernel_weights(None if weights is None else weights[at]), kp.means,
            _variances(kp.marginal), kp.marginal.log_weights, nk, sums, per, out,
        )
        scatter += self.cov.scatter_from_components(per.reshape(K, D))
        if rows is not None:
            rows[at] = out
        return loglik

    def _incomplete_logprob(self, part, kp):
        """(ni, K) weighted log-probabilities of the incomplete rows, in their order."""
        mp = kp.marginal
        lp = np.empty((part.incomplete.shape[0], kp.n_components))
        if mp.diagonal:
            mkern.diagonal_marginal_logprob(part.incomplete, kp.means, _variances(mp), mp.log_weights, lp)
            return lp
        pat = group_patterns(part.incomplete, part.keys)
        bad = mkern.marginal_logprob(part.incomplete[pat.order], pat.bounds, pat.masks, kp.means,
                                     mp.covariances, mp.log_weights, lp)
        if bad >= 0:
            raise _collapse(bad)
        out = np.empty_like(lp)
        out[pat.order] = lp
        return out

    def _per_row(self, X, kp, out, complete_fn, incomplete_fn):
        """``out`` per row: the entry's ``complete_fn`` on complete rows, ``incomplete_fn(lp)`` on the others."""
        part = partition(X)
        if part is None:
            complete_fn(X, kp, out)
            return
        if part.complete_at.size:
            sub = np.empty((part.complete_at.size, *out.shape[1:]), dtype=out.dtype)
            complete_fn(part.complete, kp, sub)
            out[part.complete_at] = sub
        out[part.incomplete_at] = incomplete_fn(self._incomplete_logprob(part, kp))

    def weighted_log_prob(self, X, kp, out):
        """``out`` (n, K) = log w_k + log N(x_o | mu_ko, Sigma_k,oo) on every row's observed features."""
        self._per_row(X, kp, out, self.cov.weighted_log_prob, lambda lp: lp)

    def score_samples(self, X, kp, out):
        """``out`` (n,) = log p(x_o): the marginal mixture density of every row's observed features."""
        self._per_row(X, kp, out, self.cov.score_samples, _logsumexp)

    def predict(self, X, kp, out):
        """``out`` (n,) int = the most likely component given every row's observed features."""
        self._per_row(X, kp, out, self.cov.predict, lambda lp: np.argmax(lp, axis=1))


def kernels(kp):
    """The chunk kernels for ``kp``: its registry entry, marginalising NaN entries when ``kp.marginal`` is set."""
    cov = _covariance.get(kp.covariance_type)
    return cov if kp.marginal is None else MarginalKernels(cov)


# ---------------------------------------------------------------------------
# the training data's scan, and what the initialisation reads


def refuse_unobserved_features(summary) -> None:
    """Refuse training data with a feature that no row (of positive weight) observes.

    Parameters
    ----------
    summary : DataSummary
        The scan with ``missing=True`` (its ``feature_weight``).

    Raises
    ------
    DataValidationError
        Naming the features (0-based columns).
    """
    never = np.flatnonzero(~(summary.feature_weight > 0))
    if never.size:
        shown = ", ".join(str(int(j)) for j in never[:10]) + (", ..." if never.size > 10 else "")
        raise DataValidationError(
            f"Input X has {never.size} of {summary.feature_weight.size} features with no observed value "
            f"(features {shown}: NaN in every row of positive weight), so nothing can be estimated for "
            "them, even with missing='marginalize': leave these features out of X."
        )
    logger.info("marginalising the missing entries of %d of %d rows", summary.n_incomplete_rows, summary.n_samples)


def fill_missing(block, fill):
    """``block`` with its NaN entries replaced by ``fill`` (D,) (the block itself when it has none)."""
    nan = np.isnan(block)
    if not nan.any():
        return block
    return np.where(nan, fill.astype(block.dtype), block)


def imputed_chunk(block, start, fn, fill, *args, weights=None):
    """``fn`` on a chunk whose missing entries are filled (top level: it travels to workers)."""
    block = fill_missing(np.asarray(block), fill)
    if weights is None:
        return fn(block, start, *args)
    return fn(block, start, *args, weights=weights)


class ImputedData(ChunkedData):
    """Training data as the initialisation reads it: each missing entry filled with its feature's mean.

    Every pass and every row taken goes to ``data`` (so passes are counted
    there); only the values seen differ.

    Parameters
    ----------
    data : ChunkedData
    fill : ndarray of shape (D,)
        The per-feature means over observed entries (the scan's).
    """

    missing = False

    def __init__(self, data: ChunkedData, fill):
        self.data = data
        self.fill = np.asarray(fill, dtype=np.float64)
        self.n_samples, self.n_features, self.dtype = data.n_samples, data.n_features, data.dtype
        self.weights = data.weights
        self.values_checked = data.values_checked

    def map_reduce(self, fn, *args):
        return self.data.map_reduce(imputed_chunk, fn, self.fill, *args)

    def take(self, indices):
        return fill_missing(self.data.take(indices), self.fill)
