"""Reading rows of a local Zarr v3 array with one copy per chunk.

EM reads the whole training array on every iteration, so the cost of a
read is paid ``max_iter`` times.  Zarr's general read path (async store,
codec pipeline, an indexer that copies each decoded chunk into the result)
moved 1-1.9 GB/s per core on these machines for uncompressed chunks and
~0.9 GB/s for Blosc-LZ4, where reading the chunk files straight into the
result runs at 4-5 GB/s and 1.5-1.8 GB/s: on a machine whose cores also do
the arithmetic, that difference is CPU taken from the E-step.

:class:`ZarrRows` is what :func:`gmm_engine.mixture.zarr_to_dask` hands to
``dask.array.from_array``.  For the arrays ``gmm ingest`` writes (local
store, regular row chunks spanning every column, the bytes codec alone or
followed by Blosc or zstd, no sharding) a row range is read file by file: an
uncompressed chunk with ``readinto`` into its rows of the result, a Blosc
or zstd chunk decompressed into them (zstd is Zarr's default codec; its
general path decodes into a new buffer and copies, ~2x the CPU here).  Anything else (remote stores, sharding,
other codecs, column chunks) is read by Zarr itself.  A missing chunk file
is the fill value, as in Zarr; a chunk whose size or header disagrees
with the array's metadata is an error naming the chunk.
"""

from __future__ import annotations

import os
import sys

import numpy as np

#: Blosc 1 frame header: version, versionlz, flags, typesize, nbytes, blocksize, cbytes
_BLOSC_HEADER = 16


class ZarrChunkError(ValueError):
    """A chunk file of a Zarr array cannot be read as its metadata says."""


class _Layout:
    """What the direct reader needs to know of an eligible array."""

    def __init__(self, root: str, z, codec: str):
        self.root = root
        self.n, self.D = (int(s) for s in z.shape)
        self.rows = int(z.chunks[0])
        self.dtype = np.dtype(z.dtype)
        self.row_bytes = self.D * self.dtype.itemsize
        self.codec = codec  # 'raw', 'blosc' or 'zstd'
        self.fill = z.metadata.fill_value
        self.encode = z.metadata.encode_chunk_key

    def path(self, i: int) -> str:
        return os.path.join(self.root, *self.encode((i, 0)).split("/"))


def _layout(z) -> _Layout | None:
    """The direct-read layout of ``z``, or None when Zarr must read it."""
    try:
        from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec
        from zarr.storage import LocalStore
    except ImportError:  # pragma: no cover - zarr < 3
        return None
    meta = getattr(z, "metadata", None)
    if getattr(meta, "zarr_format", None) != 3 or not isinstance(getattr(z, "store", None), LocalStore):
        return None
    if getattr(z, "shards", None) is not None or len(z.shape) != 2 or z.chunks[1] != z.shape[1]:
        return None
    dtype = np.dtype(z.dtype)
    if dtype.kind not in "fiub" or dtype.hasobject:
        return None
    codecs = tuple(meta.codecs)
    if not codecs or type(codecs[0]) is not BytesCodec or len(codecs) > 2:
        return None
    codec = "raw"
    if len(codecs) == 2:
        codec = {BloscCodec: "blosc", ZstdCodec: "zstd"}.get(type(codecs[1]))
        if codec is None:
            return None
    endian = getattr(codecs[0], "endian", None)
    if dtype.itemsize > 1 and endian is not None and getattr(endian, "value", endian) != sys.byteorder:
        return None
    root = os.path.join(str(z.store.root), *[p for p in str(z.path).split("/") if p])
    return _Layout(root, z, codec)


class ZarrRows:
    """A Zarr array seen as rows, for ``dask.array.from_array``.

    Parameters
    ----------
    z : zarr.Array of shape (n, D)

    ``rows[a:b]`` and ``rows[a:b, :]`` read rows ``a .. b``; other
    selections go to the Zarr array.
    """

    def __init__(self, z):
        self.z = z
        self.shape = tuple(int(s) for s in z.shape)
        self.dtype = np.dtype(z.dtype)
        self.ndim = len(self.shape)
        self._layout = _layout(z)

    @property
    def direct(self) -> bool:
        """Whether row ranges are read file by file (else by Zarr)."""
        return self._layout is not None

    def __getitem__(self, index):
        rows = _row_range(index, self.shape)
        if rows is None or self._layout is None:
            return np.asarray(self.z[index])
        return read_rows(self._layout, *rows)

    def __reduce__(self):
        return ZarrRows, (self.z,)


def _row_range(index, shape):
    """(start, stop) when ``index`` selects whole rows with step 1, else None."""
    if not isinstance(index, tuple):
        index = (index,)
    if not index or len(index) > 2 or not isinstance(index[0], slice):
        return None
    if len(index) == 2 and index[1] != slice(None) and (
        not isinstance(index[1], slice) or index[1].indices(shape[1]) != (0, shape[1], 1)
    ):
        return None
    start, stop, step = index[0].indices(shape[0])
    if step != 1:
        return None
    return start, max(start, stop)


def read_rows(layout: _Layout, start: int, stop: int) -> np.ndarray:
    """Rows ``start .. stop`` of the array, read chunk file by chunk file."""
    out = np.empty((stop - start, layout.D), dtype=layout.dtype)
    if stop <= start:
        return out
    r = layout.rows
    flat = out.reshape(-1).view(np.uint8)
    for i in range(start // r, (stop - 1) // r + 1):
        c0 = i * r  # the chunk's first row
        lo, hi = max(start, c0), min(stop, c0 + r, layout.n)
        dest = flat[(lo - start) * layout.row_bytes:(hi - start) * layout.row_bytes]
        path = layout.path(i)
        try:
            fh = open(path, "rb", buffering=0)
        except FileNotFoundError:
            out[lo - start:hi - start] = layout.fill  # never written: Zarr's fill value
            continue
        try:
            with fh:
                if layout.codec == "blosc":
                    _read_blosc(fh, layout, c0, lo, hi, dest)
                elif layout.codec == "zstd":
                    _read_zstd(fh, layout, c0, lo, dest)
                else:
                    _read_raw(fh, layout, c0, lo, dest)
        except ZarrChunkError:
            raise
        except Exception as exc:  # codec errors on damaged chunks come in many types
            raise ZarrChunkError(_damaged(layout, i, c0, f"{type(exc).__name__}: {exc}")) from exc
    return out


def _damaged(layout, i, c0, why):
    last = min(c0 + layout.rows, layout.n) - 1
    return (f"Zarr array {layout.root} has a damaged chunk {layout.encode((i, 0))!r} (rows {c0}..{last}): {why}. "
            "Re-create the array (gmm ingest) from its source.")


def _read_raw(fh, layout, c0, lo, dest):
    size = os.fstat(fh.fileno()).st_size
    expected = layout.rows * layout.row_bytes
    if size != expected:
        raise ZarrChunkError(_damaged(layout, (c0 // layout.rows), c0,
                                      f"the file has {size} bytes, the array's metadata says {expected}"))
    fh.seek((lo - c0) * layout.row_bytes)
    view = memoryview(dest)
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:])
        if not n:
            raise ZarrChunkError(_damaged(layout, c0 // layout.rows, c0, "the file ended early"))
        got += n


def _read_blosc(fh, layout, c0, lo, hi, dest):
    from numcodecs import blosc

    raw = fh.read()
    i = c0 // layout.rows
    expected = layout.rows * layout.row_bytes
    if len(raw) < _BLOSC_HEADER:
        raise ZarrChunkError(_damaged(layout, i, c0, f"the file has {len(raw)} bytes, less than a Blosc header"))
    nbytes = int.from_bytes(raw[4:8], "little")
    cbytes = int.from_bytes(raw[12:16], "little")
    if nbytes != expected or cbytes != len(raw):
        raise ZarrChunkError(_damaged(
            layout, i, c0, f"its Blosc header says {nbytes} bytes from {cbytes} compressed, the file has "
            f"{len(raw)} and the array's metadata says {expected} decompressed"))
    if lo == c0 and len(dest) == expected:
        blosc.decompress(raw, dest)  # the whole chunk, straight into its rows
        return
    whole = np.empty(expected, dtype=np.uint8)  # an edge chunk, or part of one: decode, then copy the rows
    blosc.decompress(raw, whole)
    _copy_rows(whole, layout, c0, lo, dest)


def _copy_rows(whole, layout, c0, lo, dest):
    """The rows of a decoded chunk (first row ``c0``) that ``dest`` holds, from row ``lo`` on."""
    a = (lo - c0) * layout.row_bytes
    dest[:] = whole[a:a + len(dest)]


#: zstd frame magic number, little-endian
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_content_size(raw: bytes) -> int | None:
    """Decompressed size a zstd frame header declares, or None when it declares none.

    Frame header (RFC 8878, 3.1.1.1): magic, a descriptor byte (bits 7-6
    the content-size field's code, bit 5 single segment, bits 1-0 the
    dictionary id's code), a window byte unless single segment, the
    dictionary id, then the content size.
    """
    if len(raw) < 5 or raw[:4] != _ZSTD_MAGIC:
        raise ValueError("not a zstd frame (bad magic number)")
    fhd = raw[4]
    fcs_code, single = fhd >> 6, (fhd >> 5) & 1
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    size = (1 if single else 0, 2, 4, 8)[fcs_code]
    if size == 0:
        return None
    if len(raw) < pos + size:
        raise ValueError("the zstd frame header is cut short")
    value = int.from_bytes(raw[pos:pos + size], "little")
    return value + 256 if size == 2 else value


def _read_zstd(fh, layout, c0, lo, dest):
    from numcodecs.zstd import Zstd

    raw = fh.read()
    i = c0 // layout.rows
    expected = layout.rows * layout.row_bytes
    declared = zstd_content_size(raw)
    if declared is not None and declared != expected:
        raise ZarrChunkError(_damaged(
            layout, i, c0, f"its zstd header says {declared} bytes decompressed, the array's metadata says {expected}"))
    if declared is not None and lo == c0 and len(dest) == expected:
        Zstd().decode(raw, out=dest)  # the whole chunk, straight into its rows
        return
    whole = np.frombuffer(Zstd().decode(raw), dtype=np.uint8)
    if len(whole) != expected:
        raise ZarrChunkError(_damaged(
            layout, i, c0, f"it decompresses to {len(whole)} bytes, the array's metadata says {expected}"))
    _copy_rows(whole, layout, c0, lo, dest)
