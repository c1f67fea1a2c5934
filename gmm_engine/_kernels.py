"""Fused per-chunk kernels (numba, GIL released).

Each E-step kernel makes one pass over the rows of a chunk and, per row,
computes the weighted log-probability of every component, their
log-sum-exp, the responsibilities, and adds the row to the sufficient
statistics around the current means.  Doing all of it per row keeps the
row and its K differences in L1 cache: the tall-skinny BLAS products a
vectorised NumPy version needs run at ~3 GFLOP/s on these machines.

Conventions shared by every kernel:

* ``X`` has shape (n, D), float32 or float64; arithmetic is float64.
* ``means`` (K, D), ``logc`` (K,) with
  ``logc[k] = log w_k + log|U_k| - D/2 log(2 pi)``.
* Statistics are accumulated in place into float64 arrays that the caller
  zeroed: ``nk`` (K,), ``sums`` (K, D) and a type-specific ``scatter``.
  Only the upper triangle of a full scatter is written; the caller
  mirrors it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_OPTS = dict(nogil=True, cache=True, error_model="numpy")


@njit(inline="always", **_OPTS)
def _logsumexp(lp, K):
    m = lp[0]
    for k in range(1, K):
        if lp[k] > m:
            m = lp[k]
    if m == -np.inf:
        return m
    s = 0.0
    for k in range(K):
        s += math.exp(lp[k] - m)
    return m + math.log(s)


# ---------------------------------------------------------------------------
# Per-row weighted log-probabilities.  Each fills ``lp`` (K,) and the
# differences ``diff`` (K, D) = x - mean_k that the accumulation reuses.


@njit(inline="always", **_OPTS)
def _row_full(X, i, means, U, logc, diff, y, lp):
    K, D = means.shape
    for k in range(K):
        for j in range(D):
            diff[k, j] = X[i, j] - means[k, j]
            y[j] = 0.0
        # y = diff_k @ U_k with U_k upper triangular; the inner loop runs
        # over a contiguous row of U_k so it vectorises.
        for a in range(D):
            da = diff[k, a]
            for b in range(a, D):
                y[b] += da * U[k, a, b]
        maha = 0.0
        for j in range(D):
            maha += y[j] * y[j]
        lp[k] = logc[k] - 0.5 * maha


@njit(inline="always", **_OPTS)
def _row_tied(X, i, means, U, logc, center, mu_white, diff, y, lp):
    K, D = means.shape
    # Whitening is shared: y_k = (x - c) U - (mu_k - c) U, with c central
    # so that the subtraction cancels nothing for data far from 0.
    for j in range(D):
        y[j] = 0.0
    for a in range(D):
        da = X[i, a] - center[a]
        for b in range(a, D):
            y[b] += da * U[a, b]
    for k in range(K):
        maha = 0.0
        for j in range(D):
            diff[k, j] = X[i, j] - means[k, j]
            t = y[j] - mu_white[k, j]
            maha += t * t
        lp[k] = logc[k] - 0.5 * maha


@njit(inline="always", **_OPTS)
def _row_diag(X, i, means, P, logc, diff, lp):
    K, D = means.shape
    for k in range(K):
        maha = 0.0
        for j in range(D):
            d = X[i, j] - means[k, j]
            diff[k, j] = d
            maha += d * d * P[k, j]
        lp[k] = logc[k] - 0.5 * maha


@njit(inline="always", **_OPTS)
def _row_spherical(X, i, means, P, logc, diff, sq, lp):
    K, D = means.shape
    for k in range(K):
        s = 0.0
        for j in range(D):
            d = X[i, j] - means[k, j]
            diff[k, j] = d
            s += d * d
        sq[k] = s
        lp[k] = logc[k] - 0.5 * s * P[k]


# ---------------------------------------------------------------------------
# Accumulation of one row with responsibility r into component k.


@njit(inline="always", **_OPTS)
def _acc_upper(diff, k, r, sums, scatter):
    D = diff.shape[1]
    for a in range(D):
        rd = r * diff[k, a]
        sums[k, a] += rd
        for b in range(a, D):
            scatter[a, b] += rd * diff[k, b]


@njit(inline="always", **_OPTS)
def _acc_diag(diff, k, r, sums, scatter):
    D = diff.shape[1]
    for a in range(D):
        rd = r * diff[k, a]
        sums[k, a] += rd
        scatter[k, a] += rd * diff[k, a]


# ---------------------------------------------------------------------------
# E-step kernels: statistics around the current means, and the log-likelihood.


@njit(**_OPTS)
def estep_full(X, means, U, logc, nk, sums, scatter):
    n = X.shape[0]
    K, D = means.shape
    diff = np.empty((K, D))
    y = np.empty(D)
    lp = np.empty(K)
    ll = 0.0
    for i in range(n):
        _row_full(X, i, means, U, logc, diff, y, lp)
        lse = _logsumexp(lp, K)
        ll += lse
        for k in range(K):
            r = math.exp(lp[k] - lse)
            if r > 0.0:
                nk[k] += r
                _acc_upper(diff, k, r, sums, scatter[k])
    return ll


@njit(**_OPTS)
def estep_tied(X, means, U, logc, center, mu_white, nk, sums, scatter):
    n = X.shape[0]
    K, D = means.shape
    diff = np.empty((K, D))
    y = np.empty(D)
    lp = np.empty(K)
    ll = 0.0
    for i in range(n):
        _row_tied(X, i, means, U, logc, center, mu_white, diff, y, lp)
        lse = _logsumexp(lp, K)
        ll += lse
        for k in range(K):
            r = math.exp(lp[k] - lse)
            if r > 0.0:
                nk[k] += r
                _acc_upper(diff, k, r, sums, scatter)
    return ll


@njit(**_OPTS)
def estep_diag(X, means, P, logc, nk, sums, scatter):
    n = X.shape[0]
    K, D = means.shape
    diff = np.empty((K, D))
    lp = np.empty(K)
    ll = 0.0
    for i in range(n):
        _row_diag(X, i, means, P, logc, diff, lp)
        lse = _logsumexp(lp, K)
        ll += lse
        for k in range(K):
            r = math.exp(lp[k] - lse)
            if r > 0.0:
                nk[k] += r
                _acc_diag(diff, k, r, sums, scatter)
    return ll


@njit(**_OPTS)
def estep_spherical(X, means, P, logc, nk, sums, scatter):
    n = X.shape[0]
    K, D = means.shape
    diff = np.empty((K, D))
    sq = np.empty(K)
    lp = np.empty(K)
    ll = 0.0
    for i in range(n):
        _row_spherical(X, i, means, P, logc, diff, sq, lp)
        lse = _logsumexp(lp, K)
        ll += lse
        for k in range(K):
            r = math.exp(lp[k] - lse)
            if r > 0.0:
                nk[k] += r
                for a in range(D):
                    sums[k, a] += r * diff[k, a]
                scatter[k] += r * sq[k]
    return ll


# ---------------------------------------------------------------------------
# Weighted log-probabilities (n, K) for scoring and prediction.


@njit(**_OPTS)
def wlogprob_full(X, means, U, logc, out):
    K, D = means.shape
    diff = np.empty((K, D))
    y = np.empty(D)
    for i in range(X.shape[0]):
        _row_full(X, i, means, U, logc, diff, y, out[i])


@njit(**_OPTS)
def wlogprob_tied(X, means, U, logc, center, mu_white, out):
    K, D = means.shape
    diff = np.empty((K, D))
    y = np.empty(D)
    for i in range(X.shape[0]):
        _row_tied(X, i, means, U, logc, center, mu_white, diff, y, out[i])


@njit(**_OPTS)
def wlogprob_diag(X, means, P, logc, out):
    K, D = means.shape
    diff = np.empty((K, D))
    for i in range(X.shape[0]):
        _row_diag(X, i, means, P, logc, diff, out[i])


@njit(**_OPTS)
def wlogprob_spherical(X, means, P, logc, out):
    K, D = means.shape
    diff = np.empty((K, D))
    sq = np.empty(K)
    for i in range(X.shape[0]):
        _row_spherical(X, i, means, P, logc, diff, sq, out[i])


# ---------------------------------------------------------------------------
# Statistics from given responsibilities (initialisation) around ``shift``.


@njit(**_OPTS)
def accumulate_full(X, resp, shift, nk, sums, scatter):
    """Per-component full scatter; ``scatter`` is (K, D, D), upper triangle."""
    n = X.shape[0]
    K, D = shift.shape
    diff = np.empty((K, D))
    for i in range(n):
        for k in range(K):
            r = resp[i, k]
            if r > 0.0:
                for j in range(D):
                    diff[k, j] = X[i, j] - shift[k, j]
                nk[k] += r
                _acc_upper(diff, k, r, sums, scatter[k])


@njit(**_OPTS)
def accumulate_diag(X, resp, shift, nk, sums, scatter):
    """Per-component diagonal scatter; ``scatter`` is (K, D)."""
    n = X.shape[0]
    K, D = shift.shape
    diff = np.empty((K, D))
    for i in range(n):
        for k in range(K):
            r = resp[i, k]
            if r > 0.0:
                for j in range(D):
                    diff[k, j] = X[i, j] - shift[k, j]
                nk[k] += r
                _acc_diag(diff, k, r, sums, scatter)


# ---------------------------------------------------------------------------
# k-means helpers: exact squared distances (no |x|^2 - 2 x.c + |c|^2
# cancellation, which loses everything for data far from the origin).


@njit(**_OPTS)
def nearest(X, centers, labels, dist):
    """Index of and squared distance to the nearest center, per row."""
    n = X.shape[0]
    C, D = centers.shape
    for i in range(n):
        best = np.inf
        arg = 0
        for c in range(C):
            s = 0.0
            for j in range(D):
                t = X[i, j] - centers[c, j]
                s += t * t
                if s >= best:
                    break
            if s < best:
                best = s
                arg = c
        labels[i] = arg
        dist[i] = best


@njit(**_OPTS)
def min_sqdist_update(X, centers, dist):
    """``dist[i] = min(dist[i], min_c |x_i - c|^2)`` in place."""
    n = X.shape[0]
    C, D = centers.shape
    for i in range(n):
        best = dist[i]
        for c in range(C):
            s = 0.0
            for j in range(D):
                t = X[i, j] - centers[c, j]
                s += t * t
                if s >= best:
                    break
            if s < best:
                best = s
        dist[i] = best


@njit(**_OPTS)
def sqdist_each(X, centers, out):
    """``out[i, c] = |x_i - c|^2`` for every row and center."""
    n = X.shape[0]
    C, D = centers.shape
    for i in range(n):
        for c in range(C):
            s = 0.0
            for j in range(D):
                t = X[i, j] - centers[c, j]
                s += t * t
            out[i, c] = s
