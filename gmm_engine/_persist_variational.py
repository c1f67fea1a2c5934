"""Saving and loading ``BayesianGaussianMixture`` in the model directory format of :mod:`gmm_engine._persist`.

The directory is a Gaussian mixture's (``model.json``, ``weights.npy``,
``means.npy``, ``covariances.npy``, ``precisions_cholesky.npy``, all
checksummed), with ``"estimator": "BayesianGaussianMixture"`` and:

* the ``params`` section holding this estimator's constructor parameters;
  ``mean_prior`` and an array ``covariance_prior`` are stored as given
  (``mean_prior.npy``, ``covariance_prior.npy``), a float
  ``covariance_prior`` as a number;
* a ``variational`` section: ``weight_concentration_prior_type`` (of the
  fit) and the scalar priors ``weight_concentration_prior_``,
  ``mean_precision_prior_``, ``degrees_of_freedom_prior_``;
* the arrays of the posterior and of the array priors:
  ``weight_concentration.npy`` ((2, K) Beta parameters for the Dirichlet
  process, (K,) otherwise), ``mean_precision.npy`` (K,),
  ``degrees_of_freedom.npy`` ((K,), () for tied), ``mean_prior_.npy``
  (D,) and ``covariance_prior_.npy`` (the covariance type's prior shape).

Loading verifies everything the Gaussian mixture's loader verifies, the
shapes and the positivity of the posterior (``degrees_of_freedom_ > D -
1``, where its digammas are defined), and refuses a Gaussian mixture's
directory (and ``GaussianMixture.load`` refuses this one).  Nothing is
ever pickled.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from . import _covariance
from ._fitted import fitted_variational, set_fitted_variational
from ._params import GMMParams
from ._persist import (
    _SCALAR_PARAMS,
    VARIATIONAL,
    _check_fitted_section,
    _fail,
    _fitted_arrays,
    _float_in,
    _float_out,
    _is_float,
    _model_files,
    _npy_entry,
    _read_array,
    _storable_init_array,
    _storable_random_state,
    check_model_kind,
    fitted_shape,
    read_model_document,
    save_model,
)
from ._validation import validate_params
from ._variational import WEIGHT_PRIORS, VariationalParams, VariationalPrior
from ._variational_em import VariationalState

_FIX = "re-save the model with BayesianGaussianMixture.save(path)"
#: the constructor's scalar parameters: the Gaussian mixture's that it shares, and its own
_SCALARS = {
    **{k: v for k, v in _SCALAR_PARAMS.items() if k not in ("learning_decay", "learning_offset", "missing")},
    "weight_concentration_prior_type": str,
}
_OPTIONAL_FLOATS = ("weight_concentration_prior", "mean_precision_prior", "degrees_of_freedom_prior")
_ARRAY_PARAMS = ("mean_prior", "covariance_prior")
_SCALAR_PRIORS = ("weight_concentration_prior_", "mean_precision_prior_", "degrees_of_freedom_prior_")
_POSTERIOR = ("weight_concentration_", "mean_precision_", "degrees_of_freedom_")


def _params_section(params: dict, files: dict, arrays: dict) -> dict:
    stored = {
        **{k: _SCALARS[k](params[k]) for k in _SCALARS},
        **{k: None if params[k] is None else float(params[k]) for k in _OPTIONAL_FLOATS},
        "random_state": _storable_random_state(params.get("random_state")),
    }
    for name in _ARRAY_PARAMS:
        value = params[name]
        if value is None or (name == "covariance_prior" and isinstance(value, (int, float, np.number))
                             and not isinstance(value, (bool, np.bool_))):
            stored[name] = None if value is None else float(value)
            continue
        arr = _storable_init_array(name, value)
        stored[name] = None if arr is None else {"array": name}
        if arr is not None:
            files[name + ".npy"], arrays[name] = _npy_entry(arr, name + ".npy")
    return stored


def _variational_section(est, doc, files, arrays) -> None:
    vp = fitted_variational(est)
    doc["estimator"] = VARIATIONAL  # a subclass's directory still loads as this estimator
    doc["variational"] = {
        "weight_concentration_prior_type": vp.prior_type,
        **{k: _float_out(getattr(est, k)) for k in _SCALAR_PRIORS},
    }
    values = {
        "weight_concentration_": vp.weight_concentration,
        "mean_precision_": vp.mean_precision,
        "degrees_of_freedom_": vp.degrees_of_freedom,
        "mean_prior_": est.mean_prior_,
        "covariance_prior_": est.covariance_prior_,
    }
    for attr, value in values.items():
        fname = attr.rstrip("_") + ".npy" if attr in _POSTERIOR else attr + ".npy"
        files[fname], arrays[attr] = _npy_entry(np.array(value, dtype=np.float64), fname)


def save_variational(est, path, *, metadata=None, overwrite=False) -> Path:
    """Write a fitted ``BayesianGaussianMixture`` to the directory ``path``; as :func:`_persist.save_model`."""
    files = functools.partial(
        _model_files, params_section=_params_section, extend=functools.partial(_variational_section, est),
    )
    return save_model(est, path, metadata=metadata, overwrite=overwrite, model_files=files)


def _constructor(path, cls, doc):
    """The estimator of the ``params`` section, its parameters validated."""
    params = doc["params"]
    kwargs = {k: params[k] for k in (*_SCALARS, *_OPTIONAL_FLOATS) if k in params}
    kwargs["random_state"] = params.get("random_state")
    for name in _ARRAY_PARAMS:
        ref = params.get(name)
        if ref is None or (name == "covariance_prior" and _is_float(ref) and not isinstance(ref, str)):
            kwargs[name] = ref
        elif isinstance(ref, dict) and ref.get("array") == name:
            kwargs[name] = _read_array(path, doc, name, None)
        else:
            _fail(path, f"the parameter {name} is {ref!r}, expected null, a number or {{'array': {name!r}}}", _FIX)
    try:
        est = cls(**kwargs)
        validate_params(est)
    except (TypeError, ValueError) as exc:
        _fail(path, f"its parameters are invalid: {exc}", _FIX)
    return est


def _posterior_and_prior(path, doc, ctype, K, D):
    """The ``variational`` section and its arrays, checked: ``(prior_type, arrays, scalars)``."""
    section = doc.get("variational")
    if not isinstance(section, dict):
        _fail(path, "model.json lacks the 'variational' section", _FIX)
    prior_type = section.get("weight_concentration_prior_type")
    if prior_type not in WEIGHT_PRIORS:
        _fail(path, f"unknown weight_concentration_prior_type {prior_type!r}", _FIX)
    scalars = {}
    for name in _SCALAR_PRIORS:
        value = section.get(name)
        if not _is_float(value) or not _float_in(value) > 0:
            _fail(path, f"{name} must be a positive number, got {value!r}", _FIX)
        scalars[name] = _float_in(value)
    cov = _covariance.get(ctype)
    shapes = {
        "weight_concentration_": WEIGHT_PRIORS[prior_type].concentration_shape(K),
        "mean_precision_": (K,),
        "degrees_of_freedom_": cov.dof_shape(K),
        "mean_prior_": (D,),
        "covariance_prior_": cov.prior_shape(D),
    }
    arrays = {attr: _read_array(path, doc, attr, shape, ctype, K, D) for attr, shape in shapes.items()}
    for attr in ("weight_concentration_", "mean_precision_"):
        if np.any(arrays[attr] <= 0):
            _fail(path, f"{attr} must be positive", _FIX)
    if np.any(arrays["degrees_of_freedom_"] <= D - 1):
        _fail(path, f"degrees_of_freedom_ must exceed n_features - 1 = {D - 1}", _FIX)
    if not scalars["degrees_of_freedom_prior_"] > D - 1:
        _fail(path, f"degrees_of_freedom_prior_ must exceed n_features - 1 = {D - 1}", _FIX)
    return prior_type, arrays, scalars


def _scalar_or_array(arr):
    return float(arr) if arr.ndim == 0 else arr


def load_variational(cls, path):
    """Read, verify and rebuild a fitted ``BayesianGaussianMixture``; returns ``(estimator, metadata)``.

    Raises
    ------
    ModelFormatError
        The directory is missing, corrupt, tampered with, not a model, or a
        ``GaussianMixture``'s.
    """
    path = Path(path)
    doc = read_model_document(path)
    check_model_kind(path, doc, VARIATIONAL)
    fitted = doc["fitted"]
    ctype, K, D = fitted_shape(path, doc)
    gaussian = _fitted_arrays(path, doc, ctype, K, D)
    _check_fitted_section(path, fitted)
    est = _constructor(path, cls, doc)
    names = fitted.get("feature_names_in_")
    if names is not None and (not isinstance(names, list) or len(names) != D
                              or not all(isinstance(n, str) for n in names)):
        _fail(path, f"feature_names_in_ must be a list of {D} strings", _FIX)
    prior_type, arrays, scalars = _posterior_and_prior(path, doc, ctype, K, D)
    params = VariationalParams(
        prior_type,
        GMMParams(ctype, gaussian["weights_"], gaussian["means_"], gaussian["covariances_"],
                  gaussian["precisions_cholesky_"]),
        arrays["weight_concentration_"], arrays["mean_precision_"],
        _scalar_or_array(arrays["degrees_of_freedom_"]),
    )
    prior = VariationalPrior(
        prior_type, scalars["weight_concentration_prior_"], scalars["mean_precision_prior_"],
        arrays["mean_prior_"], scalars["degrees_of_freedom_prior_"],
        _scalar_or_array(arrays["covariance_prior_"]),
    )
    state = VariationalState(
        params,
        n_iter=fitted["n_iter_"],
        lower_bound=_float_in(fitted["lower_bound_"]),
        lower_bounds=tuple(_float_in(v) for v in fitted["lower_bounds_"]),
        converged=fitted["converged_"],
        n_passes=fitted.get("n_passes_", 0),
    )
    return set_fitted_variational(est, state, prior, names), doc["metadata"]
