"""Ingest CSV, Parquet, ``.npy`` and Zarr sources into a chunked, compressed Zarr v3 array.

The result is what :mod:`gmm_engine` reads: a 2-D float array of shape
``(n_rows, n_features)`` with a ``feature_names`` attribute, plus the
:class:`ValidationReport` of the ingest stored as the ``ingest_report``
attribute.

Guarantees
----------
* Out of core: the source is streamed in batches (``pyarrow.csv.open_csv``,
  ``ParquetFile.iter_batches``, ``.npy`` row slices read with plain file
  reads, Zarr row slices); memory stays bounded by a few batches plus two
  output chunks.
* Never silently altered data: rows with NaN, +/-inf, an empty or an
  unparseable numeric cell are refused (``bad_rows="error"``) or dropped and
  counted (``bad_rows="drop"``); ``bad_rows="marginalize"`` keeps rows with
  NaN or empty cells, as NaN, for ``GaussianMixture(missing='marginalize')``,
  and counts them, but still refuses infinities, unparseable cells and rows
  with every value missing; integers the output dtype cannot represent
  exactly and float64 values that would overflow float32 are refused.
* Atomic: the array is written to a temporary sibling directory and renamed
  into place; ``dest`` never exists half-written, and after a failure
  neither ``dest`` nor the temporary directory is left behind.

How an ingest runs, one module per step
---------------------------------------
1. options, then ``dest`` (:mod:`.publish`) and the source (:mod:`.location`);
2. a reader for the format (:mod:`.readers`) reads the metadata only;
3. the plan (:mod:`.plan`) checks columns, names and dtype against it;
4. the rows stream (:mod:`.stream`), converted exactly (:mod:`.convert`),
   into the chunked writer (:mod:`.writer`), inside a temporary directory
   that :mod:`.publish` renames into place;
5. the counts become the :class:`ValidationReport` (:mod:`.report`), which
   refuses bad rows or an empty result, else is stored with the array.

CSV column types come from pyarrow's inference on the first block: text
columns whose non-empty cells are mostly numbers count as numeric (the
other cells are unparseable: bad rows); other text, dates and times are
non-numeric.  A typed read that meets an unexpected cell later (e.g.
``1.5`` in a column of integers) restarts once with text parsing.
Parquet files are read one row group at a time, so memory also scales
with the source's row-group size.

>>> result = ingest("events.csv", "events.zarr", columns=["x", "y"])  # doctest: +SKIP
>>> result.report.n_rows_written                                    # doctest: +SKIP
"""

from __future__ import annotations

import logging

import numpy as np

from .location import Location, detect_format
from .plan import make_plan
from .publish import check_dest, check_replaceable, publishing
from .readers import FORMATS, open_reader
from .report import IngestError, IngestResult, ValidationReport, check_written, read_report, store_report
from .stream import BAD_ROWS_POLICIES, read_rows_into_memory, stream_rows
from .writer import compressors

logger = logging.getLogger(__name__)

__all__ = [
    "IngestError",
    "IngestResult",
    "ValidationReport",
    "compressors",
    "detect_format",
    "ingest",
    "read_report",
    "read_rows",
]


def ingest(
    source, dest, *, format=None, columns=None, feature_names=None, dtype=None, bad_rows="error",
    chunk_rows=None, compression="lz4", overwrite=False, expected_features=None,
    storage_options=None, progress=False, batch_rows=None, block_size=None, durable=True,
) -> IngestResult:
    """Stream ``source`` into a new chunked, compressed Zarr v3 array at ``dest``.

    Parameters
    ----------
    source : str or os.PathLike
        Local path or fsspec URL of a CSV (optionally .gz/.bz2/.zst), Parquet, .npy or Zarr
        array of shape (n_rows, n_features).
    dest : str or os.PathLike
        Local directory of the Zarr array to create.
    format : {'csv', 'parquet', 'npy', 'zarr'}, optional
        Default: :func:`detect_format`.
    columns : list of str or int, optional
        Columns to keep, in output order (names, or positions); default all. Every kept
        column must be numeric (bool, integer, float, decimal).
    feature_names : list of str, optional
        Output names, one per kept column. Default: CSV/Parquet column names, a Zarr
        source's ``feature_names`` attribute, else ``x0, x1, ...``.
    dtype : {'float32', 'float64'}, optional
        Default float32 only when every kept source column is float32, else float64.
        Integers the dtype cannot hold exactly, and float64 values beyond the float32 range,
        are refused.
    bad_rows : {'error', 'drop', 'marginalize'}
        Rows with NaN, +/-inf, an empty or unparseable cell: refuse the ingest (after
        counting them all; nothing is written), or drop them and record the counts.
        'marginalize' keeps the rows with some values missing (NaN, empty or null cells),
        as NaN, for a ``GaussianMixture(missing='marginalize')`` to fit or score, and
        records how many (``n_incomplete_rows``, ``n_missing_values``); rows with +/-inf,
        an unparseable cell or every value missing are refused as under 'error'.
    chunk_rows : int, optional
        Rows per stored chunk (chunks span all features). Default about 32 MiB per chunk,
        or the whole array when it is smaller.
    compression : {'lz4', 'zstd', 'none'}
        Codec of the stored chunks. 'lz4' (Blosc-LZ4, byte shuffle) decodes fastest, which
        EM, reading the array every iteration, feels most.
    overwrite : bool
        Replace an existing ``dest`` that is a Zarr store (atomically: old renamed aside,
        new renamed in, old deleted).
    expected_features : list of str, optional
        The feature names the data must have, in this order (e.g. a fitted model's
        ``feature_names_in_``); otherwise IngestError.
    storage_options : dict, optional
        fsspec options for a URL ``source``.
    progress : bool
        Show a tqdm bar over bytes (CSV) or rows.
    batch_rows : int, optional
        Rows per source batch for Parquet, .npy and Zarr (Zarr: rounded to whole source
        chunks). Default about 16 MiB of output per batch.
    block_size : int, optional
        Bytes of CSV text per batch (pyarrow block size); default 4 MiB. Must exceed the
        longest row. pyarrow reads ~30-40 blocks ahead, so memory grows with it.
    durable : bool
        fsync the array before publishing it (default).  False for a scratch copy that is
        read once and deleted (a partition staged for scoring): it is still published
        whole or not at all, but not flushed to disk.

    Returns
    -------
    IngestResult
        ``path`` of the array of shape (n_rows_written, n_features) and the
        :class:`ValidationReport` (also stored as its ``ingest_report`` attribute).

    Raises
    ------
    IngestError
        Every refusal (bad options, unknown or non-numeric columns, feature mismatch, bad
        rows, inexact conversion, empty result, existing dest); nothing is left at ``dest``
        or in temporary directories. For bad rows and empty results its ``report``
        attribute holds the counts.
    """
    _check_options(format, bad_rows, chunk_rows, batch_rows, block_size)
    codecs = compressors(compression)
    dest_path = check_dest(dest, overwrite)
    loc = Location(source, storage_options)
    check_replaceable(dest_path, loc, overwrite)
    fmt, reader, plan = _read_plan(source, loc, format, columns, feature_names, dtype, expected_features,
                                   batch_rows=batch_rows, block_size=block_size)
    with publishing(dest_path, overwrite, durable) as tmp:
        array, counts = stream_rows(reader, plan, tmp, bad_rows=bad_rows, chunk_rows=chunk_rows,
                                    progress=progress, codecs=codecs)
        report = _report(loc, fmt, plan, counts, bad_rows)
        check_written(report, reader.first_unparseable)
        store_report(array, report)
    _log_outcome(report, dest_path)
    return IngestResult(path=str(dest_path), report=report)


def read_rows(source, *, format=None, columns=None, feature_names=None, dtype=None, bad_rows="error",
              expected_features=None, storage_options=None) -> tuple[np.ndarray, ValidationReport]:
    """Read and validate ``source`` exactly as :func:`ingest` would, into memory instead of a Zarr array.

    For sources that fit in memory many times over, such as a small
    incoming partition about to be scored: the same readers, plan, exact
    conversion and bad-row policy, the same refusals, no files written.
    The parameters are :func:`ingest`'s of the same names.

    Returns
    -------
    rows : ndarray of shape (n_rows_written, n_features)
    report : ValidationReport
    """
    _check_options(format, bad_rows, None, None, None)
    loc = Location(source, storage_options)
    fmt, reader, plan = _read_plan(source, loc, format, columns, feature_names, dtype, expected_features)
    rows, counts = read_rows_into_memory(reader, plan, bad_rows=bad_rows)
    report = _report(loc, fmt, plan, counts, bad_rows)
    check_written(report, reader.first_unparseable)
    return rows, report


def _read_plan(source, loc, format, columns, feature_names, dtype, expected_features, **reader_options):
    """The format, its reader and the checked plan of columns, names and dtype."""
    fmt = format or detect_format(source, storage_options=loc.storage_options or None)
    reader = open_reader(fmt, loc, **reader_options)
    return fmt, reader, make_plan(reader, columns, feature_names, dtype, expected_features)


def _check_options(format, bad_rows, chunk_rows, batch_rows, block_size) -> None:
    if format is not None and format not in FORMATS:
        raise IngestError(f"format must be one of {FORMATS}, got {format!r}.")
    if bad_rows not in BAD_ROWS_POLICIES:
        raise IngestError(
            f"bad_rows must be 'error' or 'drop' or 'marginalize', got {bad_rows!r}: 'error' refuses data "
            "with NaN/inf/empty cells, 'drop' removes those rows and records the count, 'marginalize' keeps "
            "rows with missing values as NaN (for GaussianMixture(missing='marginalize')) and records the count."
        )
    for opt, val in (("chunk_rows", chunk_rows), ("batch_rows", batch_rows),
                     ("block_size", block_size)):
        if val is not None and (
            not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < 1
        ):
            raise IngestError(f"{opt} must be a positive integer, got {val!r}.")


def _report(loc, fmt, plan, counts, bad_rows) -> ValidationReport:
    return ValidationReport(
        source=loc.text,
        format=fmt,
        n_rows_read=counts.n_read,
        n_rows_written=counts.n_written,
        n_bad_rows=counts.n_bad,
        n_nan_rows=counts.n_nan,
        n_inf_rows=counts.n_inf,
        bad_row_examples=list(counts.examples),
        non_numeric_columns=list(plan.non_numeric_excluded),
        feature_names=list(plan.feature_names),
        dtype=plan.out_dtype.name,
        bad_rows_policy=bad_rows,
        n_unparseable_rows=counts.n_unparseable,
        source_dtypes=dict(plan.source_dtypes),
        n_empty_rows=counts.n_empty,
        n_incomplete_rows=counts.n_incomplete,
        n_missing_values=counts.n_missing,
    )


def _log_outcome(report: ValidationReport, dest) -> None:
    if report.n_incomplete_rows:
        logger.info(
            "Kept %d of %d rows of %s with missing values (%d values, stored as NaN) for marginalisation.",
            report.n_incomplete_rows, report.n_rows_read, report.source, report.n_missing_values,
        )
    if report.n_bad_rows:
        logger.warning(
            "Dropped %d of %d rows of %s with NaN, infinite, empty or unparseable "
            "values (%d with NaN, %d with inf; first rows %s).",
            report.n_bad_rows, report.n_rows_read, report.source, report.n_nan_rows,
            report.n_inf_rows, report.bad_row_examples,
        )
    logger.info(
        "Ingested %d rows x %d features (%s) from %s into %s.",
        report.n_rows_written, len(report.feature_names), report.dtype, report.source, dest,
    )
