"""Starts found on a sample of the rows (``GaussianMixture(init_size=...)``).

Out of core every pass over the data is a full read.  Most passes of a
fit from scratch only find the region of an optimum: k-means|| rounds,
Lloyd passes to convergence, and the first EM iterations, which move the
components across the data.  A uniform sample of a few hundred thousand
rows held in memory finds that region as well: its log-likelihood differs
from the full data's by sampling noise, far less than the distance from a
k-means start to an optimum.

The scan (the first pass, which every fit makes to check the rows) also
draws a Bernoulli sample, each row kept with probability
``init_size / n_samples`` (every row when that is at least 1, as
MiniBatchKMeans clips its ``init_size`` to ``n_samples``) by a uniform that is a function of the row's
global index (:func:`~gmm_engine._rng.row_uniforms`), so the same rows are
drawn whatever the chunking.  With row weights a row is drawn with the
same probability and keeps its weight (rows of weight 0 are never drawn),
so the sample is an unbiased weighted sample.  On the sample, in memory
(:class:`~gmm_engine._chunked.NumpyData` on local threads, never on the
cluster), the initialisation of ``init_params`` runs, then EM (plain or
SQUAREM, as the estimator's ``acceleration``, to a tenth of its ``tol``
and at most :data:`SAMPLE_MAX_ITER` iterations); EM on all rows starts from the sample's optimum, where a
few passes polish it.  A fit then reads the data for the scan and its own
EM passes only.

Where the sample cannot serve (fewer rows drawn than components, or
components collapsing on it) the start is drawn on all rows instead, as
without ``init_size``, and the log says so.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ._chunked import NumpyData
from ._em import EMState
from ._rng import row_uniforms
from ._stats import DataSummary, summary_chunk
from .exceptions import ComponentCollapseError

logger = logging.getLogger("gmm_engine")

#: EM on the sample stops at this times the estimator's ``tol``: in memory its
#: iterations cost no pass over the data, and a tighter stop carries it across
#: the plateaus where EM creeps before a component moves (on covertype, K=6,
#: a sample of 100,000 rows stopped at ``tol`` ends 0.3 nats/row lower)
SAMPLE_TOL_FACTOR = 0.1
#: and after at most this many iterations, whatever the estimator's ``max_iter`` (which bounds the passes
#: over the data; ``initialize``, which runs none, sets it to 0)
SAMPLE_MAX_ITER = 1000
#: the row stream of the sample's uniforms (below 2**24; the initialisers use 0, 1, ... per pass)
SAMPLE_STREAM = 2**20


@dataclass(frozen=True, eq=False)
class RowSample:
    """Rows drawn from the chunks, in global row order, with their weights.

    Attributes
    ----------
    rows : ndarray of shape (n, D)
        In the input's dtype.
    weights : ndarray of shape (n,), float64, or None
        The drawn rows' weights (None for unweighted data).
    """

    rows: np.ndarray
    weights: np.ndarray | None

    def merge(self, other: "RowSample") -> "RowSample":
        weights = None if self.weights is None else np.concatenate([self.weights, other.weights])
        return RowSample(np.concatenate([self.rows, other.rows]), weights)


@dataclass(frozen=True, eq=False)
class ScanWithSample:
    """The scan's summary of a chunk and the rows it drew, merged together."""

    summary: DataSummary
    sample: RowSample

    def merge(self, other: "ScanWithSample") -> "ScanWithSample":
        return ScanWithSample(self.summary.merge(other.summary), self.sample.merge(other.sample))


def scan_sample_chunk(block, start, missing, key, probability, weights=None):
    """The scan's summary of ``block`` and its rows drawn with ``probability`` (top level: travels to workers)."""
    summary = summary_chunk(block, start, missing, weights=weights)
    if probability >= 1.0:
        keep = np.ones(block.shape[0], dtype=bool)
    else:
        keep = row_uniforms(key, SAMPLE_STREAM, start, start + block.shape[0], 1)[:, 0] < probability
    if weights is None:
        return ScanWithSample(summary, RowSample(np.array(np.asarray(block)[keep]), None))
    w = np.asarray(weights, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        keep &= w > 0  # a removed row (weight 0) is never drawn; NaN weights are refused by the scan
    return ScanWithSample(summary, RowSample(np.array(np.asarray(block)[keep]), w[keep].copy()))


def sample_probability(init_size: int | None, n_samples: int) -> float | None:
    """The probability of drawing each row (1: every row, when ``init_size >= n_samples``), or None: no sample.

    As MiniBatchKMeans clips its ``init_size`` to ``n_samples``: data no
    larger than the sample is held in memory whole for the start.
    """
    if init_size is None:
        return None
    return min(1.0, init_size / n_samples)


@dataclass(frozen=True, eq=False)
class Sample:
    """The drawn rows as in-memory training data, and their own summary.

    Attributes
    ----------
    data : NumpyData
        ``missing`` as the full data's: the sample's EM marginalises NaN too.
    summary : DataSummary
        Of the sample (the weight total the initial weights divide by).
    """

    data: NumpyData
    summary: DataSummary

    @property
    def n_rows(self) -> int:
        return self.data.n_samples

    @classmethod
    def from_rows(cls, drawn: RowSample, missing: bool) -> "Sample":
        rows = np.ascontiguousarray(drawn.rows)
        data = NumpyData(rows, weights=drawn.weights)
        data.missing = bool(missing)
        return cls(data, data.map_reduce(summary_chunk, data.missing))

    def usable(self, n_components: int) -> bool:
        """At least ``n_components`` rows of positive weight (and two), as a fit needs."""
        return self.n_rows >= max(n_components, 2)


def start_on_sample(sample: Sample, n_components: int, initialize, run) -> EMState | None:
    """The sample's EM optimum as a start for all rows, or None where the sample cannot serve.

    Parameters
    ----------
    sample : Sample
    n_components : int
    initialize : callable
        ``initialize(data, summary) -> GMMParams``: the estimator's start on
        the given data (its ``init_params``, ``*_init`` and random stream).
    run : callable
        ``run(data, state) -> EMState``: the estimator's EM (plain or
        SQUAREM) from ``state`` on the given data, stopping at
        ``SAMPLE_TOL_FACTOR`` times its ``tol``.

    Returns
    -------
    EMState or None
        The sample's final parameters with ``n_iter=0`` and no bound yet
        (EM on all rows starts there); None: start on all rows instead.
    """
    if not sample.usable(n_components):
        logger.info("the sample of %d rows holds fewer rows than %d components: starting on all rows",
                    sample.n_rows, n_components)
        return None
    try:
        params = initialize(sample.data, sample.summary)
        fitted = run(sample.data, EMState(params, 0, -math.inf))
    except ComponentCollapseError as exc:
        logger.warning("EM on the sample of %d rows failed (%s): starting on all rows", sample.n_rows, exc)
        return None
    logger.info("start fitted on a sample of %d rows: %d EM iterations, mean log-likelihood %.6g",
                sample.n_rows, fitted.n_iter, fitted.lower_bound)
    return EMState(fitted.params, 0, -math.inf)
