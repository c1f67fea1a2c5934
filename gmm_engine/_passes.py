"""Counting the passes a fit makes over its training data.

Every algorithm of the engine reads the data only through
:meth:`ChunkedData.map_reduce`, one call per pass over all rows (the scan
for NaN and inf, each k-means|| round and Lloyd pass, every rating of a
start, every EM pass).  :class:`CountedData` wraps the training data of
one fit and counts those calls: ``GaussianMixture.n_passes_`` is the
count at the end of the fit, initialisation included.  Out of core every
pass is a full read of the store, so this is the number that measures the
work of a fit (and what EM acceleration reduces).

A fit that needs no initialisation (``resume``) still refuses what the
scan refuses (NaN and inf rows, bad weights, features never observed),
without a pass of its own: :meth:`CountedData.check_first_pass` has the
first pass summarise the rows it reads beside its own work.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from ._chunked import ChunkedData
from ._stats import summary_chunk


@dataclass(frozen=True, eq=False)
class SummarisedPass:
    """A pass's own result and the :class:`~gmm_engine._stats.DataSummary` of the rows it read."""

    value: object
    summary: object

    def merge(self, other: "SummarisedPass") -> "SummarisedPass":
        return SummarisedPass(self.value.merge(other.value), self.summary.merge(other.summary))


def summarised_chunk(fn, missing, block, start, *args, weights=None):
    """``fn``'s result on a chunk, with the chunk's summary (what the scan computes), from one read."""
    value = fn(block, start, *args) if weights is None else fn(block, start, *args, weights=weights)
    return SummarisedPass(value, summary_chunk(block, start, missing, weights=weights))


class CountedData(ChunkedData):
    """``data`` with its passes counted; everything else is delegated unchanged.

    Parameters
    ----------
    data : ChunkedData
    passes : int, default=0
        Passes already made (a fit resumed from a checkpoint continues the
        count of the interrupted one).

    Attributes
    ----------
    passes : int
        ``passes`` plus the ``map_reduce`` calls made since.
    """

    def __init__(self, data: ChunkedData, passes: int = 0):
        self.data = data
        self.passes = int(passes)
        self._first_pass_check = None
        self.n_samples = data.n_samples
        self.n_features = data.n_features
        self.dtype = data.dtype
        # the interface's class-level defaults would shadow the wrapped data's own
        self.weights = data.weights
        self.values_checked = data.values_checked
        self.missing = data.missing

    def map_reduce(self, fn, *args, **kwargs):
        self.passes += 1
        check, self._first_pass_check = self._first_pass_check, None
        if check is None:
            return self.data.map_reduce(fn, *args, **kwargs)
        out = self.data.map_reduce(partial(summarised_chunk, fn, self.missing), *args, **kwargs)
        check(out.summary)  # raises before anything uses the pass's result
        return out.value

    def check_first_pass(self, check) -> None:
        """Have the next pass also summarise every row it reads and call ``check(summary)`` before returning.

        ``check`` gets the :class:`~gmm_engine._stats.DataSummary` a scan
        would give and raises to refuse the data.  A fit that reads its
        data anyway thus checks it in the same read.
        """
        self._first_pass_check = check

    def check_unread(self) -> None:
        """The pending check, with a scan of its own, when no pass has been made since :meth:`check_first_pass`."""
        check, self._first_pass_check = self._first_pass_check, None
        if check is not None:
            self.passes += 1
            check(self.data.map_reduce(summary_chunk, self.missing))

    def take(self, indices):
        # a few rows, not a pass
        return self.data.take(indices)

    def __getattr__(self, name):
        # only called for names not found on the wrapper: the wrapped data's own
        if name == "data":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.data, name)
