"""What the chunk kernels consume: the padded parameter layout and the argument helpers.

:class:`KernelParams` is built once per pass by the covariance registry
(:mod:`gmm_engine._covariance`) and shipped to every chunk; the helpers
here put parameters, rows, row weights and the per-row output into the
layouts the numba kernels of :mod:`gmm_engine._kernels` take.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._lazy import on_first_use

kern = on_first_use("gmm_engine._kernels")  # numba loads when a kernel is first needed


@dataclass(frozen=True, eq=False)
class KernelParams:
    """What a chunk kernel needs, shipped once per iteration to every worker.

    The ``*_p`` arrays are the kernels' layout: features padded with zeros
    to ``Dp``, a multiple of 8 (one vector register of float64 lanes).

    Attributes
    ----------
    covariance_type : str
    means : ndarray of shape (K, D)
    prec : ndarray
        Upper-triangular precision Cholesky factors (full: (K, D, D), tied:
        (D, D)) or precisions (diag: (K, D), spherical: (K,)).
    logc : ndarray of shape (K,)
        ``log w_k + log|U_k| - D/2 log(2 pi)``.
    center : ndarray of shape (D,)
        Tied only: the weighted mean of the means, the whitening origin.
    mu_white : ndarray of shape (K, D)
        Tied only: ``(mean_k - center) @ U``.
    means_p : ndarray of shape (K, Dp)
    prec_p : ndarray
        full: (K, Dp, Dp); tied: (Dp, Dp); diag: (K, Dp) precisions;
        spherical: (K, Dp) with the precision in column 0.
    center_p, muw_p : ndarray of shape (Dp,) and (K, Dp)
        Tied only: ``center`` and ``mu_white`` padded.
    rmin : ndarray of shape (K,)
        full and tied: a row whose responsibility for component k is below
        ``rmin[k] = max(SKIP_REL * w_k, TINY)`` is left out of that
        component's sums and scatter (it still counts in ``nk``).  What is
        left out of a statistic is below ``SKIP_REL`` times the component's
        previous soft count ``N w_k``: invisible at float64 precision unless
        the component loses all but 1e-4 of its mass in one iteration.
    marginal : MarginalParams or None
        Set with ``missing='marginalize'``: rows may hold NaN entries,
        which the chunk functions marginalise (:mod:`gmm_engine._missing`);
        None: NaN rows were refused before any kernel runs.
    """

    covariance_type: str
    means: np.ndarray
    prec: np.ndarray
    logc: np.ndarray
    center: np.ndarray | None = None
    mu_white: np.ndarray | None = None
    means_p: np.ndarray | None = None
    prec_p: np.ndarray | None = None
    center_p: np.ndarray | None = None
    muw_p: np.ndarray | None = None
    rmin: np.ndarray | None = None
    marginal: object = None

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]


def pad_last(a, Dp, axes=1):
    """Zero-pad the last ``axes`` axes of ``a`` to length Dp (C-contiguous float64)."""
    a = np.asarray(a, dtype=np.float64)
    pad = [(0, 0)] * (a.ndim - axes) + [(0, Dp - a.shape[-1])] * axes
    return np.ascontiguousarray(np.pad(a, pad))


def rows_layout(X):
    """X as the kernels take it: C-contiguous (one compiled variant), float32 or float64."""
    return X if X.flags.c_contiguous else np.ascontiguousarray(X)


_NO_WEIGHTS = np.empty(0)
_NO_ROWS = np.empty((0, 3))


def kernel_weights(weights):
    """Row weights as the E-step kernels take them: float64 (n,), or empty for unit weights."""
    return _NO_WEIGHTS if weights is None else np.ascontiguousarray(weights, dtype=np.float64)


def kernel_rows(rows):
    """Where an E-step kernel writes per-row scores: (n, 3) float64, or empty for none."""
    return _NO_ROWS if rows is None else rows


def skip_threshold(weights):
    with np.errstate(under="ignore"):
        return np.maximum(kern.SKIP_REL * np.asarray(weights, dtype=np.float64), kern.TINY)
