"""CSV sources (optionally .gz, .bz2, .zst), streamed with pyarrow's CSV reader.

Column types come from pyarrow's inference on the first block, read from
bytes we read ourselves (opening a streaming reader for that would read
~30 blocks ahead for nothing).  A text column whose non-empty cells in
that block are mostly numbers is kind ``'text-number'``: it is parsed as
text from the start and its other cells are unparseable (bad rows).

The typed read is fast but stops at the first cell its type cannot hold
(``1.5`` in a column of integers, a word in a column of numbers, later
than the first block): :meth:`CsvReader.blocks` then raises
:class:`~pipeline.ingest.readers.base.NeedTolerantParse` and the ingest restarts once with every
column read as text.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..convert import FLOAT_RE, arrow_column, arrow_kind, arrow_type_name
from ..location import CSV_COMPRESSION, Location
from ..report import IngestError
from .base import NeedTolerantParse, Reader

__all__ = ["CSV_BLOCK_SIZE", "CsvReader"]

#: default pyarrow CSV block size (bytes of decompressed text per batch).
#: pyarrow's CSV reader keeps ~30-40 blocks in flight whatever we do, so this
#: sets the memory bound: measured peak RSS 345 MiB at 4 MiB, 821 MiB at 16 MiB
#: (942 MB CSV, same speed within noise).
CSV_BLOCK_SIZE = 4 * 2**20

# Text pyarrow's CSV reader turns into null (an empty cell, "NA", "nan", ...).
_CSV_NULL_VALUES = None  # filled lazily from pyarrow's defaults


def _csv_null_values():
    global _CSV_NULL_VALUES
    if _CSV_NULL_VALUES is None:
        import pyarrow.csv as pcsv

        _CSV_NULL_VALUES = list(pcsv.ConvertOptions().null_values)
    return _CSV_NULL_VALUES


def _infer_kind(f, first_column):
    """``(kind, type name)`` of the CSV column ``f`` given its cells in the first block."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = arrow_kind(f.type)
    if kind == "float32":  # CSV text is never float32
        kind = "float"
    type_str = arrow_type_name(f.type)
    if kind is None and first_column is not None and (
        pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ):
        col = pc.utf8_trim_whitespace(first_column)
        nullish = pc.is_in(col, value_set=pa.array(_csv_null_values()))
        nonnull = pc.invert(pc.fill_null(nullish, True))
        looks_numeric = pc.match_substring_regex(col, FLOAT_RE, ignore_case=True)
        numeric = pc.and_(nonnull, pc.fill_null(looks_numeric, False))
        n_nonnull = pc.sum(nonnull).as_py() or 0
        n_numeric = pc.sum(numeric).as_py() or 0
        if 2 * n_numeric > n_nonnull:
            kind, type_str = "text-number", "string (mostly numbers)"
    return kind, ("text" if kind is None else type_str)


class CsvReader(Reader):
    """A CSV file read in blocks of ``block_size`` bytes of text."""

    format = "csv"

    def __init__(self, loc: Location, block_size=None):
        import pyarrow as pa
        import pyarrow.csv as pcsv

        self.loc = loc
        self.block_size = int(block_size or CSV_BLOCK_SIZE)
        self.n_rows = None
        # The first batch is kept to tell mostly-numeric text columns (a few
        # junk cells) from text.
        head = self._head()
        if not head.strip():
            raise self._error("Empty CSV file")
        try:
            table = pcsv.read_csv(
                pa.BufferReader(head),
                read_options=pcsv.ReadOptions(block_size=len(head) + 1, use_threads=False),
            )
        except pa.ArrowInvalid as e:
            raise self._error(e) from None
        first = table.combine_chunks().to_batches()[0] if table.num_rows else None
        self.names = list(table.schema.names)
        inferred = [
            _infer_kind(f, first.column(i) if first is not None else None)
            for i, f in enumerate(table.schema)
        ]
        self.kinds = [kind for kind, _ in inferred]
        self.types = [type_str for _, type_str in inferred]

    def _decompressed(self, raw):
        import pyarrow as pa

        for suffix, codec in CSV_COMPRESSION.items():
            if self.loc.path.lower().endswith(suffix):
                return pa.CompressedInputStream(raw, codec)
        return raw

    def _head(self) -> bytes:
        """The first block of text, cut after its last complete line."""
        with self.loc.open() as raw:
            stream = self._decompressed(raw)
            parts, size = [], 0
            while size < self.block_size:
                part = stream.read(self.block_size - size)
                if not part:
                    return b"".join(parts)  # the whole file fits in one block
                parts.append(part)
                size += len(part)
        head = b"".join(parts)
        end = head.rfind(b"\n")
        if end < 0:
            raise self._error("straddling object: the header is longer than the block")
        return head[: end + 1]

    @contextlib.contextmanager
    def _stream(self, convert_options=None):
        import pyarrow as pa
        import pyarrow.csv as pcsv

        raw = self.loc.open()
        try:
            stream = self._decompressed(raw)
            try:
                reader = pcsv.open_csv(
                    stream,
                    read_options=pcsv.ReadOptions(block_size=self.block_size),
                    convert_options=convert_options,
                )
            except pa.ArrowInvalid as e:
                raise self._error(e) from None
            yield reader, raw
        finally:
            raw.close()

    def _error(self, e) -> IngestError:
        msg = str(e).strip()
        if "Empty CSV file" in msg:
            return IngestError(
                f"{self.loc.text} is empty: no header and no rows, nothing to fit or "
                "score. Check that the file was written completely."
            )
        if "straddling" in msg:
            return IngestError(
                f"Cannot parse {self.loc.text}: a row is longer than the CSV block size "
                f"({self.block_size} bytes) ({msg}). Pass a larger block_size."
            )
        return IngestError(
            f"Cannot parse {self.loc.text} as CSV: {msg}. Fix the file (every row needs "
            "as many fields as the header; quote fields that contain commas or newlines)."
        )

    def needs_tolerant(self, sel) -> bool:
        return any(self.kinds[i] == "text-number" for i in sel)

    def progress_total(self):
        return self.loc.size(), "B"

    def _convert_options(self, cols, kinds, tolerant):
        import pyarrow as pa
        import pyarrow.csv as pcsv

        if tolerant:
            types = {c: pa.string() for c in cols}
        else:
            as_type = {"int": pa.int64(), "bool": pa.bool_()}
            types = {c: as_type.get(k, pa.float64()) for c, k in zip(cols, kinds)}
        return pcsv.ConvertOptions(include_columns=cols, column_types=types, strings_can_be_null=True)

    def blocks(self, sel, out_dtype, tolerant):
        import pyarrow as pa

        cols = [self.names[i] for i in sel]
        kinds = [self.kinds[i] for i in sel]
        row0, last_pos = 0, 0
        self.first_unparseable = None
        with self._stream(self._convert_options(cols, kinds, tolerant)) as (reader, raw):
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as e:
                    if "conversion error" in str(e) and not tolerant:
                        raise NeedTolerantParse(str(e)) from None
                    raise self._error(e) from None
                n = batch.num_rows
                out = np.empty((n, len(cols)), dtype=out_dtype)
                unparseable = None
                for j, (c, k) in enumerate(zip(cols, kinds)):
                    u = arrow_column(batch.column(j), k, c, out, j, row0, tolerant)
                    if u is not None:
                        unparseable = u if unparseable is None else unparseable | u
                        self._record_unparseable(batch.column(j), u, c, row0)
                try:
                    pos = raw.tell()
                except Exception:  # noqa: BLE001 - progress only
                    pos = last_pos
                yield out, unparseable, pos - last_pos
                last_pos = pos
                row0 += n

    def _record_unparseable(self, arr, mask, name, row0):
        if self.first_unparseable is None:
            i = int(np.argmax(mask))
            self.first_unparseable = (name, row0 + i, arr[i].as_py())
