"""Argument validation shared by the plots.

Every check raises :class:`ValueError` with a message that names the
argument, what was received and what to pass instead, before anything is
drawn or written: a rejected call leaves no file behind.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import numpy as np

from gmm_engine import COVARIANCE_TYPES


def check_path(path) -> Path:
    """``path`` as a :class:`~pathlib.Path` to a ``.png`` file (not a directory)."""
    try:
        path = Path(os.fspath(path))
    except TypeError:
        raise ValueError(
            f"path must be a str or os.PathLike, got {type(path).__name__}: "
            "pass the destination file name, e.g. report_dir / 'selection.png'."
        ) from None
    if path.suffix.lower() != ".png":
        raise ValueError(
            f"path {str(path)!r} does not end in '.png' but the plot is written as PNG: "
            "use a file name ending in .png."
        )
    if path.is_dir():
        raise ValueError(
            f"path {str(path)!r} is a directory: pass a file name inside it, "
            "e.g. path / 'plot.png'."
        )
    return path


def finite_float(value, name: str, fix: str) -> float:
    """``value`` as a finite float; ``fix`` ends the error message."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:
            value = float(np.asarray(value).item())
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a real number, got {value!r}: {fix}") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}: {fix}")
    return value


def positive_int(value, name: str) -> int:
    """``value`` as an int >= 1 (a bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}: pass an int >= 1.")
    return int(value)


def vector(values, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """``values`` as a 1-D float64 array, non-empty unless ``allow_empty``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a 1-D array of numbers; could not convert {type(values).__name__}: "
            "pass a list or numpy array of floats."
        ) from None
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D, got shape {arr.shape}: pass a flat array (e.g. {name}.ravel())."
        )
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: there is nothing to plot; pass at least one value.")
    return arr


def check_all_finite(arr: np.ndarray, name: str, fix: str) -> None:
    """Refuse NaN and inf, counting them and giving the first flat indices."""
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.flatnonzero(bad.ravel())[:5].tolist()
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf; first at flat "
            f"indices {first}): {fix}"
        )


def bool_vector(values, name: str, n: int, n_name: str) -> np.ndarray:
    """One boolean (or 0/1) per row of the ``n``-row argument ``n_name``."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{name} has shape {arr.shape} but {n_name} has {n} rows: pass one boolean per row."
        )
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            raise ValueError(
                f"{name} must be boolean (or 0/1), got dtype {arr.dtype}: pass a boolean mask "
                "with True for anomalies."
            )
        arr = arr.astype(bool)
    return arr


def check_covariance_type(covariance_type) -> str:
    """``covariance_type`` if it is one of :data:`gmm_engine.COVARIANCE_TYPES`."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"Unknown covariance_type {covariance_type!r}: use one of {list(COVARIANCE_TYPES)} "
            "(the GaussianMixture's covariance_type)."
        )
    return covariance_type
