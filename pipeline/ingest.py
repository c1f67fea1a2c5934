"""Ingest CSV, Parquet, ``.npy`` and Zarr sources into a chunked, compressed Zarr v3 array.

The result is what :mod:`gmm_engine` reads: a 2-D float array of shape
``(n_rows, n_features)`` with a ``feature_names`` attribute, plus the
:class:`ValidationReport` of the ingest stored as the ``ingest_report``
attribute.

Guarantees
----------
* Out of core: the source is streamed in batches (``pyarrow.csv.open_csv``,
  ``ParquetFile.iter_batches``, memory-mapped ``.npy`` row slices, Zarr row
  slices); memory stays bounded by a few batches plus two output chunks.
* Never silently altered data: rows with NaN, +/-inf, an empty or an
  unparseable numeric cell are refused (``bad_rows="error"``) or dropped and
  counted (``bad_rows="drop"``); integers the output dtype cannot represent
  exactly and float64 values that would overflow float32 are refused.
* Atomic: the array is written to a temporary sibling directory and renamed
  into place; ``dest`` never exists half-written, and after a failure
  neither ``dest`` nor the temporary directory is left behind.

>>> result = ingest("events.csv", "events.zarr", columns=["x", "y"])  # doctest: +SKIP
>>> result.report.n_rows_written                                    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "IngestError",
    "IngestResult",
    "ValidationReport",
    "detect_format",
    "ingest",
    "read_report",
]

FORMATS = ("csv", "parquet", "npy", "zarr")
BAD_ROWS_POLICIES = ("error", "drop")
#: codecs ``compression`` may name.  EM reads the whole array once per
#: iteration, so decoding speed matters more than ratio: Blosc-LZ4 with byte
#: shuffle decodes about twice as fast as zstd here and, on noisy float
#: data, compresses about as well (0.94 vs 0.93 of raw on Gaussian float32).
COMPRESSIONS = ("lz4", "zstd", "none")


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


#: target uncompressed bytes of one stored chunk (the spec asks for 16-64 MiB)
TARGET_CHUNK_BYTES = 32 * 2**20
#: target bytes of one source batch for row-addressable formats
TARGET_BATCH_BYTES = 16 * 2**20
#: default pyarrow CSV block size (bytes of decompressed text per batch).
#: pyarrow's CSV reader keeps ~30-40 blocks in flight whatever we do, so this
#: sets the memory bound: measured peak RSS 345 MiB at 4 MiB, 821 MiB at 16 MiB
#: (942 MB CSV, same speed within noise).
CSV_BLOCK_SIZE = 4 * 2**20
#: row indices kept in the report and shown in messages
MAX_EXAMPLES = 10

# Compressed CSV suffixes and the pyarrow codec that reads them.
_CSV_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
# Text pyarrow's CSV reader turns into null (an empty cell, "NA", "nan", ...).
_CSV_NULL_VALUES = None  # filled lazily from pyarrow's defaults
_TRUE_TEXT = ("1", "true")
_FALSE_TEXT = ("0", "false")
# A decimal or scientific number, or inf/nan, after whitespace is trimmed;
# used only when pyarrow's own cast rejects some cell of a column.
_FLOAT_RE = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)$"


class IngestError(ValueError):
    """A refused ingest: the message names the problem and the fix.

    ``report`` holds the :class:`ValidationReport` when the data were read
    to the end before the refusal (bad rows with ``bad_rows="error"``, or an
    empty result), else None.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class _NeedTolerantParse(Exception):
    """The fast typed CSV read met a cell its inferred type cannot hold."""


@dataclass(frozen=True)
class ValidationReport:
    """What an ingest read, wrote, refused or dropped.

    Attributes
    ----------
    source : str
        Path or URL read.
    format : str
        ``'csv'``, ``'parquet'``, ``'npy'`` or ``'zarr'``.
    n_rows_read : int
        Data rows in the source (CSV header not counted).
    n_rows_written : int
        Rows in the output array.
    n_bad_rows : int
        Rows with NaN, +/-inf, or an empty/unparseable numeric cell;
        ``n_bad_rows == n_nan_rows + n_inf_rows``.
    n_nan_rows : int
        Bad rows with at least one NaN, empty or unparseable cell.
    n_inf_rows : int
        Bad rows with +/-inf and no NaN.
    bad_row_examples : list of int
        First <= 10 bad row indices (0-based data rows of the source).
    non_numeric_columns : list of str
        Non-numeric source columns left out by ``columns``.
    feature_names : list of str
        Names of the output columns, in order.
    dtype : str
        Output dtype, ``'float32'`` or ``'float64'``.
    bad_rows_policy : str
        ``'error'`` or ``'drop'``.
    n_unparseable_rows : int
        Bad rows with a cell that is not a number (a subset of ``n_nan_rows``).
    source_dtypes : dict of str to str
        Source type of each output feature (e.g. ``'int64'``, ``'bool'``):
        which columns were converted to ``dtype``.
    """

    source: str
    format: str
    n_rows_read: int
    n_rows_written: int
    n_bad_rows: int
    n_nan_rows: int
    n_inf_rows: int
    bad_row_examples: list[int]
    non_numeric_columns: list[str]
    feature_names: list[str]
    dtype: str
    bad_rows_policy: str
    n_unparseable_rows: int = 0
    source_dtypes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-serialisable copy (what is stored as ``ingest_report``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ValidationReport:
        """Inverse of :meth:`to_dict`; unknown keys (newer writers) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class IngestResult:
    """The Zarr array written (absolute local path) and its report."""

    path: str
    report: ValidationReport


# ---------------------------------------------------------------------------
# locations


def _is_url(s: str) -> bool:
    return "://" in s


class _Location:
    """A source given as a local path or an fsspec URL."""

    def __init__(self, source, storage_options=None):
        if not isinstance(source, (str, os.PathLike)):
            raise IngestError(
                f"source must be a path or URL string, got {type(source).__name__}; "
                "save in-memory data to .npy/.parquet first, or fit it directly."
            )
        text = os.fspath(source)
        self.is_url = _is_url(text)
        self.storage_options = dict(storage_options or {})
        if self.is_url:
            import fsspec

            self.fs, self.path = fsspec.core.url_to_fs(text, **self.storage_options)
            self.text = text
            if not self.fs.exists(self.path):
                raise IngestError(f"source not found: {text}; check the URL.")
        else:
            self.fs, self.path = None, os.path.abspath(text)
            self.text = self.path
            if not os.path.exists(self.path):
                raise IngestError(f"source not found: {text}; check the path.")

    def open(self):
        """A Python binary file object.

        Deliberately not a pyarrow-native file: given one, pyarrow's CSV
        reader read ~35 blocks ahead (550 MiB at 16 MiB blocks), against
        ~50 MiB through a Python file, at the same speed.
        """
        if self.is_url:
            return self.fs.open(self.path, "rb")
        return open(self.path, "rb")

    def size(self) -> int | None:
        try:
            return int(self.fs.size(self.path) if self.is_url else os.path.getsize(self.path))
        except Exception:  # noqa: BLE001 - only feeds a progress bar
            return None

    def has_child(self, name: str) -> bool:
        if self.is_url:
            return self.fs.exists(self.path.rstrip("/") + "/" + name)
        return os.path.isfile(os.path.join(self.path, name))


def detect_format(source, storage_options=None) -> str:
    """The format of ``source`` from its name.

    ``.csv`` (also ``.csv.gz``, ``.csv.bz2``, ``.csv.zst``) -> ``'csv'``;
    ``.parquet``/``.pq`` -> ``'parquet'``; ``.npy`` -> ``'npy'``; ``.zarr``
    or a directory holding ``zarr.json`` (or Zarr v2's ``.zarray``) -> ``'zarr'``.

    Raises
    ------
    IngestError
        When the name says nothing; pass ``format=`` explicitly then.
    """
    text = os.fspath(source)
    name = text.rstrip("/").lower()
    if _is_url(name):
        name = name.split("?", 1)[0]
    if name.endswith(".csv") or any(name.endswith(".csv" + s) for s in _CSV_COMPRESSION):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(".zarr"):
        return "zarr"
    try:
        loc = _Location(source, storage_options)
        if loc.has_child("zarr.json") or loc.has_child(".zarray"):
            return "zarr"
    except IngestError:
        pass
    raise IngestError(
        f"Cannot tell the format of {text!r} from its name: expected a .csv, .csv.gz, "
        ".parquet, .pq, .npy or .zarr suffix, or a directory holding zarr.json. "
        "Pass format='csv', 'parquet', 'npy' or 'zarr'."
    )


# ---------------------------------------------------------------------------
# value conversion (every path goes through these checks)


def _first_inexact_int(v: np.ndarray, out_dtype: np.dtype):
    """Index of the first integer in ``v`` that ``out_dtype`` cannot hold exactly, or None."""
    if v.size == 0:
        return None
    limit = 2 ** (np.finfo(out_dtype).nmant + 1)  # every |int| <= limit is exact
    if int(v.min()) >= -limit and int(v.max()) <= limit:
        return None
    f = v.astype(out_dtype)
    # Round-trip; values that round to 2**63 (2**64 for uint64) cannot cast back.
    top = 2.0**64 if v.dtype.kind == "u" else 2.0**63
    big = f.astype(np.float64) >= top
    back = np.where(big, 0, f).astype(v.dtype)
    bad = big | (back != v)
    return int(np.argmax(bad)) if bad.any() else None


def _inexact_int_error(name, value, row, out_dtype) -> IngestError:
    fix = (
        "pass dtype='float64' (or leave dtype unset), or "
        if out_dtype == np.float32 and abs(int(value)) <= 2**53
        else ""
    )
    return IngestError(
        f"Column {name!r} holds the integer {int(value)} (row {row}), which "
        f"{np.dtype(out_dtype).name} cannot represent exactly: converting would "
        f"silently change it. Fix: {fix}leave the column out with columns=[...] "
        "(identifiers are not features), or rescale it in the source."
    )


def _check_ints(v, name, out_dtype, row0):
    i = _first_inexact_int(v, out_dtype)
    if i is not None:
        raise _inexact_int_error(name, v[i], row0 + i, out_dtype)


def _check_no_overflow(src, out_col, name, row0):
    """Refuse finite source values that became +/-inf in a narrower dtype."""
    new_inf = np.isinf(out_col) & np.isfinite(src)
    if new_inf.any():
        i = int(np.argmax(new_inf))
        raise IngestError(
            f"Column {name!r} holds {float(src[i])!r} (row {row0 + i}), beyond the "
            f"range of {out_col.dtype.name}: converting would turn it into infinity. "
            "Fix: pass dtype='float64' (or leave dtype unset)."
        )


def _store_float(out, j, v, name, row0):
    with np.errstate(over="ignore"):  # overflow is detected and refused below
        out[:, j] = v
    if v.dtype.itemsize > out.dtype.itemsize:
        _check_no_overflow(v, out[:, j], name, row0)


def _csv_null_values():
    global _CSV_NULL_VALUES
    if _CSV_NULL_VALUES is None:
        import pyarrow.csv as pcsv

        _CSV_NULL_VALUES = list(pcsv.ConvertOptions().null_values)
    return _CSV_NULL_VALUES


def _parse_text_column(arr, kind, name, out, j, row0):
    """Parse a CSV text column into ``out[:, j]``; return the unparseable-cell mask.

    Nulls (empty cells, ``NA``, ``nan``...) become NaN; cells that are not
    numbers become NaN and are flagged, so the rows count as bad.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(arr)
    is_null = text.is_null().to_numpy(zero_copy_only=False)
    if kind == "bool":
        low = pc.utf8_lower(text)
        t = pc.is_in(low, value_set=pa.array(_TRUE_TEXT)).to_numpy(zero_copy_only=False)
        f = pc.is_in(low, value_set=pa.array(_FALSE_TEXT)).to_numpy(zero_copy_only=False)
        unparseable = ~(t | f | is_null)
        out[:, j] = np.where(t, 1.0, 0.0)
        out[is_null | unparseable, j] = np.nan
        return unparseable if unparseable.any() else None

    unparseable = None
    try:
        values = pc.cast(text, pa.float64())
    except pa.ArrowInvalid:
        ok = pc.fill_null(pc.match_substring_regex(text, _FLOAT_RE, ignore_case=True), True)
        cleaned = pc.if_else(ok, text, pa.scalar(None, pa.string()))
        ok_np = ok.to_numpy(zero_copy_only=False)
        unparseable = ~ok_np
        try:
            values = pc.cast(cleaned, pa.float64())
        except pa.ArrowInvalid:
            # The regex let through a form pyarrow rejects; parse those cells in Python.
            py = []
            for k, s in enumerate(cleaned.to_pylist()):
                try:
                    py.append(float(s) if s is not None else None)
                except ValueError:
                    py.append(None)
                    unparseable[k] = True
            values = pa.array(py, pa.float64())
    v = values.to_numpy(zero_copy_only=False)

    # Long integer literals may not survive the conversion to float.
    digits = np.finfo(out.dtype).precision  # 15 (float64) or 6 (float32): always exact
    long_int = pc.fill_null(
        pc.match_substring_regex(text, rf"^[+-]?\d{{{digits + 1},}}$"), False
    ).to_numpy(zero_copy_only=False)
    if long_int.any():
        idx = np.flatnonzero(long_int)
        sub = pc.take(text, pa.array(idx))
        try:
            ints = pc.cast(sub, pa.int64()).to_numpy()
            k = _first_inexact_int(ints, out.dtype)
            if k is not None:
                raise _inexact_int_error(name, ints[k], row0 + int(idx[k]), out.dtype)
        except pa.ArrowInvalid:  # beyond int64
            for k, s in zip(idx, sub.to_pylist()):
                exact = float(s) if out.dtype == np.float64 else float(np.float32(float(s)))
                if not np.isfinite(exact) or int(exact) != int(s):
                    raise _inexact_int_error(name, int(s), row0 + int(k), out.dtype) from None
    _store_float(out, j, v, name, row0)
    if unparseable is not None and unparseable.any():
        return unparseable
    return None


def _arrow_column(arr, kind, name, out, j, row0, tolerant):
    """Convert one Arrow column into ``out[:, j]``; return the unparseable mask or None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if tolerant and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return _parse_text_column(arr, kind, name, out, j, row0)
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    if pa.types.is_integer(t):
        v = arr.fill_null(0).to_numpy()
        _check_ints(v, name, out.dtype, row0)
        out[:, j] = v
    elif pa.types.is_floating(t):
        _store_float(out, j, arr.to_numpy(zero_copy_only=False), name, row0)
    elif pa.types.is_boolean(t):
        out[:, j] = arr.fill_null(False).to_numpy(zero_copy_only=False)
    elif pa.types.is_null(t):
        out[:, j] = np.nan
    elif pa.types.is_decimal(t):
        _store_float(out, j, pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), name, row0)
    else:  # pragma: no cover - excluded when planning
        raise IngestError(f"Column {name!r} has non-numeric type {t}.")
    if nulls is not None:
        out[nulls, j] = np.nan
    return None


def _numpy_block(block, names, out_dtype, row0):
    """Convert a (rows, D) NumPy block of a numeric dtype to ``out_dtype``, exactly."""
    kind = block.dtype.kind
    if kind in "iu":
        for j in range(block.shape[1]):
            _check_ints(block[:, j], names[j], out_dtype, row0)
    out = np.empty(block.shape, dtype=out_dtype)
    with np.errstate(over="ignore"):  # overflow is detected and refused below
        out[...] = block
    if kind == "f" and block.dtype.itemsize > out.dtype.itemsize:
        for j in range(block.shape[1]):
            _check_no_overflow(block[:, j], out[:, j], names[j], row0)
    return out


def _arrow_type_name(t) -> str:
    """NumPy's name for numeric Arrow types (``double`` -> ``float64``), else Arrow's."""
    import pyarrow as pa

    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return np.dtype(t.to_pandas_dtype()).name
    return str(t)


def _arrow_kind(t) -> str | None:
    """How an Arrow type converts to float, or None if it is non-numeric."""
    import pyarrow as pa

    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float32" if t == pa.float32() else "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_decimal(t):
        return "decimal"
    return None


def _numpy_kind(dt: np.dtype) -> str | None:
    if dt.kind in "iu":
        return "int"
    if dt.kind == "f":
        return "float32" if dt.itemsize == 4 else "float"  # any byte order
    if dt.kind == "b":
        return "bool"
    return None


# ---------------------------------------------------------------------------
# readers: inspect metadata, then stream (rows, D) float blocks


class _Reader:
    """Common interface; subclasses fill the metadata in ``__init__``."""

    format: str
    names: list[str]  # source column names
    kinds: list[str | None]  # per column; None = non-numeric
    types: list[str]  # per column, for the report
    n_rows: int | None  # if known in advance
    names_problem: str | None = None  # invalid stored names (Zarr attribute)

    def needs_tolerant(self, sel) -> bool:
        return False

    def progress_total(self):
        return self.n_rows, "rows"

    def blocks(self, sel, out_dtype, tolerant):
        """Yield ``(block, unparseable_rows_or_None, progress_increment)``."""
        raise NotImplementedError


class _CsvReader(_Reader):
    format = "csv"

    def __init__(self, loc: _Location, block_size=None):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv

        self.loc = loc
        self.block_size = int(block_size or CSV_BLOCK_SIZE)
        self.n_rows = None
        # Infer the column types from the first block, as pyarrow's streaming
        # reader does, and keep that batch to tell mostly-numeric text columns
        # (a few junk cells) from text. Parsed from bytes we read ourselves:
        # opening a streaming reader here would read ~30 blocks ahead for nothing.
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
        schema = table.schema
        first = table.combine_chunks().to_batches()[0] if table.num_rows else None
        self.names = list(schema.names)
        self.kinds, self.types = [], []
        for i, f in enumerate(schema):
            kind = _arrow_kind(f.type)
            if kind == "float32":  # CSV text is never float32
                kind = "float"
            type_str = _arrow_type_name(f.type)
            if kind is None and first is not None and (
                pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            ):
                col = pc.utf8_trim_whitespace(first.column(i))
                nullish = pc.is_in(col, value_set=pa.array(_csv_null_values()))
                nonnull = pc.invert(pc.fill_null(nullish, True))
                looks_numeric = pc.match_substring_regex(col, _FLOAT_RE, ignore_case=True)
                numeric = pc.and_(nonnull, pc.fill_null(looks_numeric, False))
                n_nonnull = pc.sum(nonnull).as_py() or 0
                n_numeric = pc.sum(numeric).as_py() or 0
                if 2 * n_numeric > n_nonnull:
                    kind, type_str = "text-number", "string (mostly numbers)"
            self.kinds.append(kind)
            self.types.append("text" if kind is None else type_str)

    def _decompressed(self, raw):
        import pyarrow as pa

        for suffix, codec in _CSV_COMPRESSION.items():
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

    def blocks(self, sel, out_dtype, tolerant):
        import pyarrow as pa
        import pyarrow.csv as pcsv

        cols = [self.names[i] for i in sel]
        kinds = [self.kinds[i] for i in sel]
        if tolerant:
            types = {c: pa.string() for c in cols}
        else:
            as_type = {"int": pa.int64(), "bool": pa.bool_()}
            types = {c: as_type.get(k, pa.float64()) for c, k in zip(cols, kinds)}
        opts = pcsv.ConvertOptions(
            include_columns=cols, column_types=types, strings_can_be_null=True
        )
        row0, last_pos = 0, 0
        self.first_unparseable = None
        with self._stream(opts) as (reader, raw):
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as e:
                    if "conversion error" in str(e) and not tolerant:
                        raise _NeedTolerantParse(str(e)) from None
                    raise self._error(e) from None
                n = batch.num_rows
                out = np.empty((n, len(cols)), dtype=out_dtype)
                unparseable = None
                for j, (c, k) in enumerate(zip(cols, kinds)):
                    u = _arrow_column(batch.column(j), k, c, out, j, row0, tolerant)
                    if u is not None:
                        unparseable = u if unparseable is None else unparseable | u
                        self.record_unparseable(batch.column(j), u, c, row0)
                try:
                    pos = raw.tell()
                except Exception:  # noqa: BLE001 - progress only
                    pos = last_pos
                yield out, unparseable, pos - last_pos
                last_pos = pos
                row0 += n

    first_unparseable = None

    def record_unparseable(self, arr, mask, name, row0):
        if self.first_unparseable is None:
            i = int(np.argmax(mask))
            self.first_unparseable = (name, row0 + i, arr[i].as_py())


class _ParquetReader(_Reader):
    format = "parquet"

    def __init__(self, loc: _Location, batch_rows=None):
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
        self.kinds = [_arrow_kind(f.type) for f in schema]
        self.types = [_arrow_type_name(f.type) for f in schema]

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
                    _arrow_column(rb.column(c), k, c, out, j, row0, False)
                yield out, None, n
                row0 += n


def _default_names(d):
    return [f"x{i}" for i in range(d)]


class _ArrayReader(_Reader):
    """Row-sliced numeric arrays (.npy, Zarr)."""

    batch_rows: int | None
    unit_rows = 1

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
        kind = _numpy_kind(np.dtype(dtype))
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
            yield _numpy_block(block, names, out_dtype, start), None, stop - start


class _NpyReader(_ArrayReader):
    """A .npy file read in row slices with plain file reads.

    Not through ``np.load(mmap_mode='r')``: every page a memory map touches
    stays in the process's RSS (measured 162 MiB for a 128 MB file and 406 MiB
    at 384 MB), which memory monitors such as Dask's nanny count.
    """

    format = "npy"

    def __init__(self, loc: _Location, batch_rows=None):
        self.loc, self.batch_rows = loc, batch_rows
        try:
            with loc.open() as f:
                from gmm_engine.npy import read_npy_header

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


class _ZarrReader(_ArrayReader):
    format = "zarr"

    def __init__(self, loc: _Location, batch_rows=None):
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
            problem = _names_problem(stored, d)
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


_READERS = {
    "csv": _CsvReader,
    "parquet": _ParquetReader,
    "npy": _NpyReader,
    "zarr": _ZarrReader,
}


# ---------------------------------------------------------------------------
# planning: columns, names, dtype (all checked before any data is read)


def _names_problem(names, d) -> str | None:
    if not isinstance(names, (list, tuple)):
        return f"expected a list of strings, got {type(names).__name__}"
    if len(names) != d:
        return f"{len(names)} names for {d} columns"
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        return f"names must be non-empty strings, got {bad[:5]!r}"
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        return f"names must be unique, repeated: {dup[:10]!r}"
    return None


def _fmt_list(items, max_n=20):
    items = list(items)
    more = f" ... (+{len(items) - max_n} more)" if len(items) > max_n else ""
    return repr(items[:max_n]) + more


@dataclass
class _Plan:
    sel: list[int]
    feature_names: list[str]
    out_dtype: np.dtype
    non_numeric_excluded: list[str]
    source_dtypes: dict[str, str]


def _select(reader, columns) -> list[int]:
    names = reader.names
    if columns is None:
        return list(range(len(names)))
    if isinstance(columns, (str, bytes)) or not hasattr(columns, "__iter__"):
        raise IngestError(
            f"columns must be a list of column names, got {columns!r}; "
            f"pass columns=[{columns!r}] for a single column."
        )
    columns = list(columns)
    sel, unknown = [], []
    for c in columns:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if 0 <= int(c) < len(names):
                sel.append(int(c))
            else:
                unknown.append(c)
        elif c in names:
            sel.append(names.index(c))
        else:
            unknown.append(c)
    if unknown:
        raise IngestError(
            f"columns {_fmt_list(unknown)} are not in {reader.loc.text}; its columns are "
            f"{_fmt_list(names)}. Pass names from that list."
        )
    dup = sorted({names[i] for i in sel if sel.count(i) > 1})
    if dup:
        raise IngestError(f"columns lists {dup!r} more than once; list each column once.")
    if not sel:
        raise IngestError("columns is empty; list at least one numeric column.")
    return sel


def _check_expected(got, expected, reader, names_given):
    expected = list(expected)
    problem = _names_problem(expected, len(expected))
    if problem:
        raise IngestError(f"expected_features is invalid: {problem}.")
    if got == expected:
        return
    src = reader.loc.text
    count = f"{src} has {len(got)} selected features, expected_features lists {len(expected)}"
    if reader.format == "npy" and not names_given and len(got) != len(expected):
        raise IngestError(
            f"Feature count mismatch: {count}. A .npy file has no column names, so its "
            "columns cannot be matched by name: ingest a file with exactly these "
            f"features, in this order: {_fmt_list(expected)}."
        )
    missing = [e for e in expected if e not in got]
    unexpected = [g for g in got if g not in expected]
    parts = []
    if missing:
        parts.append(f"missing {_fmt_list(missing)}")
    if unexpected:
        parts.append(f"unexpected {_fmt_list(unexpected)}")
    if not parts:
        parts.append(f"same names in a different order: got {_fmt_list(got)}")
    if not missing and not names_given:
        fix = f"pass columns={_fmt_list(expected, 50)} to select and order them"
    elif reader.format in ("npy", "zarr") and not names_given and len(got) == len(expected):
        fix = (
            "if the columns are these features in this order, name them with "
            "feature_names=[...]; otherwise ingest a source with these features"
        )
    else:
        fix = (
            "ingest a source that has exactly these features (this one does not match "
            "the features the model was fitted on)"
        )
    raise IngestError(
        f"Feature names of {src} do not match expected_features: {'; '.join(parts)} "
        f"({count}). Expected order: {_fmt_list(expected, 50)}. Fix: {fix}."
    )


def _resolve_dtype(dtype, reader, sel) -> np.dtype:
    if dtype is None:
        return np.dtype(
            np.float32 if all(reader.kinds[i] == "float32" for i in sel) else np.float64
        )
    try:
        out = np.dtype(dtype)
    except TypeError:
        out = None
    if out not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise IngestError(
            f"dtype must be 'float32' or 'float64', got {dtype!r}. "
            "Leave it unset to keep float32 sources in float32 and use float64 otherwise."
        )
    return out


def _plan(reader, columns, feature_names, dtype, expected_features) -> _Plan:
    sel = _select(reader, columns)
    src = reader.loc.text
    # CSV and Parquet columns are read by name, so a repeated name is ambiguous.
    repeated = sorted({reader.names[i] for i in sel if reader.names.count(reader.names[i]) > 1})
    if repeated:
        raise IngestError(
            f"Column names {_fmt_list(repeated)} appear more than once in {src}; "
            "rename the columns in the source so each name is unique, or leave them "
            "out with columns=[...]."
        )
    non_numeric = [reader.names[i] for i in sel if reader.kinds[i] is None]
    if non_numeric:
        kinds = ", ".join(f"{reader.names[i]!r} ({reader.types[i]})" for i in sel
                          if reader.kinds[i] is None)
        numeric = [reader.names[i] for i in range(len(reader.names)) if reader.kinds[i]]
        raise IngestError(
            f"Non-numeric columns in {src}: {kinds}. Pass columns=[...] with numeric "
            f"columns only (numeric here: {_fmt_list(numeric)}), or encode these columns "
            "as numbers first."
        )
    kept = set(sel)
    excluded = [
        reader.names[i] for i in range(len(reader.names))
        if i not in kept and reader.kinds[i] is None
    ]
    if feature_names is not None:
        if isinstance(feature_names, str):
            raise IngestError(
                f"feature_names must be a list of strings, got {feature_names!r}."
            )
        names = list(feature_names)
        if (expected_features is not None and names == list(expected_features)
                and len(names) != len(sel)):
            # positional naming (a .npy or unnamed Zarr partition scored with
            # the model's names): the real problem is the column count
            raise IngestError(
                f"Feature count mismatch: {src} has {len(sel)} columns, expected_features lists "
                f"{len(names)}. Its columns carry no names and are taken by position: ingest "
                f"a source with exactly these features, in this order: {_fmt_list(names, 50)}."
            )
        problem = _names_problem(names, len(sel))
        if problem:
            raise IngestError(
                f"feature_names is invalid: {problem}. Pass one unique non-empty name per "
                f"selected column ({len(sel)})."
            )
    else:
        if reader.names_problem:
            raise IngestError(f"{reader.names_problem}. Pass feature_names=[...].")
        names = [reader.names[i] for i in sel]
        problem = _names_problem(names, len(sel))
        if problem:
            raise IngestError(
                f"The column names of {src} cannot be feature names: {problem}. Pass "
                "feature_names=[...] (one per selected column), or fix the header."
            )
    if expected_features is not None:
        _check_expected(names, expected_features, reader, feature_names is not None)
    out_dtype = _resolve_dtype(dtype, reader, sel)
    return _Plan(
        sel=sel,
        feature_names=names,
        out_dtype=out_dtype,
        non_numeric_excluded=excluded,
        source_dtypes={n: reader.types[i] for n, i in zip(names, sel)},
    )


# ---------------------------------------------------------------------------
# writing


class _ZarrWriter:
    """Append rows to a growing Zarr array, one whole chunk per write.

    Writes run on one background thread, so compression overlaps reading
    and parsing of the next batch; at most one write is in flight.
    """

    def __init__(self, path, n_features, dtype, chunk_rows, chunks_fixed, compressors=None):
        self.path, self.d, self.dtype = path, n_features, np.dtype(dtype)
        self.compressors = compressors
        self.chunk_rows, self.chunks_fixed = chunk_rows, chunks_fixed
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


@dataclass
class _Stats:
    n_read: int = 0
    n_written: int = 0
    n_nan: int = 0
    n_inf: int = 0
    n_unparseable: int = 0
    examples: list = field(default_factory=list)


def _stream(reader, plan, tmp, *, tolerant, bad_rows, chunk_rows, progress, codecs):
    d = len(plan.sel)
    fixed = chunk_rows is not None
    row_bytes = d * plan.out_dtype.itemsize
    rows = int(chunk_rows) if fixed else max(1, TARGET_CHUNK_BYTES // row_bytes)
    writer = _ZarrWriter(tmp, d, plan.out_dtype, rows, fixed, codecs)
    stats = _Stats()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total, unit = reader.progress_total()
        bar = tqdm(total=total, unit=unit, unit_scale=unit == "B", desc="ingest")
    try:
        with contextlib.closing(reader.blocks(plan.sel, plan.out_dtype, tolerant)) as blocks:
            for block, unparseable, step in blocks:
                n = len(block)
                finite = np.isfinite(block).all(axis=1)
                if finite.all():
                    good = block
                else:
                    bad = np.flatnonzero(~finite)
                    nan_rows = np.isnan(block[bad]).any(axis=1)
                    stats.n_nan += int(nan_rows.sum())
                    stats.n_inf += int((~nan_rows).sum())
                    if unparseable is not None:
                        stats.n_unparseable += int(unparseable.sum())
                    room = MAX_EXAMPLES - len(stats.examples)
                    stats.examples.extend(int(stats.n_read + r) for r in bad[:room])
                    good = block[finite]
                # With bad_rows="error" keep scanning (to report the full count)
                # but stop writing: the ingest will be refused.
                if bad_rows == "drop" or stats.n_nan + stats.n_inf == 0:
                    writer.append(good)
                    stats.n_written += len(good)
                stats.n_read += n
                if bar is not None:
                    bar.update(step)
        if bad_rows == "error" and stats.n_nan + stats.n_inf:
            writer.abort()
            return None, stats
        array = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    return array, stats


# ---------------------------------------------------------------------------
# atomic placement


def _check_dest(dest, overwrite) -> Path:
    if not isinstance(dest, (str, os.PathLike)):
        raise IngestError(f"dest must be a local path, got {type(dest).__name__}.")
    text = os.fspath(dest)
    if _is_url(text):
        raise IngestError(
            f"dest must be a local path, got the URL {text!r}: ingest to a local "
            "directory, then copy the array to remote storage."
        )
    path = Path(text).absolute()
    if os.path.lexists(path) and not overwrite:
        raise IngestError(
            f"{path} already exists; pass overwrite=True (`gmm ingest --overwrite`, or "
            "`overwrite: true` in the config) to replace it, or choose another dest."
        )
    return path


def _check_replaceable(path: Path, overwrite: bool) -> None:
    # overwrite replaces an earlier ingest, never a directory or file that is not a Zarr store
    if overwrite and os.path.lexists(path) and not (path / "zarr.json").is_file():
        raise IngestError(
            f"{path} exists and is not a Zarr store, so overwrite=True will not replace it "
            "(that would delete it); remove it yourself or choose another dest."
        )


def _sibling(dest: Path, tag: str) -> Path:
    return dest.parent / f".{dest.name}.{tag}-{uuid.uuid4().hex[:12]}"


def _remove(path: Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _make_parents(parent: Path) -> list[Path]:
    """Create missing parent directories; return those created (deepest first)."""
    created = []
    p = parent
    while not p.exists():
        created.append(p)
        p = p.parent
    parent.mkdir(parents=True, exist_ok=True)
    return created


def _commit(tmp: Path, dest: Path, overwrite: bool):
    if not os.path.lexists(dest):
        os.rename(tmp, dest)
        return
    if not overwrite:
        raise IngestError(
            f"{dest} appeared while ingesting; pass overwrite=True (`gmm ingest --overwrite`) "
            "to replace it, or choose another dest."
        )
    old = _sibling(dest, "old")
    os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    try:
        _remove(old)
    except OSError as e:
        logger.warning("Replaced %s but could not delete the old copy %s: %s", dest, old, e)


# ---------------------------------------------------------------------------
# public API


def ingest(
    source,
    dest,
    *,
    format=None,
    columns=None,
    feature_names=None,
    dtype=None,
    bad_rows="error",
    chunk_rows=None,
    compression="lz4",
    overwrite=False,
    expected_features=None,
    storage_options=None,
    progress=False,
    batch_rows=None,
    block_size=None,
) -> IngestResult:
    """Stream ``source`` into a new chunked, compressed Zarr v3 array at ``dest``.

    Parameters
    ----------
    source : str or os.PathLike
        Local path or fsspec URL of a CSV (optionally .gz/.bz2/.zst), Parquet,
        .npy or Zarr array of shape (n_rows, n_features).
    dest : str or os.PathLike
        Local directory of the Zarr array to create.
    format : {'csv', 'parquet', 'npy', 'zarr'}, optional
        Default: :func:`detect_format`.
    columns : list of str or int, optional
        Columns to keep, in output order (names, or positions); default all.
        Every kept column must be numeric (bool, integer, float, decimal).
    feature_names : list of str, optional
        Output names, one per kept column. Default: CSV/Parquet column names,
        a Zarr source's ``feature_names`` attribute, else ``x0, x1, ...``.
    dtype : {'float32', 'float64'}, optional
        Default float32 only when every kept source column is float32,
        else float64. Integers the dtype cannot hold exactly, and float64
        values beyond the float32 range, are refused.
    bad_rows : {'error', 'drop'}
        Rows with NaN, +/-inf, an empty or unparseable cell: refuse the
        ingest (after counting them all; nothing is written), or drop them
        and record the counts.
    chunk_rows : int, optional
        Rows per stored chunk (chunks span all features). Default about
        32 MiB per chunk, or the whole array when it is smaller.
    compression : {'lz4', 'zstd', 'none'}
        Codec of the stored chunks. 'lz4' (Blosc-LZ4, byte shuffle) decodes
        fastest, which EM, reading the array every iteration, feels most.
    overwrite : bool
        Replace an existing ``dest`` (atomically: old renamed aside, new
        renamed in, old deleted).
    expected_features : list of str, optional
        The feature names the data must have, in this order (e.g. a fitted
        model's ``feature_names_in_``); otherwise IngestError.
    storage_options : dict, optional
        fsspec options for a URL ``source``.
    progress : bool
        Show a tqdm bar over bytes (CSV) or rows.
    batch_rows : int, optional
        Rows per source batch for Parquet, .npy and Zarr (Zarr: rounded to
        whole source chunks). Default about 16 MiB of output per batch.
    block_size : int, optional
        Bytes of CSV text per batch (pyarrow block size); default 4 MiB.
        Must exceed the longest row. pyarrow reads ~30-40 blocks ahead, so
        memory grows with it.

    Returns
    -------
    IngestResult
        ``path`` of the array of shape (n_rows_written, n_features) and the
        :class:`ValidationReport` (also stored as its ``ingest_report`` attribute).

    Raises
    ------
    IngestError
        Every refusal (bad options, unknown or non-numeric columns, feature
        mismatch, bad rows, inexact conversion, empty result, existing
        dest); nothing is left at ``dest`` or in temporary directories. For
        bad rows and empty results its ``report`` attribute holds the counts.

    Notes
    -----
    CSV column types come from pyarrow's inference on the first block: text
    columns whose non-empty cells are mostly numbers count as numeric (the
    other cells are unparseable: bad rows); other text, dates and times are
    non-numeric. A typed read that meets an unexpected cell later (e.g.
    ``1.5`` in a column of integers) restarts once with text parsing.
    Parquet files are read one row group at a time, so memory also scales
    with the source's row-group size.
    """
    if format is not None and format not in FORMATS:
        raise IngestError(f"format must be one of {FORMATS}, got {format!r}.")
    if bad_rows not in BAD_ROWS_POLICIES:
        raise IngestError(
            f"bad_rows must be 'error' or 'drop', got {bad_rows!r}: 'error' refuses data "
            "with NaN/inf/empty cells, 'drop' removes those rows and records the count."
        )
    for opt, val in (("chunk_rows", chunk_rows), ("batch_rows", batch_rows),
                     ("block_size", block_size)):
        if val is not None and (
            not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < 1
        ):
            raise IngestError(f"{opt} must be a positive integer, got {val!r}.")
    codecs = compressors(compression)
    dest_path = _check_dest(dest, overwrite)
    loc = _Location(source, storage_options)
    if not loc.is_url:
        src, dst = Path(loc.path).resolve(), dest_path.resolve()
        if src == dst or dst in src.parents:
            raise IngestError(
                f"dest {dest_path} is (or contains) the source {loc.text}: replacing it "
                "would delete the data being read. Choose another dest."
            )
    _check_replaceable(dest_path, overwrite)
    fmt = format or detect_format(source, storage_options=storage_options)
    if fmt == "csv":
        reader = _CsvReader(loc, block_size=block_size)
    else:
        reader = _READERS[fmt](loc, batch_rows=batch_rows)
    plan = _plan(reader, columns, feature_names, dtype, expected_features)

    created_parents = _make_parents(dest_path.parent)
    tmp = _sibling(dest_path, "ingest-tmp")
    try:
        tolerant = reader.needs_tolerant(plan.sel)
        while True:
            try:
                array, stats = _stream(
                    reader, plan, tmp, tolerant=tolerant, bad_rows=bad_rows,
                    chunk_rows=chunk_rows, progress=progress, codecs=codecs,
                )
                break
            except _NeedTolerantParse as e:
                # Rare: a cell the first block's types cannot hold. Start over
                # with text parsing, which flags such cells instead of failing.
                logger.info("Re-reading %s with text parsing: %s", loc.text, e)
                shutil.rmtree(tmp, ignore_errors=True)
                tolerant = True
        report = ValidationReport(
            source=loc.text,
            format=fmt,
            n_rows_read=stats.n_read,
            n_rows_written=stats.n_written,
            n_bad_rows=stats.n_nan + stats.n_inf,
            n_nan_rows=stats.n_nan,
            n_inf_rows=stats.n_inf,
            bad_row_examples=list(stats.examples),
            non_numeric_columns=list(plan.non_numeric_excluded),
            feature_names=list(plan.feature_names),
            dtype=plan.out_dtype.name,
            bad_rows_policy=bad_rows,
            n_unparseable_rows=stats.n_unparseable,
            source_dtypes=dict(plan.source_dtypes),
        )
        if report.n_bad_rows and bad_rows == "error":
            raise IngestError(_bad_rows_message(report, reader), report=report)
        if report.n_rows_written == 0:
            what = (
                f"all {report.n_rows_read} rows were bad and dropped"
                if report.n_rows_read else "the source has no data rows"
            )
            raise IngestError(
                f"No rows to write from {loc.text}: {what}, so there is nothing to fit "
                "or score. Check the source (and columns=) and ingest a non-empty one.",
                report=report,
            )
        array.update_attributes({
            "feature_names": list(plan.feature_names),
            "ingest_report": report.to_dict(),
            "source": loc.text,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
        })
        _commit(tmp, dest_path, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created_parents:
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    if report.n_bad_rows:
        logger.warning(
            "Dropped %d of %d rows of %s with NaN, infinite, empty or unparseable "
            "values (%d with NaN, %d with inf; first rows %s).",
            report.n_bad_rows, report.n_rows_read, loc.text, report.n_nan_rows,
            report.n_inf_rows, report.bad_row_examples,
        )
    logger.info(
        "Ingested %d rows x %d features (%s) from %s into %s.",
        report.n_rows_written, len(plan.feature_names), report.dtype, loc.text, dest_path,
    )
    return IngestResult(path=str(dest_path), report=report)


def _bad_rows_message(report, reader) -> str:
    kinds = []
    if report.n_nan_rows:
        kinds.append(f"{report.n_nan_rows} with NaN or an empty/unparseable cell")
    if report.n_inf_rows:
        kinds.append(f"{report.n_inf_rows} with infinity")
    more = ", ..." if report.n_bad_rows > len(report.bad_row_examples) else ""
    rows = ", ".join(str(r) for r in report.bad_row_examples)
    detail = ""
    first = getattr(reader, "first_unparseable", None)
    if first is not None:
        detail = f" Column {first[0]!r} has the non-numeric cell {first[2]!r} at row {first[1]}."
    return (
        f"{report.n_bad_rows} of {report.n_rows_read} rows of {report.source} have missing "
        f"or non-finite values ({'; '.join(kinds)}): row indices {rows}{more} (0-based data "
        f"rows).{detail} Fix the source, or pass bad_rows='drop' to drop these rows "
        "(the count is recorded in the report). Nothing was written."
    )


def read_report(path, storage_options=None) -> ValidationReport:
    """The :class:`ValidationReport` stored with an array written by :func:`ingest`.

    Raises
    ------
    IngestError
        When the array has no ``ingest_report`` attribute.
    """
    from gmm_engine import open_zarr_array

    z = open_zarr_array(path, storage_options=storage_options)
    d = z.attrs.get("ingest_report")
    if not isinstance(d, dict):
        raise IngestError(
            f"The Zarr array at {path} has no ingest report: it was not written by "
            "pipeline.ingest. Ingest its source (or the array itself) with pipeline.ingest."
        )
    return ValidationReport.from_dict(d)
