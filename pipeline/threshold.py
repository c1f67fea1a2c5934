"""Anomaly threshold: an exact quantile of the training log-likelihood, out of core.

The threshold for ``contamination = q`` is the k-th smallest training
score with ``k = ceil(q n)``; a row is anomalous when its score is at or
below it, so exactly ``k`` training rows are flagged (ties aside).

Computed in two passes over the data, never holding more than a sample:

1. score every row, keep a uniform sample of about ``sample_size``
   scores (and the row count);
2. from the sample, bracket the quantile ``[lo, hi]`` wide enough that
   the true one falls inside with overwhelming probability (+-6 standard
   errors of a sample quantile); score every row again, count rows below
   ``lo`` and collect the few scores inside the bracket; the k-th
   smallest follows exactly.  If the bracket missed (a ~1e-9 event), it
   is widened and pass 2 repeats.

With ``n <= sample_size`` pass 1 keeps every score and the quantile is
read off directly.

Rows scored with missing values marginalised (``bad_rows: marginalize``)
have log-densities of fewer features; :class:`PatternThresholds` gives each
missing-value pattern its own threshold at the same contamination.

Pass 1 also gives, at no extra read, what drift detection compares incoming
partitions with (:class:`pipeline.drift.DriftReference`): the mean and
spread of the training log-likelihood over all rows, the fraction of rows
each component wins, and a sorted sample of scores.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import numpy as np

from gmm_engine.scoring import score_rows

from .drift import DriftReference

#: training scores kept in the drift reference (the two-sample test's reference sample)
REFERENCE_SAMPLE_SIZE = 20_000

logger = logging.getLogger(__name__)

#: half-width of the pass-2 bracket, in standard errors of the sample quantile
BRACKET_WIDTH = 6.0


@dataclass(frozen=True)
class Threshold:
    """The calibrated threshold and how it was obtained.

    Attributes
    ----------
    threshold : float
        Rows with log-likelihood <= threshold are anomalies.
    contamination : float
    n_rows : int
        Training rows scored.
    n_flagged : int
        Training rows at or below the threshold.
    passes : int
        Scoring passes over the training data.
    sample : ndarray
        The pass-1 sample of training scores (for plots); not serialised.
    reference : DriftReference
        The training data as drift detection sees it; not serialised here
        (the registry stores it with the model).
    """

    threshold: float
    contamination: float
    n_rows: int
    n_flagged: int
    passes: int
    sample: np.ndarray
    reference: DriftReference

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("threshold", "contamination", "n_rows", "n_flagged", "passes")}


def _compute(*arrays):
    if any(hasattr(a, "dask") for a in arrays):
        from gmm_engine import compute

        return compute(*arrays)
    return arrays


def _reference(moments: dict, n_flagged: int, sample: np.ndarray, rng) -> DriftReference:
    """The drift reference from pass 1's sums and a uniform subsample of its score sample."""
    if sample.size > REFERENCE_SAMPLE_SIZE:
        sample = rng.choice(sample, size=REFERENCE_SAMPLE_SIZE, replace=False)
    return DriftReference.from_training(n_flagged=n_flagged, score_sample=sample, **moments)


def calibrate_threshold(model, X, contamination: float = 0.01, *, sample_size: int = 200_000,
                        random_state: int = 0) -> Threshold:
    """Exact ``contamination``-quantile of the training log-likelihood.

    Parameters
    ----------
    model : gmm_engine.GaussianMixture
        Fitted.
    X : numpy, dask or Zarr array, or a Zarr path, of shape (n_samples, n_features)
    contamination : float in (0, 0.5)
    sample_size : int
        Scores kept in the first pass (bounds memory).
    random_state : int

    Returns
    -------
    Threshold
        Of the complete rows when the model marginalises missing values
        (``missing='marginalize'``): incomplete rows have their own
        thresholds (:class:`PatternThresholds`).
    """
    if not 0 < contamination < 0.5:
        raise ValueError(
            f"contamination must be in (0, 0.5), got {contamination!r}: it is the expected "
            "fraction of anomalies in the training data, e.g. 0.01."
        )
    scores, components, _, observed = score_rows(model, X, n_observed=True)
    lazy = hasattr(scores, "dask")
    xp = np
    if lazy:
        import dask.array as da

        xp = da
    # rows with missing values (a model that marginalises them) have log-densities of fewer
    # features: the threshold and the drift reference are of the complete rows (NaN never
    # compares below or inside a bracket); incomplete rows get PatternThresholds
    complete = observed == model.n_features_in_
    scores = xp.where(complete, scores, np.nan)
    n_all = int(scores.shape[0])
    K = model.means_.shape[0]
    rng = np.random.default_rng(random_state)

    # pass 1: a uniform sample of scores, and the training data as drift detection sees it
    p = min(1.0, sample_size / n_all)
    if lazy:
        keep = da.random.default_rng(random_state).random(n_all, chunks=scores.chunks) < p
    else:
        keep = rng.random(n_all) < p
    counts = xp.bincount(components, weights=complete, minlength=K)
    sample, total, squares, counts, n = _compute(scores if p >= 1.0 else scores[keep], xp.nansum(scores),
                                                 xp.nansum(scores * scores), counts, complete.sum())
    sample = np.asarray(sample)
    sample = np.sort(sample[~np.isnan(sample)])
    n = int(n)
    if n == 0:
        raise ValueError("every training row has missing values: the anomaly threshold is calibrated on complete "
                         "rows; train on data with complete rows")
    k = max(1, math.ceil(contamination * n))
    counts = np.rint(np.asarray(counts)).astype(np.int64)
    moments = dict(n_rows=n, loglik_sum=float(total), loglik_sumsq=float(squares), component_counts=counts)
    if p >= 1.0:
        value = float(np.partition(sample, k - 1)[k - 1])
        n_flagged = int((sample <= value).sum())
        return Threshold(value, contamination, n, n_flagged, 1, sample,
                         _reference(moments, n_flagged, sample, rng))
    m = len(sample)

    passes, width = 1, BRACKET_WIDTH
    while True:
        # bracket the quantile: +-width standard errors of the sample quantile, in ranks
        q = k / n
        se = math.sqrt(q * (1 - q) / max(m, 1))
        lo_rank = int(math.floor((q - width * se) * m)) - 1
        hi_rank = int(math.ceil((q + width * se) * m)) + 1
        lo = -np.inf if lo_rank < 0 else float(sample[lo_rank])
        hi = np.inf if hi_rank >= m else float(sample[hi_rank])
        inside = (scores >= lo) & (scores <= hi)
        below, values = _compute((scores < lo).sum(), scores[inside])
        passes += 1
        below = int(below)
        values = np.sort(np.asarray(values))
        if below < k <= below + len(values):
            value = float(values[k - below - 1])
            n_flagged = below + int(np.searchsorted(values, value, side="right"))
            logger.info(
                "threshold %.6g at contamination %.4g: %d of %d training rows flagged (%d passes)",
                value, contamination, n_flagged, n, passes,
            )
            return Threshold(value, contamination, n, n_flagged, passes, sample,
                             _reference(moments, n_flagged, sample, rng))
        logger.warning("threshold bracket [%g, %g] missed rank %d; widening", lo, hi, k)
        width = max(4 * width, 1.0)


#: rows drawn from a model to set the threshold of each missing-value pattern
PATTERN_SAMPLE_SIZE = 20_000


def missing_patterns(X) -> tuple[np.ndarray, np.ndarray]:
    """The distinct missing-value patterns of the rows of ``X`` and each row's pattern.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)

    Returns
    -------
    masks : ndarray of shape (P, n_features), bool
        True where pattern p's features are missing; the complete pattern
        (no feature missing), when present, is one of them.
    inverse : ndarray of shape (n_samples,), intp
        The pattern of every row.
    """
    missing = np.isnan(X)
    packed = np.packbits(missing, axis=1, bitorder="little")
    _, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    return missing[first], inverse.ravel()


class PatternThresholds:
    """Anomaly thresholds for rows with missing features, one per missing-value pattern.

    A row scored by marginalising its missing features has the log-density
    of fewer coordinates, which is not comparable with the threshold of
    complete rows (fewer dimensions give larger log-densities).  The row is
    anomalous when its marginal log-likelihood is at or below the
    ``contamination``-quantile of the model's own marginal log-likelihood
    over the same observed features: the quantile of ``n_samples`` rows drawn
    from the model (seeded), with those features removed.  Complete rows keep
    the threshold calibrated on the training data.  A pattern's threshold is
    computed when first needed and kept.

    Parameters
    ----------
    model : gmm_engine.GaussianMixture
        Fitted.
    threshold : float
        The complete rows' threshold.
    contamination : float in (0, 0.5)
    n_samples : int
    random_state : int
    """

    def __init__(self, model, threshold: float, contamination: float, *,
                 n_samples: int = PATTERN_SAMPLE_SIZE, random_state: int = 0):
        if not 0 < contamination < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5), got {contamination!r}")
        self._model = copy.copy(model).set_params(missing="marginalize", random_state=random_state)
        self._threshold = float(threshold)
        self._k = max(1, math.ceil(contamination * n_samples))
        self._n_samples = int(n_samples)
        self._sample = None
        self._known: dict[bytes, float] = {}

    def for_masks(self, masks) -> np.ndarray:
        """The thresholds of the patterns ``masks`` (P, n_features) bool: (P,) float64."""
        masks = np.asarray(masks, dtype=bool)
        out = np.empty(masks.shape[0])
        for p, mask in enumerate(masks):
            out[p] = self._threshold if not mask.any() else self._pattern(mask)
        return out

    def for_rows(self, X) -> np.ndarray:
        """The threshold of every row of ``X`` (n, n_features): (n,) float64."""
        masks, inverse = missing_patterns(np.asarray(X))
        return self.for_masks(masks)[inverse]

    def _pattern(self, mask: np.ndarray) -> float:
        key = np.packbits(mask, bitorder="little").tobytes()
        if key not in self._known:
            if mask.all():
                raise ValueError("a row with every feature missing has no likelihood and no threshold")
            if self._sample is None:
                self._sample, _ = self._model.sample(self._n_samples)
            rows = self._sample.copy()
            rows[:, mask] = np.nan
            ll = self._model.score_samples(rows)
            self._known[key] = float(np.partition(ll, self._k - 1)[self._k - 1])
        return self._known[key]
