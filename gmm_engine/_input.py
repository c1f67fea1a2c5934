"""What the estimator accepts as X, and what it turns it into.

Accepted: array-likes (NumPy, lists, pandas), dask arrays, dask
DataFrames, Zarr arrays, and paths or fsspec URLs of Zarr arrays.  A path
is opened read-only; a Zarr array becomes a dask array chunked in whole
storage chunks (:func:`zarr_to_dask`); a dask DataFrame becomes a dask
array lazily.  Lazy input is validated from its metadata alone, nothing
read; in-memory input is validated (and scanned for NaN and inf) by
``check_numpy``.  Feature names come from DataFrame columns or a Zarr
array's ``feature_names`` attribute.

Three entries, one per use:

* :func:`training_data` -> (``ChunkedData``, feature names): what fitting
  passes over;
* :func:`scoring_input` -> (array, is_lazy): what prediction maps over,
  checked against the fitted estimator;
* :func:`fitted_data` -> ``ChunkedData``: what a pass under a fitted
  model goes over (``partial_fit`` after the first call, weighted scores),
  checked as :func:`scoring_input` checks.

``sample_weight`` comes with X to the first and the last
(:mod:`gmm_engine._weights`); the ``ChunkedData`` carries it.
"""

from __future__ import annotations

import math

import numpy as np

from ._chunked import NumpyData
from ._missing import marginalizes
from ._validation import (
    check_dim_and_dtype,
    check_feature_names,
    check_is_fitted,
    check_n_features,
    check_n_samples,
    check_numpy,
    get_feature_names,
    is_dask_array,
    is_dask_dataframe,
    is_path_like,
    is_zarr_array,
    is_zarr_group,
)
from ._weights import sample_weight_for
from ._zarr_io import ZarrRows

#: target bytes per Dask chunk when we choose the chunking (Zarr input)
TARGET_CHUNK_BYTES = 64 * 2**20


def _group_message(path, group):
    arrays = sorted(str(k) for k in group.array_keys())
    groups = sorted(str(k) for k in group.group_keys())
    where = str(path).rstrip("/")
    if arrays:
        listing = "its arrays: " + ", ".join(repr(a) for a in arrays)
        example = f"for example {where}/{arrays[0]}"
    else:
        listing = "it holds no arrays"
        example = "the path of a 2-D Zarr array"
    if groups:
        listing += "; its groups: " + ", ".join(repr(g) for g in groups)
    return (
        f"{where} is a Zarr group, not an array ({listing}). GaussianMixture reads one "
        f"2-D array of shape (n_samples, n_features): pass its path instead, {example}."
    )


def open_zarr_array(path, storage_options=None):
    """Open a Zarr array read-only from a local path or any fsspec URL.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``; the message says to check it or ingest first.
    ValueError
        ``path`` is a Zarr group; the message lists its arrays.
    """
    import zarr

    try:
        return zarr.open_array(str(path), mode="r", storage_options=storage_options)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No Zarr array at {path!s}: check the path, or ingest the data first "
            "(`gmm ingest` or pipeline.ingest)."
        ) from None
    except Exception as exc:  # zarr's own error for a group is internal jargon
        try:
            group = zarr.open_group(str(path), mode="r", storage_options=storage_options)
        except Exception:  # noqa: BLE001 - not a group either: zarr's error stands
            raise exc from None
        raise ValueError(_group_message(path, group)) from None


def zarr_to_dask(z):
    """A dask array over a Zarr array, chunked in whole storage chunks of ~64 MiB.

    Parameters
    ----------
    z : zarr.Array
        Of shape (n_samples, n_features); other shapes are refused with
        scikit-learn's messages before anything is read.

    Returns
    -------
    dask.array.Array
    """
    import dask.array as da

    check_dim_and_dtype(z.shape, z.dtype, array_repr=repr(z))
    n, D = z.shape
    unit = int((getattr(z, "shards", None) or z.chunks)[0])
    row_bytes = max(1, D * z.dtype.itemsize)
    rows = max(unit, (TARGET_CHUNK_BYTES // row_bytes) // unit * unit)
    # ZarrRows reads local chunk files straight into the rows (see _zarr_io); a random
    # name spares tokenising the array's store on every call
    return da.from_array(ZarrRows(z), chunks=(min(rows, max(n, 1)), D), asarray=False, lock=False,
                         name=False, meta=np.empty((0, 0), dtype=z.dtype))


def _lazy_input(X, min_samples, name="GaussianMixture"):
    """Validate a dask array's metadata (no data read) and fix its dtype; messages name the estimator ``name``."""
    if len(X.shape) == 2 and any(math.isnan(c) for c in X.chunks[0]):
        raise ValueError(
            "The dask array has unknown chunk sizes; call X.compute_chunk_sizes() "
            f"(or X = X.persist()) before passing it to {name}."
        )
    check_dim_and_dtype(X.shape, X.dtype, name, array_repr=repr(X))
    check_n_samples(X.shape[0], X.shape[1], X.shape, min_samples, name)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    return X


def _resolve(X):
    """Turn paths, Zarr arrays and dask DataFrames into dask arrays; return (array, names source).

    A dask DataFrame becomes a dask array lazily (``to_dask_array(lengths=True)``
    computes the partition lengths, not the data); its columns stay the
    names source.
    """
    if is_path_like(X):
        X = open_zarr_array(X)
    if is_zarr_group(X):
        raise ValueError(_group_message(getattr(X, "store_path", X), X))
    if is_zarr_array(X):
        return zarr_to_dask(X), X
    if is_dask_dataframe(X):
        return X.to_dask_array(lengths=True), X
    return X, X


def _chunked(X, lazy, weights, persist=False, missing=False):
    if not lazy:
        data = NumpyData(X, weights=weights)
    else:
        from ._dask_data import DaskData  # imports dask, which in-memory input never needs

        data = DaskData(X, persist=persist, weights=weights)
    data.missing = bool(missing)
    return data


def training_data(X, *, persist=False, check_features=None, sample_weight=None, min_samples=2,
                  name="GaussianMixture", missing=False):
    """The data a fit passes over, and the input's feature names.

    Parameters
    ----------
    X : any accepted input
        At least ``min_samples`` rows.
    persist : bool
        Keep dask input in (cluster) memory for the whole fit.
    check_features : callable, optional
        Called with the feature count before the data is set up (and,
        with ``persist``, loaded): a warm start refuses X here.
    sample_weight : None, number, array-like, dask array, Zarr array or path, optional
        Row weights, validated here (lazy ones from their metadata; their
        values by the scan).
    min_samples : int
    name : str
        The estimator named in scikit-learn's messages.
    missing : bool
        NaN entries are marginalised (``missing='marginalize'``): accepted
        here, and the data's ``missing`` tells the passes.

    Returns
    -------
    data : ChunkedData
        ``DaskData`` for lazy input, else ``NumpyData``.
    names : ndarray of str (object) or None
    """
    X, names_source = _resolve(X)
    lazy = is_dask_array(X)
    X = (_lazy_input(X, min_samples=min_samples, name=name) if lazy
         else check_numpy(X, min_samples=min_samples, name=name, missing=missing))
    names = get_feature_names(names_source)  # raises on mixed name types
    if check_features is not None:
        check_features(X.shape[1])
    weights = sample_weight_for(sample_weight, X, lazy)
    return _chunked(X, lazy, weights, persist, missing), names


def fitted_data(X, estimator, *, sample_weight=None):
    """X (and its weights) as ChunkedData for a pass under ``estimator``'s fitted parameters.

    Validated as :func:`scoring_input` validates (one row suffices; the
    feature count and names must be the fitted ones).  Lazy X is checked
    for NaN and inf by the pass itself (``checked_estep_chunk``,
    ``loglik_chunk``), not by a scan of its own.
    """
    X, lazy = scoring_input(X, estimator)
    return _chunked(X, lazy, sample_weight_for(sample_weight, X, lazy), missing=marginalizes(estimator))


class _NamedColumns:
    """Stands for an input whose column names are known apart from it (for the feature-name check)."""

    def __init__(self, names):
        self.columns = list(names)


def scoring_input(X, estimator, *, in_memory=False, feature_names=None):
    """X validated for prediction with a fitted estimator; returns (array, is_lazy).

    With ``in_memory`` a Zarr array or dask array is read into memory
    first (its feature names are still checked) and scored as NumPy.
    In-memory X may hold NaN entries when the estimator marginalises them
    (``missing='marginalize'``).  ``feature_names`` names the columns of
    an X that carries no names of its own (a NumPy array); they are
    checked as a DataFrame's would be.
    """
    check_is_fitted(estimator)
    X, names_source = _resolve(X)
    if feature_names is not None:
        names_source = _NamedColumns(feature_names)
    if in_memory and is_dask_array(X):
        X = np.asarray(names_source[...]) if is_zarr_array(names_source) else X.compute(scheduler="sync")
    lazy = is_dask_array(X)
    name = type(estimator).__name__
    X = (_lazy_input(X, min_samples=1, name=name) if lazy
         else check_numpy(X, min_samples=1, name=name, missing=marginalizes(estimator)))
    check_n_features(estimator, X.shape[1])
    # The kernels trust the parameter shapes (no bounds checks): refuse
    # attributes that disagree with X however they came to be.
    means_shape = np.shape(estimator.means_)
    if len(means_shape) == 2:  # other shapes: refused by the fitted-parameter check
        check_n_features(estimator, X.shape[1], expected=means_shape[1])
    check_feature_names(estimator, names_source)
    return X, lazy
