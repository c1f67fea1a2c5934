"""The interface every source reader implements.

A reader is built from a :class:`~pipeline.ingest.location.Location` and
fills its metadata in ``__init__`` without reading the data (CSV reads its
first block, to infer the column types); planning checks columns, names
and dtype against that metadata before any row is read.  Then
:meth:`Reader.blocks` streams the selected columns as ``(rows, D)`` float
blocks, already converted exactly to the output dtype.
"""

from __future__ import annotations

__all__ = ["TARGET_BATCH_BYTES", "NeedTolerantParse", "Reader", "invalid_names"]

#: target bytes of one source batch for row-addressable formats
TARGET_BATCH_BYTES = 16 * 2**20


class NeedTolerantParse(Exception):
    """The fast typed CSV read met a cell its inferred type cannot hold.

    Raised by :meth:`Reader.blocks` only with ``tolerant=False``: the
    caller starts over with ``tolerant=True``.
    """


class Reader:
    """Common interface; subclasses fill the metadata in ``__init__``.

    Attributes
    ----------
    format : str
        ``'csv'``, ``'parquet'``, ``'npy'`` or ``'zarr'``.
    loc : Location
    names : list of str
        Source column names (``x0, x1, ...`` for arrays without names).
    kinds : list of str or None
        Per column, how it converts to float (see :mod:`pipeline.ingest.convert`);
        None for a non-numeric column.
    types : list of str
        Per column, the source type named in the report.
    n_rows : int or None
        Data rows, if known in advance.
    names_problem : str or None
        Why stored names (a Zarr attribute) cannot be used, if they cannot.
    first_unparseable : tuple or None
        ``(column, row, cell)`` of the first cell that was not a number
        (tolerant CSV reads only), for the bad-rows message.
    """

    format: str
    names: list[str]
    kinds: list[str | None]
    types: list[str]
    n_rows: int | None
    names_problem: str | None = None
    first_unparseable: tuple | None = None

    def needs_tolerant(self, sel) -> bool:
        """Whether the columns ``sel`` must be parsed as text from the start."""
        return False

    def progress_total(self):
        """``(total, unit)`` of the progress bar: rows by default."""
        return self.n_rows, "rows"

    def blocks(self, sel, out_dtype, tolerant):
        """Yield ``(block, unparseable_rows_or_None, progress_increment)``.

        ``block`` is a ``(rows, len(sel))`` array of ``out_dtype`` holding
        the columns ``sel`` (positions in :attr:`names`), in that order.
        """
        raise NotImplementedError


def invalid_names(names, d) -> str | None:
    """What is wrong with ``names`` as the names of ``d`` columns, or None."""
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
