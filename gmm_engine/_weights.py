"""``sample_weight``: what it may be, its checks in scikit-learn's words, its values per chunk.

A weight multiplies every statistic of its row (shared/EM-NOTES.md,
"sample_weight"): integer weights are repeated rows, a zero weight is a
removed row.  Accepted: None, a number (broadcast to every row), an
array-like, a dask array, a Zarr array or the path of one, of shape
(n_samples,).

* In-memory weights are checked entirely before anything else runs, in
  the order and words of scikit-learn's
  ``_check_sample_weight(w, X, ensure_non_negative=True)``: NaN, infinity,
  dimensions, shape, all zero, negative.
* Lazy weights (dask, Zarr; with lazy X) are checked from their metadata
  (dimensions, shape) at once, and for NaN, infinity, all zero and
  negative values in the scan that already checks X (:class:`WeightSummary`
  is its per-chunk value), before any EM pass.

:func:`sample_weight_for` is the one entry: X's validated array in, the
weights the :class:`~gmm_engine._chunked.ChunkedData` carries out (a
float64 ndarray for in-memory X, a dask array chunked like X's rows for
lazy X).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ._validation import is_dask_array, is_path_like, is_zarr_array
from .exceptions import DataValidationError

NAN_MESSAGE = "Input sample_weight contains NaN."
ALL_ZERO_MESSAGE = "Sample weights must contain at least one non-zero number."
NEGATIVE_MESSAGE = "Negative values in data passed to `sample_weight`."


def inf_message(dtype) -> str:
    return f"Input sample_weight contains infinity or a value too large for {np.dtype(dtype)!r}."


def _ndim_message(ndim, n_samples) -> str:
    return (
        f"Sample weights must be 1D array or scalar, got {ndim}D array. Expected either a "
        f"scalar value or a 1D array of length {n_samples}."
    )


def _shape_message(shape, n_samples) -> str:
    return "sample_weight.shape == {}, expected {}!".format(tuple(shape), (n_samples,))


@dataclass(frozen=True)
class WeightSummary:
    """What the checks need to know of some weights; merged over chunks.

    Attributes
    ----------
    n_nan, n_inf, n_negative : int
        Weights that are NaN, infinite, below zero (-inf counts in both).
    n_nonzero, n_positive : int
        Weights different from zero (NaN included), and above zero.
    """

    n_nan: int
    n_inf: int
    n_negative: int
    n_nonzero: int
    n_positive: int

    @classmethod
    def of(cls, weights) -> "WeightSummary":
        w = np.asarray(weights)
        return cls(
            int(np.isnan(w).sum()), int(np.isinf(w).sum()), int((w < 0).sum()),
            int((w != 0).sum()), int((w > 0).sum()),
        )

    def merge(self, other: "WeightSummary") -> "WeightSummary":
        return WeightSummary(*(a + b for a, b in zip(
            (self.n_nan, self.n_inf, self.n_negative, self.n_nonzero, self.n_positive),
            (other.n_nan, other.n_inf, other.n_negative, other.n_nonzero, other.n_positive),
        )))

    def problem(self, dtype=np.float64) -> str | None:
        """scikit-learn's message for the first thing wrong (its order), or None."""
        if self.n_nan:
            return NAN_MESSAGE
        if self.n_inf:
            return inf_message(dtype)
        if not self.n_nonzero:
            return ALL_ZERO_MESSAGE
        if self.n_negative:
            return NEGATIVE_MESSAGE
        return None


def raise_if_invalid(summary: WeightSummary | None, dtype=np.float64) -> None:
    """Raise :class:`DataValidationError` with scikit-learn's message when ``summary`` shows bad weights."""
    problem = None if summary is None else summary.problem(dtype)
    if problem is not None:
        raise DataValidationError(problem)


def _float_array(values) -> np.ndarray:
    """scikit-learn's ``check_array(dtype=[float64, float32])`` conversion of weights."""
    arr = np.asarray(values)
    if arr.dtype not in (np.float32, np.float64):
        arr = np.asarray(values, dtype=np.float64)
    return arr


def check_sample_weight(sample_weight, n_samples: int) -> np.ndarray:
    """In-memory weights for ``n_samples`` rows, checked entirely; float64 of shape (n_samples,).

    Raises
    ------
    DataValidationError
        With scikit-learn's message (see the module docstring).
    TypeError
        A 0-d array, which scikit-learn does not take for a collection.
    """
    if isinstance(sample_weight, numbers.Number):
        # a number stands for every row: checked once, as all of them would be
        one = _float_array([sample_weight])
        raise_if_invalid(WeightSummary.of(one), one.dtype)
        return np.full(n_samples, float(one[0]))
    arr = _float_array(sample_weight)
    if arr.ndim == 0:
        raise TypeError(f"Singleton array {arr!r} cannot be considered a valid collection.")
    if np.isnan(arr).any():
        raise DataValidationError(NAN_MESSAGE)
    if np.isinf(arr).any():
        raise DataValidationError(inf_message(arr.dtype))
    if arr.shape[0] < 1:
        raise DataValidationError(
            f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if arr.ndim != 1:
        raise DataValidationError(_ndim_message(arr.ndim, n_samples))
    if arr.shape != (n_samples,):
        raise DataValidationError(_shape_message(arr.shape, n_samples))
    raise_if_invalid(WeightSummary.of(arr), arr.dtype)
    return np.ascontiguousarray(arr, dtype=np.float64)


def _check_lazy_shape(shape, n_samples):
    if len(shape) != 1:
        raise DataValidationError(_ndim_message(len(shape), n_samples))
    if shape != (n_samples,):
        raise DataValidationError(_shape_message(shape, n_samples))


def _lazy_weights(sample_weight, X):
    """Weights as a dask array chunked like X's rows; metadata checked, values left to the scan."""
    import dask.array as da

    n = int(X.shape[0])
    if isinstance(sample_weight, numbers.Number):
        one = _float_array([sample_weight])
        raise_if_invalid(WeightSummary.of(one), one.dtype)
        return da.full(n, float(one[0]), chunks=(X.chunks[0],), dtype=np.float64)
    if is_path_like(sample_weight):
        from ._input import open_zarr_array

        sample_weight = open_zarr_array(sample_weight)
    if is_zarr_array(sample_weight):
        _check_lazy_shape(tuple(sample_weight.shape), n)
        sample_weight = da.from_array(sample_weight, chunks=(X.chunks[0],), lock=False)
    elif not is_dask_array(sample_weight):
        # in memory: checked whole here, then read chunk by chunk with X
        return da.from_array(check_sample_weight(sample_weight, n), chunks=(X.chunks[0],))
    else:
        if sample_weight.ndim == 1 and any(math.isnan(c) for c in sample_weight.chunks[0]):
            raise ValueError(
                "The dask array sample_weight has unknown chunk sizes; call "
                "sample_weight.compute_chunk_sizes() before passing it."
            )
        _check_lazy_shape(tuple(sample_weight.shape), n)
    if sample_weight.dtype not in (np.float32, np.float64):
        sample_weight = sample_weight.astype(np.float64)
    if tuple(sample_weight.chunks[0]) != tuple(X.chunks[0]):
        sample_weight = sample_weight.rechunk((X.chunks[0],))
    return sample_weight


def sample_weight_for(sample_weight, X, lazy: bool):
    """The weights a ChunkedData over the validated X carries, or None.

    Parameters
    ----------
    sample_weight : None, number, array-like, dask array, Zarr array or path
    X : ndarray or dask array of shape (n_samples, n_features)
        Validated.
    lazy : bool
        X is a dask array.

    Returns
    -------
    None, ndarray of shape (n_samples,) float64 (in-memory X, checked), or
    dask array of shape (n_samples,) chunked like X's rows (lazy X; its
    values are checked by the scan, see :func:`raise_if_invalid`).
    """
    if sample_weight is None:
        return None
    if lazy:
        return _lazy_weights(sample_weight, X)
    if is_path_like(sample_weight):
        from ._input import open_zarr_array

        sample_weight = open_zarr_array(sample_weight)
    if is_zarr_array(sample_weight):
        sample_weight = sample_weight[...]
    elif is_dask_array(sample_weight):
        sample_weight = sample_weight.compute()
    return check_sample_weight(sample_weight, int(X.shape[0]))
