"""Saving and loading fitted mixtures in an open, versioned directory format.

Layout of a model directory::

    model.json        metadata: format, version, parameters, fitted scalars
                      (with the covariance type and component count of the
                      arrays), one entry per array (file, dtype, shape,
                      sha256), any caller metadata, and a sha256 of the
                      document itself
    weights.npy       (K,)
    means.npy         (K, D)
    covariances.npy   shape set by covariance_type
    precisions_cholesky.npy
    weights_init.npy, means_init.npy, precisions_init.npy
                      only when those parameters were given: as given
                      (numeric dtype and shape unchanged)
    online_shift.npy, online_nk.npy, online_sums.npy, online_scatter.npy
                      only with a running state (``online_state_``, left by
                      ``fit`` and ``partial_fit``): its statistics, whose
                      scalars, step count, rows and weight seen and mode are
                      the document's ``online`` section

The document's ``estimator`` names the class: ``BayesianGaussianMixture``
documents add a ``variational`` section and arrays
(:mod:`gmm_engine._persist_variational`); each class's ``load`` refuses the
other's directories, and ``gmm_engine.load_model`` reads either.

Arrays are plain ``.npy`` files read with ``allow_pickle=False``; nothing
is ever pickled.  Loading checks the format marker and version, the
document checksum, every array's checksum, dtype and shape against the
declared covariance type, and that the parameters describe a valid
mixture, and refuses with :class:`ModelFormatError` naming what is wrong.
Saving publishes the directory through :func:`gmm_engine.atomic.publish_dir`
(written under a temporary sibling name, renamed into place), so a reader
never sees a half-written model; ``overwrite=True`` replaces only what
:func:`_check_replaceable` accepts.  A loaded model's fitted attributes are
set by :func:`gmm_engine._fitted.set_fitted`, the one writer, from an
:class:`~gmm_engine.EMState`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from . import _covariance, _online
from ._em import EMState
from ._fitted import fitted_params, set_fitted
from ._params import GMMParams
from ._validation import validate_params
from ._version import __version__
from .atomic import publish_dir
from .exceptions import ModelFormatError
from .npy import load_npy_bytes

FORMAT = "gmm-stream.gaussian-mixture"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"
#: the document's "estimator": which class a model directory holds (documents of
#: any other name, e.g. a subclass's, hold a GaussianMixture)
GAUSSIAN, VARIATIONAL = "GaussianMixture", "BayesianGaussianMixture"

_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
#: user initial parameters, stored as they were given (numeric .npy arrays)
_INIT_ARRAYS = ("weights_init", "means_init", "precisions_init")
_SCALAR_PARAMS = {
    "n_components": int,
    "covariance_type": str,
    "tol": float,
    "reg_covar": float,
    "max_iter": int,
    "n_init": int,
    "init_params": str,
    "warm_start": bool,
    "verbose": int,
    "verbose_interval": int,
    "persist": bool,
    "learning_decay": float,
    "learning_offset": float,
    "missing": str,
}
#: scalar parameters that may also be None
_OPTIONAL_FLOAT_PARAMS = ("half_life",)
_OPTIONAL_INT_PARAMS = ("init_size",)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _float_out(x: float):
    # JSON has no inf or NaN; keep the document standard
    x = float(x)
    return x if math.isfinite(x) else repr(x)


def _float_in(x) -> float:
    return float(x)


def _doc_checksum(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _check_metadata(metadata) -> dict:
    """Refuse, before anything is written, metadata that could not be loaded back."""
    if metadata is None:
        return {}
    problem = None
    if not isinstance(metadata, dict):
        problem = f"got {type(metadata).__name__}"
    else:
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            problem = str(exc)
    if problem is not None:
        raise TypeError(
            "metadata must be a JSON-serialisable dict (str keys; str, int, float, bool, "
            f"None, list and dict values): {problem}. Convert the values (for example "
            "numpy scalars with .item(), arrays with .tolist()) or store them elsewhere."
        )
    return metadata


def _check_replaceable(path: Path) -> None:
    """Refuse ``overwrite=True`` unless ``path`` is a model directory and nothing else.

    Replacing deletes what is at ``path``; only a directory that
    :func:`read_model_document` accepts and that holds nothing but the
    model's own files (or an empty directory) is ours to delete.
    """
    problem = None
    if path.is_symlink():
        problem = "it is a symbolic link"
    elif not path.is_dir():
        problem = "it is a file, not a directory"
    elif not any(path.iterdir()):
        return  # an empty directory: nothing to lose
    else:
        try:
            doc = read_model_document(path)
        except ModelFormatError as exc:
            problem = getattr(exc, "problem", str(exc))
        else:
            own = {MODEL_FILE} | {
                e.get("file") for e in doc["arrays"].values() if isinstance(e, dict)
            }
            others = sorted(p.name for p in path.iterdir() if p.name not in own)
            if others:
                shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
                problem = f"it holds files that are not part of the model ({shown})"
    if problem is not None:
        raise FileExistsError(
            f"{path} exists and is not a gmm-stream model directory that can be replaced: "
            f"{problem}. overwrite=True only replaces a model written by "
            "GaussianMixture.save, so nothing was changed: move or delete it yourself, "
            "or save to another path."
        )


def _npy_entry(arr, fname):
    """(bytes, entry of ``arrays``) of one .npy file."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    data = buf.getvalue()
    entry = {"file": fname, "dtype": str(arr.dtype), "shape": list(arr.shape), "sha256": _sha256(data)}
    return data, entry


def _storable_init_array(name, value):
    """A user initial parameter as a numeric array, or None (with a warning) if it is not one."""
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - ragged lists and such: not storable
        arr = None
    if arr is None or arr.dtype.kind not in "biuf":
        warnings.warn(
            f"The parameter {name}={value!r} is not a numeric array and cannot be stored "
            f"in the model directory; it is saved as None, so the loaded model's "
            f"get_params()[{name!r}] is None.",
            UserWarning,
            stacklevel=5,  # the caller of GaussianMixture.save
        )
        return None
    return np.ascontiguousarray(arr)


def _storable_random_state(rs):
    """``random_state`` as stored: an int, or None (with a warning when it was something else)."""
    if isinstance(rs, (int, np.integer)):
        return int(rs)
    if rs is not None:
        warnings.warn(
            f"The parameter random_state={rs!r} cannot be stored in the model directory "
            "(only an int or None can); it is saved as None, so the loaded model draws "
            "from numpy's global random state. Pass an int random_state to keep it.",
            UserWarning,
            stacklevel=5,  # the caller of GaussianMixture.save
        )
    return None


def _params_section(params: dict, files: dict, arrays: dict) -> dict:
    """The ``params`` section; the initial parameters given go to ``files`` and ``arrays``."""
    stored = {
        **{k: _SCALAR_PARAMS[k](params[k]) for k in _SCALAR_PARAMS if k in params},
        **{k: None if params[k] is None else float(params[k]) for k in _OPTIONAL_FLOAT_PARAMS if k in params},
        **{k: None if params[k] is None else int(params[k]) for k in _OPTIONAL_INT_PARAMS if k in params},
        "random_state": _storable_random_state(params.get("random_state")),
        "acceleration": params.get("acceleration"),
    }
    for name in _INIT_ARRAYS:
        value = params.get(name)
        arr = None if value is None else _storable_init_array(name, value)
        stored[name] = None if arr is None else {"array": name}
        if arr is not None:
            files[name + ".npy"], arrays[name] = _npy_entry(arr, name + ".npy")
    return stored


def _fitted_section(estimator, fitted: GMMParams) -> dict:
    """The ``fitted`` section: the scalars, and the type and count the arrays have."""
    return {
        "covariance_type": fitted.covariance_type,
        "n_components": int(fitted.n_components),
        "n_features_in_": int(estimator.n_features_in_),
        "feature_names_in_": (
            [str(n) for n in estimator.feature_names_in_]
            if hasattr(estimator, "feature_names_in_")
            else None
        ),
        "converged_": bool(estimator.converged_),
        "n_iter_": int(estimator.n_iter_),
        "lower_bound_": _float_out(estimator.lower_bound_),
        "lower_bounds_": [_float_out(v) for v in estimator.lower_bounds_],
        "n_passes_": int(getattr(estimator, "n_passes_", 0)),
    }


def _model_files(estimator, metadata: dict, *, params_section=None, extend=None) -> dict:
    """Every file of the model directory: name -> bytes, ``model.json`` last.

    ``params_section(params, files, arrays)`` writes the constructor
    parameters (the Gaussian mixture's by default); ``extend(doc, files,
    arrays)``, when given, adds an estimator's own sections and arrays
    before the document is checksummed.
    """
    # the fitted arrays, checked against each other, with the covariance type and
    # component count they have (the parameters may have been changed since the fit)
    fitted = fitted_params(estimator)
    files, arrays = {}, {}
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "estimator": type(estimator).__name__,
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "params": (params_section or _params_section)(estimator.get_params(deep=False), files, arrays),
        "fitted": _fitted_section(estimator, fitted),
        "arrays": arrays,
        "metadata": metadata,
    }
    fitted_arrays = {
        "weights_": fitted.weights,
        "means_": fitted.means,
        "covariances_": fitted.covariances,
        "precisions_cholesky_": fitted.precisions_cholesky,
    }
    for attr in _ARRAYS:
        arr = np.ascontiguousarray(fitted_arrays[attr], dtype=np.float64)
        fname = attr.rstrip("_") + ".npy"
        files[fname], arrays[attr] = _npy_entry(arr, fname)
    online = getattr(estimator, "online_state_", None)
    if online is not None:
        doc["online"], online_arrays = _online.to_files(online)
        for name, arr in online_arrays.items():
            files[name + ".npy"], arrays[name] = _npy_entry(arr, name + ".npy")
    if extend is not None:
        extend(doc, files, arrays)
    doc["checksum"] = _doc_checksum(doc)
    files[MODEL_FILE] = json.dumps(doc, indent=2, sort_keys=True).encode()
    return files


def save_model(estimator, path, *, metadata=None, overwrite=False, model_files=None) -> Path:
    """Write a fitted estimator to ``path`` (a directory); see the module docs.

    Parameters
    ----------
    estimator : GaussianMixture
        Fitted.
    path : str or PathLike
        A local (or mounted) path.
    metadata : dict, optional
        JSON-serialisable extra information kept with the model (for
        example an anomaly threshold and where the training data lives).
    overwrite : bool
        Replace an existing model directory at ``path``.  Anything else at
        ``path`` (a file, a foreign directory, a model directory holding
        other files) is refused with ``FileExistsError``.
    model_files : callable, optional
        ``model_files(estimator, metadata) -> {file name: bytes}``, the
        directory's files (``model.json`` last); the Gaussian mixture's by
        default (``_persist_variational`` gives the variational one's).

    Returns
    -------
    Path

    Warns
    -----
    UserWarning
        When a parameter cannot be stored (a ``RandomState`` instance as
        ``random_state``, a non-numeric initial parameter): it is saved as None.
    """
    path = Path(path)
    metadata = _check_metadata(metadata)
    # refused before any work; publish_dir checks again at the moment of the swap
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(
                f"{path} already exists; pass overwrite=True to replace it or choose a new path"
            )
        _check_replaceable(path)
    files = (model_files or _model_files)(estimator, metadata)
    with publish_dir(path, replaceable=_check_replaceable if overwrite else None,
                     exists_hint="Pass overwrite=True to replace it, or choose a new path") as tmp:
        for fname, data in files.items():
            (tmp / fname).write_bytes(data)
    return path


def _is_int(value) -> bool:
    # JSON true/false load as bool, a subclass of int: not a count or a version
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(path, problem, fix="re-save the model with the save(path) of the estimator that wrote it "
          "(GaussianMixture.save or BayesianGaussianMixture.save)"):
    exc = ModelFormatError(f"Cannot load model from {path}: {problem}. To fix: {fix}.")
    exc.problem = problem
    raise exc


def read_model_document(path) -> dict:
    """Parse and check ``model.json`` of a model directory (no arrays read)."""
    path = Path(path)
    if not path.exists():
        _fail(path, "the directory does not exist", "check the path, or fit and save a model first")
    if not path.is_dir():
        _fail(path, "it is a file, not a model directory", "pass the directory that GaussianMixture.save wrote")
    meta = path / MODEL_FILE
    if not meta.is_file():
        _fail(path, f"it has no {MODEL_FILE}, so it is not a gmm-stream model directory",
              "pass the directory that GaussianMixture.save wrote")
    try:
        doc = json.loads(meta.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(path, f"{MODEL_FILE} is not valid JSON ({exc})")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        _fail(path, f"{MODEL_FILE} does not declare format {FORMAT!r} (a foreign directory)",
              "pass the directory that GaussianMixture.save wrote")
    version = doc.get("format_version")
    if not _is_int(version) or version > FORMAT_VERSION or version < 1:
        _fail(path, f"format_version {version!r} is not supported by this release (supports 1..{FORMAT_VERSION})",
              "upgrade gmm-stream, or re-save the model with this release")
    if doc.get("checksum") != _doc_checksum(doc):
        _fail(path, f"{MODEL_FILE} does not match its checksum: it was edited or corrupted after saving")
    for key, kind in (("params", dict), ("fitted", dict), ("arrays", dict), ("metadata", dict)):
        if not isinstance(doc.get(key), kind):
            _fail(path, f"{MODEL_FILE} lacks the {key!r} section")
    return doc


def _read_array(path, doc, attr, shape, ctype=None, K=None, D=None):
    """One array of ``doc["arrays"]``, checksum verified; float64 of ``shape`` unless shape is None.

    With ``shape=None`` (a user initial parameter, stored as given) any
    numeric dtype and shape is accepted.
    """
    entry = doc["arrays"].get(attr)
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        _fail(path, f"{MODEL_FILE} has no entry for {attr}")
    fname = entry["file"]
    if Path(fname).name != fname or fname.startswith("."):
        _fail(path, f"array file name {fname!r} is not a plain file name")
    fpath = path / fname
    if not fpath.is_file():
        _fail(path, f"{fname} is missing")
    data = fpath.read_bytes()
    if _sha256(data) != entry.get("sha256"):
        _fail(path, f"{fname} does not match its sha256 in {MODEL_FILE}: it was modified or corrupted")
    try:
        arr = load_npy_bytes(data)
    except (ValueError, EOFError, OSError) as exc:  # EOFError: empty file
        _fail(path, f"{fname} is not a plain numeric .npy array ({exc})")
    if shape is None:
        if arr.dtype.kind not in "biuf":
            _fail(path, f"{fname} has dtype {arr.dtype}, expected a numeric dtype")
        return arr
    if arr.dtype != np.float64:
        _fail(path, f"{fname} has dtype {arr.dtype}, expected float64")
    if arr.shape != shape:
        _fail(path, f"{fname} has shape {arr.shape}, expected {shape} for "
                    f"covariance_type={ctype!r}, n_components={K}, n_features={D}")
    if not np.all(np.isfinite(arr)):
        _fail(path, f"{fname} contains NaN or infinity")
    return arr


def _is_float(value) -> bool:
    # as _float_out writes them: a JSON number, or 'inf', '-inf', 'nan' for the non-finite
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or value in ("inf", "-inf", "nan")


def _check_fitted_section(path, fitted):
    problems = []
    if not isinstance(fitted.get("converged_"), bool):
        problems.append(f"converged_ must be true or false, got {fitted.get('converged_')!r}")
    n_iter = fitted.get("n_iter_")
    if not _is_int(n_iter) or n_iter < 0:
        problems.append(f"n_iter_ must be a non-negative integer, got {n_iter!r}")
    if not _is_float(fitted.get("lower_bound_")):
        problems.append(f"lower_bound_ must be a number, got {fitted.get('lower_bound_')!r}")
    lbs = fitted.get("lower_bounds_")
    if not isinstance(lbs, list) or not all(_is_float(v) for v in lbs):
        problems.append("lower_bounds_ must be a list of numbers")
    n_passes = fitted.get("n_passes_", 0)  # absent from documents written before it existed
    if not _is_int(n_passes) or n_passes < 0:
        problems.append(f"n_passes_ must be a non-negative integer, got {n_passes!r}")
    if problems:
        _fail(path, "the fitted section of " + MODEL_FILE + " is invalid: " + "; ".join(problems))


def _fitted_arrays(path, doc, ctype, K, D) -> dict:
    """The four fitted arrays, each checked, and checked to describe a valid mixture together."""
    cov = _covariance.get(ctype)
    expected = {
        "weights_": (K,),
        "means_": (K, D),
        "covariances_": cov.param_shape(K, D),
        "precisions_cholesky_": cov.param_shape(K, D),
    }
    arrays = {attr: _read_array(path, doc, attr, shape, ctype, K, D) for attr, shape in expected.items()}
    w = arrays["weights_"]
    # scikit-learn's initialisation from one row per component leaves weights at
    # nk / n_samples (summing to K / n); after any M-step they sum to 1
    if np.any(w < 0) or not 0 < w.sum() <= 1.0 + 1e-6:
        _fail(path, f"weights_ must be non-negative with a sum in (0, 1] (sum {w.sum():.6g})")
    pc = arrays["precisions_cholesky_"]
    problem = cov.precision_factor_problem(pc)
    if problem is not None:
        _fail(path, problem)
    # U^T Sigma U = I when precision = U U^T = Sigma^-1; the tolerance allows
    # for any conditioning a fitted model can have, not for edited arrays.
    if not cov.whitening_error(arrays["covariances_"], pc) <= 1e-3:
        _fail(path, "covariances_ do not match precisions_cholesky_ (one of them was altered)")
    return arrays


def model_kind(doc: dict) -> str:
    """:data:`VARIATIONAL` or :data:`GAUSSIAN`: the estimator a model document holds."""
    return VARIATIONAL if doc.get("estimator") == VARIATIONAL else GAUSSIAN


def check_model_kind(path, doc: dict, expected: str) -> None:
    """Refuse to load a model directory as the other estimator, naming the loader that reads it."""
    kind = model_kind(doc)
    if kind != expected:
        _fail(path, f"it holds a {kind}, not a {expected}",
              f"load it with {kind}.load(path), or with gmm_engine.load_model(path), which reads either")


def fitted_shape(path, doc: dict):
    """``(covariance_type, n_components, n_features)`` of the fitted arrays, checked.

    The estimator's parameters are checked, then the type and count of the
    fitted arrays (they differ after set_params; files that do not record
    them: the same).
    """
    params, fitted = doc["params"], doc["fitted"]
    for section in (params, fitted):
        ctype = section.get("covariance_type", params.get("covariance_type"))
        if not isinstance(ctype, str) or ctype not in _covariance.COVARIANCE_TYPES:
            _fail(path, f"unknown covariance_type {ctype!r}")
        K, D = section.get("n_components", params.get("n_components")), fitted.get("n_features_in_")
        if not (_is_int(K) and _is_int(D)):
            _fail(path, "n_components or n_features_in_ is missing or not an integer")
        if K < 1 or D < 1:
            _fail(path, f"n_components={K} and n_features_in_={D} must be positive")
    return ctype, K, D


def load_model(cls, path):
    """Read, verify and rebuild a fitted ``GaussianMixture``; returns ``(estimator, metadata)``."""
    path = Path(path)
    doc = read_model_document(path)
    check_model_kind(path, doc, GAUSSIAN)
    params, fitted = doc["params"], doc["fitted"]
    ctype, K, D = fitted_shape(path, doc)
    arrays = _fitted_arrays(path, doc, ctype, K, D)
    _check_fitted_section(path, fitted)
    kwargs = {k: params[k] for k in (*_SCALAR_PARAMS, *_OPTIONAL_FLOAT_PARAMS, *_OPTIONAL_INT_PARAMS) if k in params}
    kwargs["random_state"] = params.get("random_state")
    kwargs["acceleration"] = params.get("acceleration")  # validated below
    for name in _INIT_ARRAYS:
        ref = params.get(name)
        if ref is None:
            kwargs[name] = None
        elif isinstance(ref, dict) and ref.get("array") == name:
            kwargs[name] = _read_array(path, doc, name, None)
        else:
            _fail(path, f"the parameter {name} is {ref!r}, expected null or {{'array': {name!r}}}")
    try:
        est = cls(**kwargs)
        validate_params(est)
    except (TypeError, ValueError) as exc:
        _fail(path, f"its parameters are invalid: {exc}")
    names = fitted.get("feature_names_in_")
    if names is not None:
        if not isinstance(names, list) or len(names) != D or not all(isinstance(n, str) for n in names):
            _fail(path, f"feature_names_in_ must be a list of {D} strings")
    state = EMState(
        GMMParams(ctype, arrays["weights_"], arrays["means_"], arrays["covariances_"], arrays["precisions_cholesky_"]),
        n_iter=fitted["n_iter_"],
        lower_bound=_float_in(fitted["lower_bound_"]),
        lower_bounds=tuple(_float_in(v) for v in fitted["lower_bounds_"]),
        converged=fitted["converged_"],
        n_passes=fitted.get("n_passes_", 0),
    )
    return set_fitted(est, state, names, online=_online_state(path, doc, ctype, K, D)), doc["metadata"]


def _online_state(path, doc, ctype, K, D):
    """The running state of the ``online`` section, checked against the fitted arrays (None without one)."""
    section = doc.get("online")
    if section is None:
        return None
    try:
        state = _online.from_files(section, lambda name: _read_array(path, doc, name, None))
    except ValueError as exc:
        _fail(path, f"its online section is invalid: {exc}")
    stats = state.stats
    if stats.covariance_type != ctype or stats.shift.shape != (K, D):
        _fail(path, f"its running statistics are for covariance_type={stats.covariance_type!r} and "
                    f"shift {stats.shift.shape}, the model for {ctype!r} and ({K}, {D})")
    return state
