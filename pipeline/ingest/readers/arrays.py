"""Numeric arrays: ``.npy`` files and Zarr arrays, read in row slices.

Both are 2-D ``(n_rows, n_features)`` arrays of one numeric dtype, so a
batch is a row slice converted as a whole (:func:`pipeline.ingest.convert.numpy_block`).
Columns have no names in a ``.npy`` file (``x0, x1, ...``); a Zarr array
may carry a ``feature_names`` attribute.  Zarr batches are rounded to
whole source chunks (or shards), so no chunk is decoded twice.
"""

from __future__ import annotations

import numpy as np

from ..convert import numpy_block, numpy_kind
from ..location import Location
from ..report import IngestError
from .base import TARGET_BATCH_BYTES, Reader, invalid_names

__all__ = ["ArrayReader", "NpyReader", "ZarrReader"]


def _default_names(d):
    return [f"x{i}" for i in range(d)]


class ArrayReader(Reader):
    """Row-sliced numeric arrays (.npy, Zarr); subclasses implement ``_rows``."""

    batch_rows: int | None
    unit_rows = 1  # batches are whole multiples of this many rows

    def _setup(self, shape, dtype, what):
        if len(shape) != 2:
            fix = (
                " Save it as (n_rows, n_features), e.g. x.reshape(-1, 1) for one feature."
                if len(shape) == 1
                else ""
            )
            raise IngestError(
                f"{self.loc.text} holds a {len(shape)}-D {what} of shape {tuple(shape)}; "
                f"a 2-D (n_rows, n_features) array is needed.{fix}"
            )
        kind = numpy_kind(np.dtype(dtype))
        self.n_rows, d = int(shape[0]), int(shape[1])
        self.dtype = np.dtype(dtype)
        self.kinds = [kind] * d
        self.types = [self.dtype.name] * d
        if kind is None:
            raise IngestError(
                f"{self.loc.text} has dtype {self.dtype}, which is not numeric "
                "(bool, integer or float). Convert it to float before ingesting."
            )

    def _rows(self, start, stop):  # pragma: no cover - abstract
        raise NotImplementedError

    def blocks(self, sel, out_dtype, tolerant):
        d = len(self.names)
        names = [self.names[i] for i in sel]
        take = None if list(sel) == list(range(d)) else np.asarray(sel)
        batch = self.batch_rows or max(1, TARGET_BATCH_BYTES // (8 * d))
        batch = max(self.unit_rows, batch // self.unit_rows * self.unit_rows)
        for start in range(0, self.n_rows, batch):
            stop = min(start + batch, self.n_rows)
            block = self._rows(start, stop)
            if take is not None:
                block = block[:, take]
            yield numpy_block(block, names, out_dtype, start), None, stop - start


class NpyReader(ArrayReader):
    """A .npy file read in row slices with plain file reads.

    Not through ``np.load(mmap_mode='r')``: every page a memory map touches
    stays in the process's RSS (measured 162 MiB for a 128 MB file and 406 MiB
    at 384 MB), which memory monitors such as Dask's nanny count.
    """

    format = "npy"

    def __init__(self, loc: Location, batch_rows=None):
        # imported here, like every engine import of the ingest: importing
        # gmm_engine loads numba (~0.3 s), which an ingest never needs
        from gmm_engine.npy import read_npy_header

        self.loc, self.batch_rows = loc, batch_rows
        try:
            with loc.open() as f:
                version = np.lib.format.read_magic(f)
                # under gmm_engine's lock: concurrent header parsing can crash CPython 3.11
                shape, self.fortran, dtype = read_npy_header(f, version)
                self.offset = f.tell()
        except Exception as e:  # noqa: BLE001 - numpy raises several kinds
            raise IngestError(
                f"Cannot read {loc.text} as a .npy file: {e}. It must be an array saved "
                "with numpy.save."
            ) from None
        if dtype.hasobject or dtype.fields is not None:
            raise IngestError(
                f"{loc.text} holds {'Python objects' if dtype.hasobject else 'records'} "
                f"(dtype {dtype}); a plain numeric (n_rows, n_features) array is needed. "
                "Convert it to float before saving."
            )
        self._setup(shape, dtype, "array")
        self.names = _default_names(int(shape[1]))
        size = loc.size()
        need = self.offset + int(np.prod(shape)) * dtype.itemsize
        if size is not None and size < need:
            raise IngestError(
                f"{loc.text} is truncated: {size} bytes, its header promises {need}. "
                "Re-create the file."
            )

    def _read_exact(self, f, nbytes):
        buf = f.read(nbytes)
        if len(buf) != nbytes:
            raise IngestError(f"{self.loc.text} ended early (truncated?); re-create the file.")
        return buf

    def _rows(self, start, stop):
        d, item, n = len(self.names), self.dtype.itemsize, stop - start
        with self.loc.open() as f:
            if not self.fortran:
                f.seek(self.offset + start * d * item)
                buf = self._read_exact(f, n * d * item)
                return np.frombuffer(buf, dtype=self.dtype).reshape(n, d)
            out = np.empty((n, d), dtype=self.dtype)
            for j in range(d):  # column-major: one contiguous run per column
                f.seek(self.offset + (j * self.n_rows + start) * item)
                out[:, j] = np.frombuffer(self._read_exact(f, n * item), dtype=self.dtype)
            return out


class ZarrReader(ArrayReader):
    """A Zarr array (v2 or v3, local or fsspec URL) read in whole source chunks."""

    format = "zarr"

    def __init__(self, loc: Location, batch_rows=None):
        import zarr

        self.loc, self.batch_rows = loc, batch_rows
        try:
            self.z = zarr.open_array(
                loc.text if loc.is_url else loc.path,
                mode="r",
                storage_options=loc.storage_options if loc.is_url else None,
            )
        except Exception as e:  # noqa: BLE001 - zarr raises several kinds
            raise IngestError(
                f"Cannot open {loc.text} as a Zarr array: {type(e).__name__}: {e}. "
                "If it is a group, pass the path of an array inside it."
            ) from None
        self._setup(self.z.shape, self.z.dtype, "Zarr array")
        self.unit_rows = max(1, int((getattr(self.z, "shards", None) or self.z.chunks)[0]))
        d = int(self.z.shape[1])
        stored = self.z.attrs.get("feature_names")
        self.names = _default_names(d)
        if stored is not None:
            problem = invalid_names(stored, d)
            if problem:
                self.names_problem = (
                    f"the feature_names attribute of {loc.text} is invalid ({problem})"
                )
            else:
                self.names = list(stored)

    def _rows(self, start, stop):
        try:
            return self.z[start:stop]
        except Exception as e:  # noqa: BLE001 - codecs raise many kinds on damaged bytes
            raise IngestError(
                f"Zarr array {self.loc.text} has a damaged chunk: rows {start}..{stop - 1} cannot "
                f"be decoded ({type(e).__name__}: {e}). The source was left as it is; re-create "
                "or re-deliver it."
            ) from None
