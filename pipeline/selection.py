"""Model selection over a grid of component counts and covariance types.

1. :func:`prepare_selection_data` draws a uniform random sample of rows
   (or all rows) and splits it into a training part and a held-out part,
   written as Zarr arrays so grid tasks share them by path.
2. Trimming (on by default when a contamination is given): anomalies in
   the training data would otherwise earn a broad "background" component
   of their own, and BIC would prefer one more component than the data's
   structure has.  The most flexible candidate (largest K, ``full``) is
   fitted once; the ``contamination`` fraction of rows it finds least
   likely (its calibrated threshold) is removed from both parts, and every
   candidate is then compared on the same trimmed rows.
3. :func:`evaluate_candidate` fits one (K, covariance type) and reports
   BIC and AIC on the training part (with the fitted parameters, one
   scoring pass) and the mean log-likelihood on the held-out part.
4. :func:`choose` picks the lowest BIC or AIC, or the highest held-out
   log-likelihood.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gmm_engine import ComponentCollapseError, ConvergenceWarning, GaussianMixture

from .data import open_data
from .threshold import calibrate_threshold

logger = logging.getLogger(__name__)

#: samples up to this many bytes are gathered on the client to be written out
_IN_MEMORY_SAMPLE_BYTES = 1 << 30


@dataclass(frozen=True)
class SelectionData:
    train: str
    holdout: str
    n_train: int
    n_holdout: int
    n_trimmed_train: int
    n_trimmed_holdout: int
    trim_threshold: float | None
    feature_names: list | None

    def to_dict(self) -> dict:
        return asdict(self)


def _write_array(path: Path, X, names):
    """Write a numpy or dask (n, D) array to a new Zarr array at ``path``."""
    import zarr

    n, D = X.shape
    rows = max(1, min(n, (64 << 20) // max(1, D * X.dtype.itemsize)))
    z = zarr.create_array(str(path), shape=(n, D), chunks=(rows, D), dtype=X.dtype, overwrite=True)
    if hasattr(X, "dask"):
        import dask.array as da

        da.store(X.rechunk((rows, D)), z, lock=False)
    else:
        z[:] = X
    if names:
        z.attrs["feature_names"] = list(names)
    return str(path)


def _subset(X, mask, names, path):
    """Rows of X where mask holds, written to ``path``; returns the path and row count."""
    import dask

    est_bytes = float(mask.sum().compute()) * X.shape[1] * X.dtype.itemsize if hasattr(mask, "dask") else 0
    sub = X[mask]
    if est_bytes <= _IN_MEMORY_SAMPLE_BYTES:
        (values,) = dask.compute(sub) if hasattr(sub, "dask") else (sub,)
        return _write_array(path, np.asarray(values), names), len(values)
    sub = sub.compute_chunk_sizes()
    return _write_array(path, sub, names), int(sub.shape[0])


def prepare_selection_data(data: str, out_dir, *, holdout_fraction: float = 0.1,
                           sample_rows: int | None = None, contamination: float | None = None,
                           trim: bool = True, probe_params: dict | None = None,
                           seed: int = 0) -> SelectionData:
    """Sample, split and (optionally) trim the data the grid is compared on.

    Parameters
    ----------
    data : str
        Zarr array path or URL.
    out_dir : path
        Receives ``train.zarr`` and ``holdout.zarr``.
    holdout_fraction : float
    sample_rows : int, optional
        Training rows to draw (uniformly, without replacement); default all.
    contamination : float, optional
        Fraction of rows to trim as anomalies; None or ``trim=False`` keeps all.
    probe_params : dict
        ``GaussianMixture`` parameters of the trimming model (largest K, 'full').
    seed : int

    Returns
    -------
    SelectionData
    """
    import dask.array as da

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    X, names = open_data(data)
    n = int(X.shape[0])
    total = n if sample_rows is None else min(n, int(math.ceil(sample_rows / (1 - holdout_fraction))))
    p = total / n
    u = da.random.default_rng(seed).random(n, chunks=X.chunks[0])
    cut = p * (1 - holdout_fraction)
    train_path, n_train = _subset(X, u < cut, names, out_dir / "train.zarr")
    hold_path, n_hold = _subset(X, (u >= cut) & (u < p), names, out_dir / "holdout.zarr")
    if n_train < 2 or n_hold < 1:
        raise ValueError(
            f"The selection sample has {n_train} training and {n_hold} held-out rows; "
            "increase sample_rows or holdout_fraction."
        )
    logger.info("selection sample: %d training rows, %d held-out rows", n_train, n_hold)
    trimmed_train = trimmed_hold = 0
    thr_value = None
    if trim and contamination:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe = GaussianMixture(**(probe_params or {})).fit(train_path)
        thr = calibrate_threshold(probe, train_path, contamination, random_state=seed)
        thr_value = thr.threshold
        Xt, _ = open_data(train_path)
        Xh, _ = open_data(hold_path)
        # score by path so the feature names are checked too
        keep_t = probe.score_samples(train_path) > thr_value
        keep_h = probe.score_samples(hold_path) > thr_value
        train_path, kept_t = _subset(Xt, keep_t, names, out_dir / "train-trimmed.zarr")
        hold_path, kept_h = _subset(Xh, keep_h, names, out_dir / "holdout-trimmed.zarr")
        trimmed_train, trimmed_hold = n_train - kept_t, n_hold - kept_h
        n_train, n_hold = kept_t, kept_h
        logger.info(
            "trimmed %d training and %d held-out rows below the probe model's threshold %.6g",
            trimmed_train, trimmed_hold, thr_value,
        )
    return SelectionData(train_path, hold_path, n_train, n_hold, trimmed_train, trimmed_hold,
                         thr_value, names)


def evaluate_candidate(train: str, holdout: str, n_components: int, covariance_type: str,
                       base_params: dict, out_dir) -> dict:
    """Fit one candidate and score it.

    Returns
    -------
    dict
        ``n_components``, ``covariance_type``, ``bic``, ``aic``,
        ``train_loglik`` and ``heldout_loglik`` (means per row),
        ``n_parameters``, ``n_iter``, ``converged``, ``seconds``,
        ``model_dir``, ``status`` ('ok' or 'failed') and ``error``.
    """
    t0 = time.perf_counter()
    row = {"n_components": int(n_components), "covariance_type": covariance_type}
    params = {**base_params, "n_components": int(n_components), "covariance_type": covariance_type}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm = GaussianMixture(**params).fit(train)
    except (ComponentCollapseError, ValueError) as exc:
        logger.warning("candidate K=%d %s failed: %s", n_components, covariance_type, exc)
        return {**row, "status": "failed", "error": str(exc), "bic": math.inf, "aic": math.inf,
                "heldout_loglik": -math.inf, "seconds": time.perf_counter() - t0}
    criteria = gm.information_criteria(train)
    model_dir = Path(out_dir) / f"K{n_components}-{covariance_type}"
    gm.save(model_dir, overwrite=True)
    return {
        **row,
        "status": "ok",
        "error": None,
        "bic": criteria.bic,
        "aic": criteria.aic,
        "train_loglik": criteria.mean_loglik,
        "heldout_loglik": gm.score(holdout),
        "n_parameters": criteria.n_parameters,
        "n_iter": gm.n_iter_,
        "converged": bool(gm.converged_),
        "seconds": time.perf_counter() - t0,
        "model_dir": str(model_dir),
    }


def choose(rows: list[dict], criterion: str = "bic") -> dict:
    """The best successful candidate: lowest BIC/AIC or highest held-out log-likelihood."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        raise ValueError(
            "Every candidate failed to fit (see their errors); widen the grid, increase "
            "reg_covar, or check the data."
        )
    if criterion == "heldout":
        return max(ok, key=lambda r: r["heldout_loglik"])
    if criterion not in ("bic", "aic"):
        raise ValueError(f"criterion must be 'bic', 'aic' or 'heldout', got {criterion!r}")
    return min(ok, key=lambda r: r[criterion])
