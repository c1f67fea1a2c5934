"""Single Parquet files, streamed one batch of rows at a time.

``ParquetFile.iter_batches`` decodes one row group at a time, so memory
also scales with the source's row-group size.  A directory (a dataset of
several files) is refused: ingest one file at a time.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from ..convert import arrow_column, arrow_kind, arrow_type_name
from ..location import Location
from ..report import IngestError
from .base import TARGET_BATCH_BYTES, Reader

__all__ = ["ParquetReader"]


class ParquetReader(Reader):
    """A Parquet file read in batches of ``batch_rows`` (default about 16 MiB of output)."""

    format = "parquet"

    def __init__(self, loc: Location, batch_rows=None):
        self.loc = loc
        self.batch_rows = batch_rows
        if not loc.is_url and os.path.isdir(loc.path):
            raise IngestError(
                f"{loc.text} is a directory: a Parquet dataset of several files. "
                "Ingest one file at a time (or pass the path of a single .parquet file)."
            )
        try:
            with self._open() as pf:
                schema = pf.schema_arrow
                self.n_rows = int(pf.metadata.num_rows)
        except IngestError:
            raise
        except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds
            raise IngestError(
                f"Cannot read {loc.text} as Parquet: {e}. Check that it is a complete "
                "Parquet file, or pass the right format=."
            ) from None
        self.names = list(schema.names)
        self.kinds = [arrow_kind(f.type) for f in schema]
        self.types = [arrow_type_name(f.type) for f in schema]

    @contextlib.contextmanager
    def _open(self):
        import pyarrow.parquet as pq

        f = self.loc.open() if self.loc.is_url else None
        try:
            # pre_buffer (the default) read the whole file ahead: RSS grew with file
            # size (560 MiB at 384 MB); without it RSS stayed at ~120 MiB, no slower.
            pf = pq.ParquetFile(f if f is not None else self.loc.path, pre_buffer=False)
            try:
                yield pf
            finally:
                pf.close()
        finally:
            if f is not None:
                f.close()

    def blocks(self, sel, out_dtype, tolerant):
        cols = [self.names[i] for i in sel]
        kinds = [self.kinds[i] for i in sel]
        batch = int(self.batch_rows or max(1, TARGET_BATCH_BYTES // (8 * len(cols))))
        row0 = 0
        with self._open() as pf:
            for rb in pf.iter_batches(batch_size=batch, columns=cols):
                n = rb.num_rows
                out = np.empty((n, len(cols)), dtype=out_dtype)
                for j, (c, k) in enumerate(zip(cols, kinds)):
                    arrow_column(rb.column(c), k, c, out, j, row0, False)
                yield out, None, n
                row0 += n
