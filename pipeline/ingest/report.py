"""What an ingest read, wrote, refused or dropped, and the refusals themselves.

:class:`ValidationReport` is a frozen value: :func:`pipeline.ingest.ingest`
returns it inside an :class:`IngestResult`, attaches it to a refused
ingest's :class:`IngestError` once the whole source was read, and stores it
as the ``ingest_report`` attribute of the array written (with
``feature_names``, ``source`` and ``created_at``): :func:`store_report`
writes those attributes, :func:`read_report` reads the report back.

The two refusals of a fully read source live here because they are
judgements on the report: bad rows under ``bad_rows="error"`` (or, under
``bad_rows="marginalize"``, rows that cannot be kept with missing values),
and nothing left to write.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field

__all__ = ["IngestError", "IngestResult", "ValidationReport", "read_report", "store_report"]


class IngestError(ValueError):
    """A refused ingest: the message names the problem and the fix.

    ``report`` holds the :class:`ValidationReport` when the data were read
    to the end before the refusal (bad rows with ``bad_rows="error"``, or an
    empty result), else None.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


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
        Rows with NaN, +/-inf, or an empty/unparseable numeric cell (under
        ``'marginalize'``: only rows with +/-inf, an unparseable cell, or
        every value missing); ``n_bad_rows == n_nan_rows + n_inf_rows``.
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
        ``'error'``, ``'drop'`` or ``'marginalize'``.
    n_unparseable_rows : int
        Bad rows with a cell that is not a number (a subset of ``n_nan_rows``).
    source_dtypes : dict of str to str
        Source type of each output feature (e.g. ``'int64'``, ``'bool'``):
        which columns were converted to ``dtype``.
    n_empty_rows : int
        Rows with every value missing (bad rows, under every policy).
    n_incomplete_rows : int
        Under ``'marginalize'``: rows written with some values missing
        (stored as NaN, for ``GaussianMixture(missing='marginalize')``); 0
        otherwise.
    n_missing_values : int
        Under ``'marginalize'``: the missing values (NaN cells) written.
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
    n_empty_rows: int = 0
    n_incomplete_rows: int = 0
    n_missing_values: int = 0

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


def check_written(report: ValidationReport, first_unparseable=None) -> None:
    """Refuse a fully read source that left bad rows (policy ``'error'``) or no rows.

    Parameters
    ----------
    report : ValidationReport
        The counts of the whole source; attached to the error raised.
    first_unparseable : tuple of (str, int, object), optional
        ``(column, row, cell)`` of the first cell that is not a number, named
        in the message.

    Raises
    ------
    IngestError
        With ``report`` attached.
    """
    if report.n_bad_rows and report.bad_rows_policy == "marginalize":
        raise IngestError(_unkept_rows_message(report, first_unparseable), report=report)
    if report.n_bad_rows and report.bad_rows_policy == "error":
        raise IngestError(_bad_rows_message(report, first_unparseable), report=report)
    if report.n_rows_written == 0:
        what = (
            f"all {report.n_rows_read} rows were bad and dropped"
            if report.n_rows_read else "the source has no data rows"
        )
        raise IngestError(
            f"No rows to write from {report.source}: {what}, so there is nothing to fit "
            "or score. Check the source (and columns=) and ingest a non-empty one.",
            report=report,
        )


def _bad_rows_message(report: ValidationReport, first_unparseable) -> str:
    kinds = []
    if report.n_nan_rows:
        kinds.append(f"{report.n_nan_rows} with NaN or an empty/unparseable cell")
    if report.n_inf_rows:
        kinds.append(f"{report.n_inf_rows} with infinity")
    more = ", ..." if report.n_bad_rows > len(report.bad_row_examples) else ""
    rows = ", ".join(str(r) for r in report.bad_row_examples)
    detail = ""
    if first_unparseable is not None:
        name, row, cell = first_unparseable
        detail = f" Column {name!r} has the non-numeric cell {cell!r} at row {row}."
    return (
        f"{report.n_bad_rows} of {report.n_rows_read} rows of {report.source} have missing "
        f"or non-finite values ({'; '.join(kinds)}): row indices {rows}{more} (0-based data "
        f"rows).{detail} Fix the source, or pass bad_rows='drop' to drop these rows "
        "(the count is recorded in the report). Nothing was written."
    )


def _unkept_rows_message(report: ValidationReport, first_unparseable) -> str:
    """``'marginalize'``'s refusal: the rows that cannot be kept with missing values."""
    n_unparseable, n_empty = report.n_unparseable_rows, report.n_empty_rows
    n_infinite = report.n_bad_rows - n_unparseable - n_empty
    kinds = [text for count, text in (
        (n_infinite, f"{n_infinite} with infinity"),
        (n_empty, f"{n_empty} with every value missing"),
        (n_unparseable, f"{n_unparseable} with a non-numeric cell"),
    ) if count]
    more = ", ..." if report.n_bad_rows > len(report.bad_row_examples) else ""
    rows = ", ".join(str(r) for r in report.bad_row_examples)
    detail = ""
    if first_unparseable is not None:
        name, row, cell = first_unparseable
        detail = f" Column {name!r} has the non-numeric cell {cell!r} at row {row}."
    return (
        f"{report.n_bad_rows} of {report.n_rows_read} rows of {report.source} cannot be kept with missing "
        f"values ({'; '.join(kinds)}): row indices {rows}{more} (0-based data rows).{detail} "
        "bad_rows='marginalize' keeps NaN and empty cells as missing values, not infinities, cells that are "
        "not numbers, or rows with no value at all. Fix the source, or pass bad_rows='drop' to drop every "
        "row with a missing or non-finite value (the count is recorded in the report). Nothing was written."
    )


def store_report(array, report: ValidationReport) -> None:
    """Attach ``report`` (and the names, source and time it implies) to the written ``array``."""
    array.update_attributes({
        "feature_names": list(report.feature_names),
        "ingest_report": report.to_dict(),
        "source": report.source,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })


def read_report(path, storage_options=None) -> ValidationReport:
    """The :class:`ValidationReport` stored with an array written by :func:`pipeline.ingest.ingest`.

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
