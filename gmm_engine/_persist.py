"""Saving and loading fitted mixtures in an open, versioned directory format.

Layout of a model directory::

    model.json        metadata: format, version, parameters, fitted scalars,
                      one entry per array (file, dtype, shape, sha256), any
                      caller metadata, and a sha256 of the document itself
    weights.npy       (K,)
    means.npy         (K, D)
    covariances.npy   shape set by covariance_type
    precisions_cholesky.npy

Arrays are plain ``.npy`` files read with ``allow_pickle=False``; nothing
is ever pickled.  Loading checks the format marker and version, the
document checksum, every array's checksum, dtype and shape against the
declared covariance type, and that the parameters describe a valid
mixture, and refuses with :class:`ModelFormatError` naming what is wrong.
Saving writes a temporary sibling directory and renames it into place,
so a reader never sees a half-written model.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from . import __version__, _covariance
from ._validation import validate_params
from .exceptions import ModelFormatError

FORMAT = "gmm-stream.gaussian-mixture"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"

_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
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
}


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


def save_model(estimator, path, *, metadata=None, overwrite=False) -> Path:
    """Write a fitted estimator to ``path`` (a directory); see the module docs.

    Parameters
    ----------
    estimator : GaussianMixture
        Fitted.
    path : str or PathLike
    metadata : dict, optional
        JSON-serialisable extra information kept with the model (for
        example an anomaly threshold and where the training data lives).
    overwrite : bool
        Replace an existing model directory at ``path``.

    Returns
    -------
    Path
    """
    path = Path(path)
    metadata = _check_metadata(metadata)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True to replace it or choose a new path"
        )
    params = estimator.get_params(deep=False)
    rs = params.get("random_state")
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "estimator": type(estimator).__name__,
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "params": {
            **{k: _SCALAR_PARAMS[k](params[k]) for k in _SCALAR_PARAMS if k in params},
            "random_state": int(rs) if isinstance(rs, (int, np.integer)) else None,
        },
        "fitted": {
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
        },
        "arrays": {},
        "metadata": metadata,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for attr in _ARRAYS:
            arr = np.ascontiguousarray(getattr(estimator, attr), dtype=np.float64)
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            data = buf.getvalue()
            fname = attr.rstrip("_") + ".npy"
            (tmp / fname).write_bytes(data)
            doc["arrays"][attr] = {
                "file": fname,
                "dtype": "float64",
                "shape": list(arr.shape),
                "sha256": _sha256(data),
            }
        doc["checksum"] = _doc_checksum(doc)
        (tmp / MODEL_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _is_int(value) -> bool:
    # JSON true/false load as bool, a subclass of int: not a count or a version
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(path, problem, fix="re-save the model with GaussianMixture.save(path)"):
    raise ModelFormatError(f"Cannot load model from {path}: {problem}. To fix: {fix}.")


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


def _whitening_error(ctype, covariances, prec_chol) -> float:
    """Largest entry of ``U^T Sigma U - I`` (0 for a consistent pair; NaN-safe)."""
    if ctype == "full":
        white = np.einsum("kji,kjl,klm->kim", prec_chol, covariances, prec_chol)
        eye = np.eye(prec_chol.shape[-1])
    elif ctype == "tied":
        white = prec_chol.T @ covariances @ prec_chol
        eye = np.eye(prec_chol.shape[-1])
    else:  # diag, spherical: elementwise
        white = covariances * prec_chol**2
        eye = 1.0
    err = np.abs(white - eye)
    return float(np.max(err)) if np.all(np.isfinite(err)) else math.inf


def load_model(cls, path):
    """Read, verify and rebuild a fitted estimator; returns ``(estimator, metadata)``."""
    path = Path(path)
    doc = read_model_document(path)
    params, fitted = doc["params"], doc["fitted"]
    ctype = params.get("covariance_type")
    if not isinstance(ctype, str) or ctype not in _covariance.COVARIANCE_TYPES:
        _fail(path, f"unknown covariance_type {ctype!r}")
    K, D = params.get("n_components"), fitted.get("n_features_in_")
    if not (_is_int(K) and _is_int(D)):
        _fail(path, "n_components or n_features_in_ is missing or not an integer")
    if K < 1 or D < 1:
        _fail(path, f"n_components={K} and n_features_in_={D} must be positive")
    cov = _covariance.get(ctype)
    expected = {
        "weights_": (K,),
        "means_": (K, D),
        "covariances_": cov.param_shape(K, D),
        "precisions_cholesky_": cov.param_shape(K, D),
    }
    arrays = {}
    for attr, shape in expected.items():
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
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:  # EOFError: empty file
            _fail(path, f"{fname} is not a plain numeric .npy array ({exc})")
        if arr.dtype != np.float64:
            _fail(path, f"{fname} has dtype {arr.dtype}, expected float64")
        if arr.shape != shape:
            _fail(path, f"{fname} has shape {arr.shape}, expected {shape} for "
                        f"covariance_type={ctype!r}, n_components={K}, n_features={D}")
        if not np.all(np.isfinite(arr)):
            _fail(path, f"{fname} contains NaN or infinity")
        arrays[attr] = arr
    w = arrays["weights_"]
    # scikit-learn's initialisation from one row per component leaves weights at
    # nk / n_samples (summing to K / n); after any M-step they sum to 1
    if np.any(w < 0) or not 0 < w.sum() <= 1.0 + 1e-6:
        _fail(path, f"weights_ must be non-negative with a sum in (0, 1] (sum {w.sum():.6g})")
    pc = arrays["precisions_cholesky_"]
    if ctype in ("full", "tied"):
        mats = pc.reshape((-1, D, D))
        if np.any(np.tril(mats, -1) != 0) or np.any(np.diagonal(mats, axis1=1, axis2=2) <= 0):
            _fail(path, "precisions_cholesky_ are not upper triangular with a positive diagonal")
    elif np.any(pc <= 0):
        _fail(path, "precisions_cholesky_ are not positive")
    # U^T Sigma U = I when precision = U U^T = Sigma^-1; the tolerance allows
    # for any conditioning a fitted model can have, not for edited arrays.
    if not _whitening_error(ctype, arrays["covariances_"], pc) <= 1e-3:
        _fail(path, "covariances_ do not match precisions_cholesky_ (one of them was altered)")

    kwargs = {k: params[k] for k in _SCALAR_PARAMS if k in params}
    kwargs["random_state"] = params.get("random_state")
    try:
        est = cls(**kwargs)
        validate_params(est)
    except (TypeError, ValueError) as exc:
        _fail(path, f"its parameters are invalid: {exc}")
    for attr, arr in arrays.items():
        setattr(est, attr, arr)
    est.precisions_ = cov.precisions(arrays["precisions_cholesky_"])
    est.n_features_in_ = D
    names = fitted.get("feature_names_in_")
    if names is not None:
        if not isinstance(names, list) or len(names) != D or not all(isinstance(n, str) for n in names):
            _fail(path, f"feature_names_in_ must be a list of {D} strings")
        est.feature_names_in_ = np.asarray(names, dtype=object)
    try:
        est.converged_ = bool(fitted["converged_"])
        est.n_iter_ = int(fitted["n_iter_"])
        est.lower_bound_ = _float_in(fitted["lower_bound_"])
        est.lower_bounds_ = [_float_in(v) for v in fitted["lower_bounds_"]]
    except (KeyError, TypeError, ValueError):
        _fail(path, "the fitted section (converged_, n_iter_, lower_bound_, lower_bounds_) is incomplete")
    return est, doc["metadata"]
