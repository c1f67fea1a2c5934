"""Source readers, one per format: inspect metadata, then stream float blocks.

======= ====================== ==========================================
format  reader                 batches
======= ====================== ==========================================
csv     :class:`CsvReader`     ``block_size`` bytes of text (pyarrow)
parquet :class:`ParquetReader` ``batch_rows`` rows, within row groups
npy     :class:`NpyReader`     ``batch_rows`` rows, plain file reads
zarr    :class:`ZarrReader`    ``batch_rows`` rows, whole source chunks
======= ====================== ==========================================

All implement :class:`~pipeline.ingest.readers.base.Reader`; :func:`open_reader` picks one.
"""

from __future__ import annotations

from ..location import Location
from .arrays import NpyReader, ZarrReader
from .base import NeedTolerantParse, Reader, invalid_names
from .csv import CsvReader
from .parquet import ParquetReader

__all__ = ["FORMATS", "NeedTolerantParse", "Reader", "invalid_names", "open_reader"]

FORMATS = ("csv", "parquet", "npy", "zarr")
_ROW_READERS = {"parquet": ParquetReader, "npy": NpyReader, "zarr": ZarrReader}


def open_reader(fmt: str, loc: Location, *, batch_rows=None, block_size=None) -> Reader:
    """The reader of format ``fmt`` (one of :data:`FORMATS`) for ``loc``, metadata read.

    ``block_size`` applies to CSV, ``batch_rows`` to the other formats.
    """
    if fmt == "csv":
        return CsvReader(loc, block_size=block_size)
    return _ROW_READERS[fmt](loc, batch_rows=batch_rows)
