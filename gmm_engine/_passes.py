"""Counting the passes a fit makes over its training data.

Every algorithm of the engine reads the data only through
:meth:`ChunkedData.map_reduce`, one call per pass over all rows (the scan
for NaN and inf, each k-means|| round and Lloyd pass, every rating of a
start, every EM pass).  :class:`CountedData` wraps the training data of
one fit and counts those calls: ``GaussianMixture.n_passes_`` is the
count at the end of the fit, initialisation included.  Out of core every
pass is a full read of the store, so this is the number that measures the
work of a fit (and what EM acceleration reduces).
"""

from __future__ import annotations

from ._chunked import ChunkedData


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
        self.n_samples = data.n_samples
        self.n_features = data.n_features
        self.dtype = data.dtype
        # the interface's class-level defaults would shadow the wrapped data's own
        self.weights = data.weights
        self.values_checked = data.values_checked
        self.missing = data.missing

    def map_reduce(self, fn, *args, **kwargs):
        self.passes += 1
        return self.data.map_reduce(fn, *args, **kwargs)

    def take(self, indices):
        # a few rows, not a pass
        return self.data.take(indices)

    def __getattr__(self, name):
        # only called for names not found on the wrapper: the wrapped data's own
        if name == "data":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.data, name)
