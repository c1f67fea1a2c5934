"""Streaming a source into the writer, counting bad rows under the policy.

A row is *bad* when any of its values is NaN (a missing, empty or
unparseable cell) or +/-inf; under ``'marginalize'`` only when it holds
an infinity or an unparseable cell, or has every value missing (a row
with some values missing is kept, its gaps NaN, for
``GaussianMixture(missing='marginalize')``).  :class:`RowCounts` counts
bad rows by kind and keeps the first :data:`MAX_EXAMPLES` indices; the
policy decides what happens to them:

* ``'drop'``: good rows are written, bad rows counted and left out;
* ``'error'`` and ``'marginalize'``: writing stops at the first bad row
  but reading goes on, so the refusal can give the full count; nothing is
  returned to publish.

Memory stays bounded by the reader's batch plus the writer's two chunks.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass, field

import numpy as np

from .readers import NeedTolerantParse
from .writer import MemoryWriter, ZarrWriter

logger = logging.getLogger(__name__)

__all__ = ["BAD_ROWS_POLICIES", "MARGINALIZE", "MAX_EXAMPLES", "RowCounts", "read_rows_into_memory", "stream_rows"]

BAD_ROWS_POLICIES = ("error", "drop", "marginalize")
#: the policy that keeps rows with missing values (NaN) for marginalisation
MARGINALIZE = "marginalize"
#: row indices kept in the report and shown in messages
MAX_EXAMPLES = 10


@dataclass
class RowCounts:
    """Rows read and written so far, and the bad ones by kind.

    ``n_empty`` counts rows with every value missing (bad under every
    policy); ``n_incomplete`` and ``n_missing`` the rows kept with missing
    values, and their missing values, under ``'marginalize'``.
    """

    n_read: int = 0
    n_written: int = 0
    n_nan: int = 0
    n_inf: int = 0
    n_unparseable: int = 0
    examples: list = field(default_factory=list)
    n_empty: int = 0
    n_incomplete: int = 0
    n_missing: int = 0

    @property
    def n_bad(self) -> int:
        return self.n_nan + self.n_inf

    def add(self, block: np.ndarray, unparseable, marginalize: bool = False) -> np.ndarray:
        """Count the next ``block`` of rows (and its unparseable-row mask); return its good rows.

        With ``marginalize`` the rows with some (not all) values missing and
        no infinity or unparseable cell are good, their NaN kept.
        """
        finite = np.isfinite(block).all(axis=1)
        good = block
        if not finite.all():
            candidates = np.flatnonzero(~finite)
            nan = np.isnan(block[candidates])
            self.n_empty += int(nan.all(axis=1).sum())
            keep = finite
            if marginalize:
                flagged = None if unparseable is None else unparseable[candidates]
                kept = _incomplete_rows(block[candidates], nan, flagged)
                self.n_incomplete += int(kept.sum())
                self.n_missing += int(nan[kept].sum())
                keep = finite.copy()
                keep[candidates[kept]] = True
                candidates, nan = candidates[~kept], nan[~kept]
            nan_rows = nan.any(axis=1)
            self.n_nan += int(nan_rows.sum())
            self.n_inf += int((~nan_rows).sum())
            if unparseable is not None:
                self.n_unparseable += int(unparseable.sum())
            room = MAX_EXAMPLES - len(self.examples)
            self.examples.extend(int(self.n_read + r) for r in candidates[:room])
            good = block[keep]
        self.n_read += len(block)
        return good


def _incomplete_rows(rows, nan, unparseable):
    """Of non-finite ``rows``: those 'marginalize' keeps (no infinity, no unparseable cell, a value present)."""
    kept = ~np.isinf(rows).any(axis=1) & ~nan.all(axis=1)
    return kept if unparseable is None else kept & ~unparseable


def stream_rows(reader, plan, path, *, bad_rows, chunk_rows, progress, codecs):
    """Read the planned columns of ``reader`` and write the good rows to a Zarr array at ``path``.

    A typed CSV read that meets a cell its inferred type cannot hold starts
    over, once, with text parsing (which flags such cells instead of failing).

    Returns
    -------
    array : zarr.Array or None
        None when nothing was written (no rows, or bad rows under ``'error'``
        or ``'marginalize'``).
    counts : RowCounts
    """
    def fresh_writer(again):
        if again:
            shutil.rmtree(path)  # the empty directory, as it was given, for the second read
            path.mkdir()
        return ZarrWriter(path, len(plan.sel), plan.out_dtype, chunk_rows, codecs)

    return _with_retry(reader, plan, fresh_writer, bad_rows=bad_rows, progress=progress)


def read_rows_into_memory(reader, plan, *, bad_rows):
    """:func:`stream_rows` into a NumPy array instead of a Zarr array: (array or None, counts)."""
    return _with_retry(reader, plan, lambda again: MemoryWriter(len(plan.sel), plan.out_dtype),
                       bad_rows=bad_rows, progress=False)


def _with_retry(reader, plan, fresh_writer, *, bad_rows, progress):
    tolerant = reader.needs_tolerant(plan.sel)
    again = False
    while True:
        try:
            return _stream(reader, plan, fresh_writer(again), tolerant=tolerant, bad_rows=bad_rows,
                           progress=progress)
        except NeedTolerantParse as e:
            logger.info("Re-reading %s with text parsing: %s", reader.loc.text, e)
            tolerant = again = True


def _progress_bar(reader, progress):
    if not progress:
        return None
    from tqdm.auto import tqdm

    total, unit = reader.progress_total()
    return tqdm(total=total, unit=unit, unit_scale=unit == "B", desc="ingest")


def _stream(reader, plan, writer, *, tolerant, bad_rows, progress):
    counts = RowCounts()
    bar = _progress_bar(reader, progress)
    try:
        with contextlib.closing(reader.blocks(plan.sel, plan.out_dtype, tolerant)) as blocks:
            for block, unparseable, step in blocks:
                good = counts.add(block, unparseable, marginalize=bad_rows == MARGINALIZE)
                # With bad_rows="error" keep scanning (to report the full count)
                # but stop writing: the ingest will be refused.
                if bad_rows == "drop" or counts.n_bad == 0:
                    writer.append(good)
                    counts.n_written += len(good)
                if bar is not None:
                    bar.update(step)
        if bad_rows != "drop" and counts.n_bad:
            writer.abort()
            return None, counts
        array = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    return array, counts
