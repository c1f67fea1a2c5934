"""Initialise, fit (with checkpoints), calibrate and register models.

Pure functions over paths: each opens the training data from its store,
runs on whatever Dask scheduler is current (a ``distributed.Client`` the
caller entered, else the threaded scheduler) and writes its result to a
directory whose path it returns.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from gmm_engine import GaussianMixture, load_model, open_zarr_array
from gmm_engine.checkpoint import Checkpointer, load_checkpoint, state_from_estimator

from .data import data_fingerprint
from .registry import ModelRegistry
from .threshold import Threshold, calibrate_threshold

logger = logging.getLogger(__name__)

#: parameters that describe the search, not the model; dropped from fingerprints
_RUNTIME_PARAMS = ("verbose", "verbose_interval", "persist", "warm_start")


class ResumeMismatchError(ValueError):
    """A checkpoint belongs to other data or other model parameters."""


def check_enough_rows(fingerprint: dict, params: dict) -> None:
    """Refuse before any pass: scikit-learn's own message does not say which setting to change."""
    k, n = int(params.get("n_components", 1)), int(fingerprint["shape"][0])
    if k > n:
        raise ValueError(
            f"n_components={k} but the training data {fingerprint['path']} has only {n} rows: a "
            "mixture needs at least one row per component. Lower model.n_components (for `gmm "
            "select`, the grid's n_components) or train on more rows."
        )


def check_missing_policy(data: str, params: dict) -> None:
    """Refuse, before any pass, training data with missing values for a model that does not marginalise them."""
    report = open_zarr_array(data).attrs.get("ingest_report") or {}
    n = int(report.get("n_incomplete_rows") or 0)
    if n and params.get("missing", "error") != "marginalize":
        raise ValueError(
            f"The training data {data} has {n:,} rows with missing values (ingested with bad_rows: marginalize), "
            "but model.missing is 'error': set model.missing: marginalize in the config to fit them on their "
            "observed features, or ingest again with bad_rows: drop."
        )


def _model_params(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in _RUNTIME_PARAMS}


def initialize_model(data: str, params: dict, out_dir, *, n_init: int | None = None) -> Path:
    """Initial parameters for a fit, saved as a model directory (``n_iter_ = 0``).

    ``GaussianMixture.initialize``: with ``n_init > 1`` the initialisations
    share one random stream (as scikit-learn's) and the one with the
    highest initial mean log-likelihood is kept (one pass each), recorded
    as ``initial_loglik`` in the metadata.

    Parameters
    ----------
    data : str
        Zarr array path or URL.
    params : dict
        ``GaussianMixture`` parameters; ``max_iter`` is ignored here.
    out_dir : path
    n_init : int, optional
        Defaults to ``params['n_init']``.

    Returns
    -------
    Path
    """
    fingerprint = data_fingerprint(data)
    check_enough_rows(fingerprint, params)
    check_missing_policy(data, params)
    n_init = int(n_init or params.get("n_init", 1))
    gm = GaussianMixture(**{**params, "max_iter": 0, "n_init": n_init}).initialize(data)
    # saved as the one initialisation kept: its parameters say n_init=1, the metadata how many were tried
    gm.set_params(n_init=1)
    return gm.save(Path(out_dir), overwrite=True, metadata={
        "initialization": {"init_params": gm.init_params, "n_init": n_init,
                           "initial_loglik": gm.lower_bound_ if n_init > 1 else None},
        "data": fingerprint,
    })


@dataclass(frozen=True)
class FitResult:
    model: GaussianMixture
    resumed_from: int  # iteration the fit resumed from (0: a fresh start)
    checkpoint_dir: Path


def fit_model(data: str, params: dict, *, checkpoint_dir, init_dir=None, resume: bool = False,
              on_iteration=None) -> FitResult:
    """EM from an initialisation, saving a checkpoint after every iteration.

    Parameters
    ----------
    data : str
        Zarr array path or URL.
    params : dict
        ``GaussianMixture`` parameters.
    checkpoint_dir : path
        Receives ``iter-NNNNNN/`` model directories and ``LATEST``.
    init_dir : path, optional
        A model saved by :func:`initialize_model`; without it the estimator
        initialises itself (``init_params``, ``n_init``).
    resume : bool
        Continue from the newest checkpoint if there is one (it must come
        from the same data and parameters); the result equals an
        uninterrupted fit.
    on_iteration : callable, optional
        Also called with every ``EMState`` (progress reporting).

    Returns
    -------
    FitResult
    """
    fingerprint = data_fingerprint(data)
    check_enough_rows(fingerprint, params)
    check_missing_policy(data, params)
    model_params = _model_params(params)
    ckpt = Checkpointer(checkpoint_dir, params, metadata={"data": fingerprint, "params": model_params})

    def hook(state):
        ckpt(state)
        if on_iteration is not None:
            on_iteration(state)

    gm = GaussianMixture(**params)
    loaded = load_checkpoint(checkpoint_dir) if resume else None
    if loaded is not None:
        state, _, meta = loaded
        if meta.get("data", {}).get("digest") != fingerprint["digest"]:
            raise ResumeMismatchError(
                f"The checkpoint in {checkpoint_dir} was written for other training data "
                f"({meta.get('data', {}).get('path')}); delete it or fit without --resume."
            )
        if meta.get("params") != json.loads(json.dumps(model_params)):
            raise ResumeMismatchError(
                f"The checkpoint in {checkpoint_dir} was written with other model parameters "
                f"({meta.get('params')}); use the same config or fit without --resume."
            )
        logger.info("resuming from the checkpoint at iteration %d", state.n_iter)
        gm.resume(data, state, on_iteration=hook)
        return FitResult(gm, state.n_iter, Path(checkpoint_dir))
    if init_dir is not None:
        init, _ = load_model(init_dir)
        start = state_from_estimator(init)
        gm.resume(data, start, on_iteration=hook)
    else:
        gm.fit(data, on_iteration=hook)
    return FitResult(gm, 0, Path(checkpoint_dir))


def register_model(model: GaussianMixture, data: str, registry: ModelRegistry, *,
                   contamination: float, make_current: bool = True, extra: dict | None = None,
                   random_state: int = 0, reason: str = "registered") -> tuple[str, Threshold]:
    """Calibrate the anomaly threshold on the training data and register the model.

    ``reason`` is recorded in the registry's history when the model becomes current.

    Returns
    -------
    version : str
    threshold : Threshold
    """
    thr = calibrate_threshold(model, data, contamination, random_state=random_state)
    metadata = {
        "anomaly": thr.to_dict(),
        "drift_reference": thr.reference.to_dict(),
        "data": data_fingerprint(data),
        "feature_names": (list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else None),
        "lower_bounds": list(model.lower_bounds_),
        **(extra or {}),
    }
    version = registry.register(model, metadata, make_current=make_current, reason=reason,
                                attachments={"drift_score_sample": thr.reference.score_sample})
    return version, thr
