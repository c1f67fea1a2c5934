"""Per-chunk statistics as values: built from one chunk, merged associatively.

Every value here is a small frozen dataclass with a constructor from a
chunk and a ``merge``; a tree reduction of any shape over any chunking
gives the same totals up to rounding.  Arrays are float64 whatever the
input dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _covariance

#: how many offending row indices a data summary keeps for error messages
MAX_BAD_ROWS_REPORTED = 10


@dataclass(frozen=True, eq=False)
class SuffStats:
    """Sufficient statistics of a Gaussian mixture around a per-component shift.

    With responsibilities ``r`` (n, K) and shift ``a`` (K, D):

    ``nk[k] = sum_n r[n, k]``, ``sums[k] = sum_n r[n, k] (x_n - a_k)`` and
    ``scatter`` the weighted scatter of ``x_n - a_k``: (K, D, D) for full,
    summed over components (D, D) for tied, its diagonal (K, D) for diag,
    its trace (K,) for spherical.

    Attributes
    ----------
    covariance_type : str
    shift : ndarray of shape (K, D)
        Shared by every chunk of one pass, so merging is plain addition.
    nk, sums, scatter : ndarray
    loglik : float
        Sum over rows of ``log p(x_n)`` under the parameters that gave the
        responsibilities; NaN when the responsibilities were supplied.
    n_samples : int
    """

    covariance_type: str
    shift: np.ndarray
    nk: np.ndarray
    sums: np.ndarray
    scatter: np.ndarray
    loglik: float
    n_samples: int

    @classmethod
    def zeros(cls, covariance_type, shift, loglik=0.0):
        K, D = shift.shape
        cov = _covariance.get(covariance_type)
        return cls(
            covariance_type,
            shift,
            np.zeros(K),
            np.zeros((K, D)),
            np.zeros(cov.scatter_shape(K, D)),
            loglik,
            0,
        )

    @classmethod
    def from_estep(cls, X, kp):
        """E-step on one chunk: responsibilities under ``kp``, shift = its means.

        Parameters
        ----------
        X : ndarray of shape (n, D), float32 or float64
        kp : KernelParams
        """
        cov = _covariance.get(kp.covariance_type)
        K, D = kp.means.shape
        nk = np.zeros(K)
        sums = np.zeros((K, D))
        scatter = np.zeros(cov.scatter_shape(K, D))
        loglik = cov.estep(X, kp, nk, sums, scatter)
        return cls(
            kp.covariance_type, kp.means, nk, sums, cov.finish_scatter(scatter),
            float(loglik), X.shape[0],
        )

    @classmethod
    def from_resp(cls, X, resp, shift, covariance_type):
        """Statistics of one chunk for given responsibilities.

        Parameters
        ----------
        X : ndarray of shape (n, D)
        resp : ndarray of shape (n, K), float64
        shift : ndarray of shape (K, D)
        covariance_type : str
        """
        cov = _covariance.get(covariance_type)
        K, D = shift.shape
        nk = np.zeros(K)
        sums = np.zeros((K, D))
        scatter = np.zeros(cov.scatter_shape(K, D))
        cov.accumulate(X, np.ascontiguousarray(resp, dtype=np.float64), shift, nk, sums, scatter)
        return cls(
            covariance_type, shift, nk, sums, cov.finish_scatter(scatter),
            float("nan"), X.shape[0],
        )

    def merge(self, other: "SuffStats") -> "SuffStats":
        if self.shift is not other.shift and not np.array_equal(self.shift, other.shift):
            raise ValueError("cannot merge statistics accumulated around different shifts")
        return SuffStats(
            self.covariance_type,
            self.shift,
            self.nk + other.nk,
            self.sums + other.sums,
            self.scatter + other.scatter,
            self.loglik + other.loglik,
            self.n_samples + other.n_samples,
        )


@dataclass(frozen=True, eq=False)
class DataSummary:
    """Row count, per-feature mean and scatter, and the non-finite rows.

    Means and squared deviations merge with Chan et al.'s parallel update,
    so data far from the origin keeps its variance.

    Attributes
    ----------
    n_samples : int
        Rows seen, finite or not.
    n_finite : int
    mean : ndarray of shape (D,)
        Over finite rows.
    m2 : ndarray of shape (D,)
        Sum of squared deviations from ``mean`` over finite rows.
    n_nan_rows, n_inf_rows : int
        Rows with at least one NaN, and rows with an infinity but no NaN.
    bad_rows : tuple of int
        The first global row indices that are not finite.
    """

    n_samples: int
    n_finite: int
    mean: np.ndarray
    m2: np.ndarray
    n_nan_rows: int
    n_inf_rows: int
    bad_rows: tuple

    @classmethod
    def from_chunk(cls, X, start):
        X = np.asarray(X)
        finite = np.isfinite(X).all(axis=1)
        n = X.shape[0]
        if finite.all():
            good = X
            n_nan = n_inf = 0
            bad = ()
        else:
            good = X[finite]
            nan_rows = np.isnan(X).any(axis=1)
            n_nan = int(nan_rows.sum())
            n_inf = int((~finite & ~nan_rows).sum())
            bad = tuple(int(start + i) for i in np.flatnonzero(~finite)[:MAX_BAD_ROWS_REPORTED])
        m = good.shape[0]
        if m:
            mean = good.mean(axis=0, dtype=np.float64)
            m2 = ((good - mean) ** 2).sum(axis=0, dtype=np.float64)
        else:
            mean = np.zeros(X.shape[1])
            m2 = np.zeros(X.shape[1])
        return cls(n, m, mean, m2, n_nan, n_inf, bad)

    def merge(self, other: "DataSummary") -> "DataSummary":
        n = self.n_finite + other.n_finite
        if n == 0:
            mean, m2 = self.mean, self.m2
        else:
            delta = other.mean - self.mean
            mean = self.mean + delta * (other.n_finite / n)
            m2 = self.m2 + other.m2 + delta**2 * (self.n_finite * other.n_finite / n)
        bad = tuple(sorted(self.bad_rows + other.bad_rows))[:MAX_BAD_ROWS_REPORTED]
        return DataSummary(
            self.n_samples + other.n_samples,
            n,
            mean,
            m2,
            self.n_nan_rows + other.n_nan_rows,
            self.n_inf_rows + other.n_inf_rows,
            bad,
        )

    @property
    def n_bad_rows(self) -> int:
        return self.n_nan_rows + self.n_inf_rows

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / max(self.n_finite, 1)


# ---------------------------------------------------------------------------
# Chunk functions for ChunkedData.map_reduce: ``fn(block, start, *args)``.
# Top-level so that they pickle by reference to distributed workers.


def estep_chunk(block, start, kp):
    return SuffStats.from_estep(block, kp)


def summary_chunk(block, start):
    return DataSummary.from_chunk(block, start)
