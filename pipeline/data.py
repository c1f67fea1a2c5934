"""Training data by path: opening it for a pass, and what identifies it.

A training set is a 2-D Zarr array (``(rows, features)``, as ``gmm
ingest`` writes it, with a ``feature_names`` attribute), named by a local
path or an fsspec URL.  :func:`open_data` gives the dask array the engine
passes over (:func:`fit_input` the rows themselves when they are small
enough to fit in memory); :func:`data_fingerprint` the identity that checkpoints and
registered models record, so a resume or a comparison can tell whether it
is still the same data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from gmm_engine import open_zarr_array, zarr_to_dask


def open_data(data: str, storage_options: dict | None = None):
    """The training data as a dask array, and its feature names (or None).

    Parameters
    ----------
    data : str
        Path or fsspec URL of a 2-D Zarr array.
    storage_options : dict, optional
        Passed to fsspec for a URL.

    Returns
    -------
    X : dask.array.Array of shape (n_rows, n_features)
    names : list of str or None
    """
    z = open_zarr_array(data, storage_options=storage_options)
    if len(z.shape) != 2:
        raise ValueError(
            f"{data} holds an array of shape {z.shape}; a 2-D (rows, features) array is "
            "needed: ingest the data with `gmm ingest` first."
        )
    names = z.attrs.get("feature_names")
    return zarr_to_dask(z), (list(names) if names else None)


def data_fingerprint(data: str) -> dict:
    """What identifies the training data: location, shape, dtype, features, metadata digest.

    Returns
    -------
    dict
        ``path``, ``shape``, ``dtype``, ``feature_names`` and ``digest``, a
        sha256 of the array's shape, dtype, chunks and ingest attributes
        (``feature_names``, ``ingest_report``, ``created_at``).
    """
    z = open_zarr_array(data)
    meta = {
        "shape": list(z.shape),
        "dtype": str(z.dtype),
        "chunks": list(z.chunks),
        "feature_names": z.attrs.get("feature_names"),
        "ingest_report": z.attrs.get("ingest_report"),
        "created_at": z.attrs.get("created_at"),
    }
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()
    return {"path": str(data), **{k: meta[k] for k in ("shape", "dtype", "feature_names")}, "digest": digest}


def array_bytes(path: str) -> int | None:
    """Bytes of the local Zarr array at ``path`` in memory, from its metadata alone; None for a URL or unreadable metadata."""
    if "://" in str(path):
        return None
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
        return int(np.prod(meta["shape"])) * np.dtype(meta["data_type"]).itemsize
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fit_input(path: str, local_max_bytes: int):
    """The rows at ``path`` in memory (a DataFrame, keeping the feature names) when small enough, else the path."""
    z = open_zarr_array(path)
    n, D = z.shape
    if n * D * z.dtype.itemsize > local_max_bytes:
        return path
    values = z[...]
    names = z.attrs.get("feature_names")
    if not names:
        return values
    import pandas as pd

    return pd.DataFrame(values, columns=list(names), copy=False)
