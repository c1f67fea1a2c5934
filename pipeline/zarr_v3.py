"""Writing a small Zarr v3 group of 1-D NumPy arrays directly: its JSON documents and chunk files.

A scores store of a few hundred rows is a handful of tiny files, yet
writing it through ``zarr`` costs ~25 ms: every ``create_array``,
``__setitem__`` and attribute update is a round trip to zarr's event-loop
thread and on to a file thread.  :func:`write_group` writes the same
files itself, as the Zarr v3 specification lays them out and as
``zarr`` 3.1 writes them by default (regular chunk grid, ``/``-separated
chunk keys ``c/<i>``, the ``bytes`` codec then ``zstd`` level 0 without
checksum, every chunk full-sized with the last one padded by the fill
value), so ``zarr`` reads them back as its own
(``tests/test_scores_store.py`` compares the two: the same JSON
documents, unindented here, and the same chunk bytes).

Only what the scores stores need: 1-D arrays of bool, integer and float
dtypes in a fresh directory; the caller publishes the directory
atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["write_group"]

#: the compressor zarr 3.1 gives ``create_array`` by default
_ZSTD = {"name": "zstd", "configuration": {"level": 0, "checksum": False}}


def _data_type(dtype: np.dtype) -> str:
    if dtype.kind == "b":
        return "bool"
    if dtype.kind in "iuf":
        return dtype.name  # int64, float64, ...: the v3 names are NumPy's
    raise TypeError(f"no Zarr v3 data type for {dtype} here: only bool, integer and float arrays are written")


def _array_document(dtype: np.dtype, n: int, chunk_rows: int) -> dict:
    # single-byte types have no byte order, and zarr omits the configuration for them
    bytes_codec = {"name": "bytes"} if dtype.itemsize == 1 else {"name": "bytes", "configuration": {"endian": "little"}}
    fill = False if dtype.kind == "b" else (0.0 if dtype.kind == "f" else 0)
    return {
        "shape": [n],
        "data_type": _data_type(dtype),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk_rows]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": [bytes_codec, _ZSTD],
        "attributes": {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def _write_json(path: Path, document: dict) -> None:
    # unindented (zarr indents by two spaces): only then does json use its C encoder, and a
    # store's attributes hold its statistics, K x D x D numbers
    path.write_text(json.dumps(document, allow_nan=True))


def write_group(root, arrays: dict, chunk_rows: int, attributes: dict) -> None:
    """Write ``arrays`` (name -> 1-D ndarray, equal lengths) as a Zarr v3 group at the empty directory ``root``.

    Parameters
    ----------
    root : path
        An existing, empty directory (the publisher's temporary one).
    arrays : dict of str to ndarray, each of shape (n,)
        bool, integer or float; stored little-endian.
    chunk_rows : int
        Rows per chunk (>= 1); the last chunk is padded to it with the fill value.
    attributes : dict
        The group's JSON attributes.
    """
    from numcodecs import Zstd

    codec = Zstd(level=0, checksum=False)
    root = Path(root)
    for name, values in arrays.items():
        values = np.asarray(values)
        dtype = values.dtype.newbyteorder("<") if values.dtype.itemsize > 1 else values.dtype
        values = values.astype(dtype, copy=False)
        n = values.shape[0]
        folder = root / name
        os.mkdir(folder)
        _write_json(folder / "zarr.json", _array_document(values.dtype, n, chunk_rows))
        if n:
            os.mkdir(folder / "c")
        for i, start in enumerate(range(0, n, chunk_rows)):
            chunk = values[start:start + chunk_rows]
            if len(chunk) < chunk_rows:
                chunk = np.concatenate([chunk, np.zeros(chunk_rows - len(chunk), dtype=values.dtype)])
            (folder / "c" / str(i)).write_bytes(codec.encode(np.ascontiguousarray(chunk).tobytes()))
    _write_json(root / "zarr.json", {"attributes": attributes, "zarr_format": 3, "node_type": "group"})
