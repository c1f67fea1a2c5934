"""The chunked Zarr v3 writer: rows in, whole compressed chunks out.

Chunks span all features and hold ``chunk_rows`` rows, by default about
:data:`TARGET_CHUNK_BYTES` (the spec asks for 16-64 MiB per chunk).  Rows
are copied into one of two chunk buffers; a full buffer is handed to a
single background thread that resizes the array and writes it, so
compression overlaps reading and parsing the next batch, with at most one
write in flight (memory: two chunks).  A source smaller than one chunk
gets one chunk sized to it, not a mostly empty padded one.

The array is created lazily, on the first write, in the directory the
publisher gives (a temporary sibling of the destination).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .report import IngestError

__all__ = ["COMPRESSIONS", "TARGET_CHUNK_BYTES", "MemoryWriter", "ZarrWriter", "compressors"]

#: codecs ``compression`` may name.  EM reads the whole array once per
#: iteration, so decoding speed matters more than ratio: Blosc-LZ4 with byte
#: shuffle decodes about twice as fast as zstd here and, on noisy float
#: data, compresses about as well (0.94 vs 0.93 of raw on Gaussian float32).
COMPRESSIONS = ("lz4", "zstd", "none")
#: target uncompressed bytes of one stored chunk (the spec asks for 16-64 MiB)
TARGET_CHUNK_BYTES = 32 * 2**20


def compressors(compression="lz4"):
    """The Zarr v3 compressors for a ``compression`` name (see :data:`COMPRESSIONS`)."""
    import zarr

    if compression == "lz4":
        return [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    if compression == "zstd":
        return [zarr.codecs.ZstdCodec(level=3)]
    if compression == "none":
        return None
    raise IngestError(
        f"compression must be one of {list(COMPRESSIONS)}, got {compression!r}: 'lz4' (default) decodes "
        "fastest, 'zstd' compresses smooth data more, 'none' stores raw bytes."
    )


class ZarrWriter:
    """Append rows to a growing Zarr array, one whole chunk per write.

    Parameters
    ----------
    path : str or Path
        Directory of the array to create.
    n_features : int
    dtype : numpy dtype
    chunk_rows : int, optional
        Rows per chunk; default about :data:`TARGET_CHUNK_BYTES`, and one
        chunk sized to the data when it is smaller than that.
    compressors : list, optional
        From :func:`compressors`.
    """

    def __init__(self, path, n_features, dtype, chunk_rows=None, compressors=None):
        self.path, self.d, self.dtype = path, n_features, np.dtype(dtype)
        self.compressors = compressors
        self.chunks_fixed = chunk_rows is not None
        self.chunk_rows = (
            int(chunk_rows) if self.chunks_fixed
            else max(1, TARGET_CHUNK_BYTES // (n_features * self.dtype.itemsize))
        )
        self.array = None
        self.n_rows = 0  # rows handed to the writer thread
        self._buffers = [None, None]
        self._fill = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-write")
        self._pending = None

    def _buffer(self):
        if self._buffers[0] is None:
            self._buffers[0] = np.empty((self.chunk_rows, self.d), dtype=self.dtype)
        return self._buffers[0]

    def append(self, rows):
        """Add ``rows`` (an ``(n, n_features)`` array); full chunks are written."""
        i, n = 0, len(rows)
        while i < n:
            buf = self._buffer()
            take = min(self.chunk_rows - self._fill, n - i)
            buf[self._fill:self._fill + take] = rows[i:i + take]
            self._fill += take
            i += take
            if self._fill == self.chunk_rows:
                self._flush()

    def _flush(self):
        if not self._fill:
            return
        self._wait()
        buf = self._buffers[0][: self._fill]
        self._pending = self._pool.submit(self._write, buf, self.n_rows)
        self.n_rows += self._fill
        self._fill = 0
        # The in-flight buffer belongs to the writer until _wait(); fill the other.
        self._buffers.reverse()

    def _wait(self):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _create(self, chunk_rows):
        import zarr

        self.array = zarr.create_array(
            store=str(self.path),
            shape=(0, self.d),
            chunks=(chunk_rows, self.d),
            dtype=self.dtype,
            compressors=self.compressors,
            fill_value=0.0,
            zarr_format=3,
        )

    def _write(self, buf, start):
        if self.array is None:
            self._create(self.chunk_rows)
        stop = start + len(buf)
        self.array.resize((stop, self.d))
        self.array[start:stop] = buf

    def close(self):
        """Write the last partial chunk and return the array (None if no rows)."""
        if self.array is None and self._pending is None and self._fill and not self.chunks_fixed:
            # Everything fits in one chunk: size it to the data instead of
            # padding a mostly empty chunk that every reader would decompress.
            self._create(self._fill)
        self._flush()
        self._wait()
        self._pool.shutdown()
        return self.array

    def abort(self):
        """Let any in-flight write finish (so nothing writes after cleanup)."""
        try:
            self._wait()
        except BaseException:  # noqa: BLE001 - the original error is what matters
            pass
        finally:
            self._pool.shutdown()


class MemoryWriter:
    """The writer's interface over memory: rows appended, one NumPy array out.

    For sources small enough to score without staging them on disk (a
    partition of a few hundred rows); the rows pass the same reader, plan
    and bad-row counts as an ingest to Zarr.
    """

    def __init__(self, n_features, dtype):
        self.d, self.dtype = n_features, np.dtype(dtype)
        self._blocks = []

    def append(self, rows):
        if len(rows):
            self._blocks.append(np.array(rows, dtype=self.dtype, copy=True))  # readers may reuse their buffers

    def close(self):
        """The rows appended, shape (n, n_features); None if there were none."""
        if not self._blocks:
            return None
        return self._blocks[0] if len(self._blocks) == 1 else np.concatenate(self._blocks)

    def abort(self):
        self._blocks = []
