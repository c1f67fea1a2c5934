"""Drift of a scored partition against the model's training data, from the scoring pass.

Scoring a partition already yields, per row, the log-likelihood, the most
likely component and the anomaly flag.  Three tests compare a partition
with the training data the model was calibrated on, each from counts that
are accumulated chunk by chunk in the same pass (:class:`PartitionCounts`,
a value with an associative ``merge``) and never need the rows again:

* **anomaly rate**: with the threshold at the ``q``-quantile of training
  scores, the number flagged is ``Binomial(n, q)`` without drift (two-sided
  binomial test; effect: the ratio of the rates);
* **log-likelihood distribution**: two-sample Kolmogorov-Smirnov against a
  sorted sample of training scores saved with the model.  The statistic is
  exact (the same value as ``scipy.stats.ks_2samp``) from two histograms
  of the partition's scores over the sample's values; p-value from
  Smirnov's asymptotic distribution, as ``ks_2samp(method='asymp')``;
  effect: the KS distance itself;
* **component occupancy**: G-test of hard-assignment counts against the
  training's hard-assignment proportions (not the weights: soft and hard
  occupancy differ); effect: total variation distance.

On a large partition a negligible shift is "significant", so a test only
counts when its Holm-adjusted p-value is below ``alpha`` *and* its effect
reaches the configured size; ``drifted`` is true when any test counts.
Holm's step-down correction keeps the chance of any false alarm per
partition at most ``alpha`` whatever the dependence between the tests.

A slow drift that no single partition shows is caught by a one-sided
CUSUM (Page's test) over partitions in arrival order on the standardised
partition mean log-likelihood ``z = (mean - mu_ref) / (sd_ref / sqrt(n))``:
``S_t = max(0, S_{t-1} - z_t - k)``, alarm when ``S_t > h``.  With the
defaults ``k = 0.5, h = 5`` its in-control average run length is about 930
partitions.  Its p-value is the chance that a no-drift excursion of the
statistic reaches the observed value, ``exp(-2 k S)`` (Brownian
approximation).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from . import kolmogorov

__all__ = [
    "DriftPolicy",
    "DriftReference",
    "PartitionCounts",
    "TestResult",
    "PartitionDrift",
    "Cusum",
    "assess",
    "partition_counts",
    "counts_summary",
    "test_partition",
]


@dataclass(frozen=True)
class DriftPolicy:
    """When a partition counts as drifted.

    Attributes
    ----------
    alpha : float
        False-alarm rate per partition (family-wise, Holm over the tests).
    min_rate_ratio : float
        Anomaly-rate effect: observed rate / expected rate (or its inverse) at least this.
    min_ks : float
        Log-likelihood effect: KS distance at least this.
    min_tv : float
        Occupancy effect: total variation distance at least this.
    cusum_k, cusum_h : float
        Allowance and decision interval of the sequential detector, in
        standard errors of the partition mean log-likelihood.
    """

    alpha: float = 0.01
    min_rate_ratio: float = 1.5
    min_ks: float = 0.02
    min_tv: float = 0.02
    cusum_k: float = 0.5
    cusum_h: float = 5.0


@dataclass(frozen=True, eq=False)
class DriftReference:
    """What a partition is compared with: the training data under the model.

    Attributes
    ----------
    expected_rate : float
        Fraction of training rows at or below the threshold (the calibrated
        contamination).
    loglik_mean, loglik_std : float
        Of the training log-likelihood over all training rows.
    occupancy : ndarray of shape (K,)
        Fraction of training rows whose most likely component is k.
    score_sample : ndarray of shape (m,)
        A uniform sample of training log-likelihoods, sorted.
    """

    expected_rate: float
    loglik_mean: float
    loglik_std: float
    occupancy: np.ndarray
    score_sample: np.ndarray

    def __post_init__(self):
        sample = np.sort(np.asarray(self.score_sample, dtype=np.float64))
        if sample.ndim != 1 or sample.size == 0 or not np.all(np.isfinite(sample)):
            raise ValueError(
                "the drift reference needs a non-empty 1-D sample of finite training scores; "
                "re-register the model with `gmm fit` to recompute it"
            )
        occ = np.asarray(self.occupancy, dtype=np.float64)
        if occ.ndim != 1 or np.any(occ < 0) or not math.isclose(occ.sum(), 1.0, rel_tol=1e-9):
            raise ValueError(f"occupancy must be proportions summing to 1, got {occ.tolist()}")
        object.__setattr__(self, "score_sample", sample)
        object.__setattr__(self, "occupancy", occ)
        # the sample's own empirical CDF at and just below each of its values (every KS test needs it)
        object.__setattr__(self, "_sample_cdf", (np.searchsorted(sample, sample, side="right") / sample.size,
                                                 np.searchsorted(sample, sample, side="left") / sample.size))

    @classmethod
    def from_training(cls, *, n_rows: int, n_flagged: int, loglik_sum: float, loglik_sumsq: float,
                      component_counts, score_sample) -> "DriftReference":
        """The reference from one scoring pass over the training data.

        Parameters
        ----------
        n_rows, n_flagged : int
            Training rows, and those at or below the threshold.
        loglik_sum, loglik_sumsq : float
            Sums of the training log-likelihood and of its square (float64).
        component_counts : array-like of shape (K,)
            Training rows per most likely component.
        score_sample : array-like of shape (m,)
            A uniform sample of the training log-likelihood.
        """
        mean = loglik_sum / n_rows
        var = max(loglik_sumsq / n_rows - mean * mean, 0.0) * n_rows / max(n_rows - 1, 1)
        counts = np.asarray(component_counts, dtype=np.float64)
        return cls(n_flagged / n_rows, float(mean), math.sqrt(var), counts / counts.sum(), score_sample)

    @property
    def n_components(self) -> int:
        return self.occupancy.shape[0]

    def to_dict(self) -> dict:
        """JSON-safe metadata (the sample travels as an array beside it)."""
        return {"expected_rate": self.expected_rate, "loglik_mean": self.loglik_mean,
                "loglik_std": self.loglik_std, "occupancy": self.occupancy.tolist(),
                "sample_size": int(self.score_sample.size)}

    @classmethod
    def from_dict(cls, d: dict, score_sample) -> "DriftReference":
        return cls(float(d["expected_rate"]), float(d["loglik_mean"]), float(d["loglik_std"]),
                   np.asarray(d["occupancy"], dtype=np.float64), score_sample)


@dataclass(frozen=True, eq=False)
class PartitionCounts:
    """Counts of one partition's scores that the drift tests need; merge is addition.

    The scores' positions among the reference sample are kept as two
    histograms of length m + 1: ``hist_right[i]`` counts rows with
    ``#(sample <= score) == i`` and ``hist_left[i]`` rows with
    ``#(sample < score) == i``; their cumulative sums are the partition's
    empirical CDF just below and at every sample value.
    """

    n_rows: int
    n_flagged: int
    loglik_sum: float
    occupancy: np.ndarray
    hist_right: np.ndarray
    hist_left: np.ndarray

    @classmethod
    def zeros(cls, reference: DriftReference) -> "PartitionCounts":
        m = reference.score_sample.size
        return cls(0, 0, 0.0, np.zeros(reference.n_components, dtype=np.int64),
                   np.zeros(m + 1, dtype=np.int64), np.zeros(m + 1, dtype=np.int64))

    @classmethod
    def from_chunk(cls, log_likelihood, component, is_anomaly, reference: DriftReference) -> "PartitionCounts":
        """Counts of one chunk of scored rows.

        Parameters
        ----------
        log_likelihood : ndarray of shape (n,)
        component : ndarray of shape (n,), int
        is_anomaly : ndarray of shape (n,), bool
        reference : DriftReference
        """
        return cls.from_vector(cls.chunk_vector(log_likelihood, component, is_anomaly, reference), reference)

    @classmethod
    def chunk_vector(cls, log_likelihood, component, is_anomaly, reference: DriftReference) -> np.ndarray:
        """:meth:`to_vector` of :meth:`from_chunk`, counted straight into the vector.

        The scoring pass takes this in every chunk's task, so the rows are
        read where they lie (columns of the scoring rows, any stride) and
        counted in one compiled pass (:meth:`pipeline.drift_bins.SampleBins.count_into`).
        """
        ll = np.asarray(log_likelihood)
        if ll.dtype != np.float64:
            ll = ll.astype(np.float64)
        K, m1 = reference.n_components, reference.score_sample.size + 1
        v = np.zeros(cls.vector_length(reference))
        v[0] = ll.shape[0]
        v[1] = np.count_nonzero(is_anomaly)
        v[2] = _sample_bins(reference.score_sample).count_into(
            ll, np.asarray(component), v[3:3 + K], v[3 + K:3 + K + m1], v[3 + K + m1:])
        return v

    @staticmethod
    def vector_length(ref: DriftReference) -> int:
        return 3 + ref.n_components + 2 * (ref.score_sample.size + 1)

    def to_vector(self) -> np.ndarray:
        """The counts as one float64 vector (exact for counts below 2**53); sums of vectors merge counts."""
        return np.concatenate([[self.n_rows, self.n_flagged, self.loglik_sum], self.occupancy,
                               self.hist_right, self.hist_left]).astype(np.float64)

    @classmethod
    def from_vector(cls, vector, ref: DriftReference) -> "PartitionCounts":
        """The counts whose :meth:`to_vector` (or a sum of them) ``vector`` is."""
        v = np.asarray(vector, dtype=np.float64)
        K, m1 = ref.n_components, ref.score_sample.size + 1

        def ints(a):  # exact: sums of integers below 2**53
            return np.rint(a).astype(np.int64)

        return cls(int(v[0]), int(v[1]), float(v[2]), ints(v[3:3 + K]), ints(v[3 + K:3 + K + m1]),
                   ints(v[3 + K + m1:3 + K + 2 * m1]))

    def merge(self, other: "PartitionCounts") -> "PartitionCounts":
        return PartitionCounts(
            self.n_rows + other.n_rows, self.n_flagged + other.n_flagged,
            self.loglik_sum + other.loglik_sum, self.occupancy + other.occupancy,
            self.hist_right + other.hist_right, self.hist_left + other.hist_left,
        )

    @property
    def mean_loglik(self) -> float:
        return self.loglik_sum / self.n_rows if self.n_rows else math.nan


@dataclass(frozen=True)
class TestResult:
    """One test on one partition: statistic, p-value (raw and Holm-adjusted), effect size."""

    name: str
    statistic: float
    p_value: float
    p_adjusted: float
    effect: float
    min_effect: float
    significant: bool

    def to_dict(self) -> dict:
        return {k: _json_float(v) if isinstance(v, float) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TestResult":
        return cls(**{k: (math.nan if d[k] is None and k != "name" else d[k]) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class PartitionDrift:
    """The drift verdict of one partition, as recorded in the manifest.

    ``sequential`` is the CUSUM's record for this partition, None until the
    partition has taken its place in the arrival order.
    """

    n_rows: int
    tests: tuple
    drifted: bool
    sequential: dict | None = None
    reasons: tuple = field(default_factory=tuple)

    @property
    def sequential_alarm(self) -> bool:
        return bool(self.sequential and self.sequential["alarm"])

    def with_sequential(self, record: dict) -> "PartitionDrift":
        reasons = tuple(r for r in self.reasons if r != "sequential") + (("sequential",) if record["alarm"] else ())
        return PartitionDrift(self.n_rows, self.tests, self.drifted, record, reasons)

    #: the tests a verdict holds, in the order they are run
    TESTS = ("anomaly_rate", "loglik_ks", "occupancy_g")

    @classmethod
    def from_dict(cls, d: dict) -> "PartitionDrift":
        """The verdict :meth:`to_dict` stored (as the manifest holds it)."""
        seq = d.get("sequential")
        if seq is not None:
            seq = {k: (math.nan if v is None and k in ("z", "statistic", "threshold", "p_value") else v)
                   for k, v in seq.items()}
        tests = tuple(TestResult.from_dict(d[name]) for name in cls.TESTS if name in d)
        return cls(int(d["n_rows"]), tests, bool(d["drifted"]), seq, tuple(d.get("reasons", ())))

    def to_dict(self) -> dict:
        return {
            "n_rows": self.n_rows,
            "drifted": self.drifted,
            "sequential_alarm": self.sequential_alarm,
            "reasons": list(self.reasons),
            **{t.name: t.to_dict() for t in self.tests},
            "sequential": None if self.sequential is None else
            {k: _json_float(v) if isinstance(v, float) else v for k, v in self.sequential.items()},
        }


def _json_float(x: float):
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------------
# the three tests
#
# scipy is imported inside them: it costs about a second at import, which a
# run that scores partitions pays once and a command that only loads a model
# (the CLI's checks before Prefect starts) should not pay at all.


def _binom_pmf(k, n, p):
    from scipy import special

    return math.exp(special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
                    + special.xlogy(k, p) + special.xlog1py(n - k, -p))


def _binom_cdf(k, n, p):
    from scipy import special

    return 0.0 if k < 0 else (1.0 if k >= n else float(special.bdtr(k, n, p)))


def _binom_sf(k, n, p):
    """P(X > k), without the cancellation of ``1 - cdf`` in the far tail."""
    from scipy import special

    return 1.0 if k < 0 else (0.0 if k >= n else float(special.bdtrc(k, n, p)))


def _last_at_most(f, d, lo, hi):
    """The i in [lo, hi] with f(i) <= d < f(i + 1), f ascending on it (lo - 1 when f(lo) > d)."""
    while lo < hi:
        mid = lo + (hi - lo) // 2
        value = f(mid)
        if value < d:
            lo = mid + 1
        elif value > d:
            hi = mid - 1
        else:
            return mid
    return lo if f(lo) <= d else lo - 1


def binomial_p_value(k: int, n: int, p: float) -> float:
    """The exact two-sided binomial test's p-value, as ``scipy.stats.binomtest(k, n, p).pvalue``.

    The same minimum-likelihood rule (outcomes at most as probable as
    ``k``, with scipy's relative slack of 1e-7) on ``scipy.special``'s
    functions directly: ~500x less overhead per call, which a scoring run
    pays once per partition.
    """
    d = _binom_pmf(k, n, p) * (1 + 1e-7)
    if k == p * n:
        return 1.0
    if k < p * n:
        ix = _last_at_most(lambda i: -_binom_pmf(i, n, p), -d, math.ceil(p * n), n)
        y = n - ix + int(d == _binom_pmf(ix, n, p))
        pval = _binom_cdf(k, n, p) + _binom_sf(n - y, n, p)
    else:
        y = _last_at_most(lambda i: _binom_pmf(i, n, p), d, 0, math.floor(p * n)) + 1
        pval = _binom_cdf(y - 1, n, p) + _binom_sf(k - 1, n, p)
    return min(1.0, pval)


def _rate_test(c: PartitionCounts, ref: DriftReference, policy: DriftPolicy):
    q = min(max(ref.expected_rate, 1e-12), 1 - 1e-12)
    p = binomial_p_value(c.n_flagged, c.n_rows, q)
    rate = c.n_flagged / c.n_rows
    # a ratio in either direction: a stale model flags too much, or too little
    ratio = max(rate / q, q / rate) if rate > 0 else math.inf
    return "anomaly_rate", rate, float(p), ratio, policy.min_rate_ratio


def ks_statistic(c: PartitionCounts, ref: DriftReference) -> float:
    """Two-sample KS distance between the partition's scores and the reference sample.

    Both empirical CDFs are right-continuous, as in ``scipy.stats.ks_2samp``;
    the supremum over all scores is reached at a sample value or just below one.
    """
    sample = ref.score_sample
    m, n = sample.size, c.n_rows
    # partition CDF at each sample value, and just below it
    at = np.cumsum(c.hist_left)[:m] / n       # #(score <= s_j) / n
    below = np.cumsum(c.hist_right)[:m] / n   # #(score < s_j) / n
    ref_at, ref_below = ref._sample_cdf
    return float(max(np.max(np.abs(at - ref_at)), np.max(np.abs(below - ref_below))))


def _ks_test(c: PartitionCounts, ref: DriftReference, policy: DriftPolicy):
    d = ks_statistic(c, ref)
    big, small = sorted([float(c.n_rows), float(ref.score_sample.size)], reverse=True)
    en = big * small / (big + small)
    # scipy.stats.ks_2samp's asymptotic p-value: the one-sample distribution at the effective size
    # (below 1, one row against a one-value sample, it is undefined: NaN, as scipy gives)
    size = round(en)
    p = kolmogorov.two_sided_sf(size, d) if size >= 1 else math.nan
    return "loglik_ks", d, p, d, policy.min_ks


def _occupancy_test(c: PartitionCounts, ref: DriftReference, policy: DriftPolicy):
    expected = ref.occupancy * c.n_rows
    live = expected > 0
    observed = c.occupancy.astype(np.float64)
    if np.any(observed[~live] > 0):
        # rows in a component the training data never chose: drift beyond any test statistic
        return "occupancy_g", math.inf, 0.0, 1.0, policy.min_tv
    # the G statistic and its chi-squared p-value, as scipy.stats.power_divergence(lambda_="log-likelihood")
    obs, exp = observed[live], expected[live]
    from scipy import special

    g = 2.0 * float(np.sum(special.xlogy(obs, obs) - special.xlogy(obs, exp)))
    p = float(special.chdtrc(obs.size - 1, g)) if obs.size > 1 else 1.0
    tv = 0.5 * float(np.abs(observed / c.n_rows - ref.occupancy).sum())
    return "occupancy_g", float(g), float(p), tv, policy.min_tv


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


# ---------------------------------------------------------------------------
# sequential detection over partitions


@dataclass(frozen=True)
class Cusum:
    """State of the one-sided CUSUM on standardised partition mean log-likelihoods.

    Attributes
    ----------
    statistic : float
        ``S_t`` after the last partition (0 at the start, and after an alarm is acknowledged).
    n_partitions : int
        Partitions seen since the start.
    """

    statistic: float = 0.0
    n_partitions: int = 0

    def step(self, n_rows: int, mean_loglik: float, ref: DriftReference, policy: DriftPolicy) -> tuple["Cusum", dict]:
        """The state after one more partition (its row count and mean log-likelihood), and its record."""
        se = ref.loglik_std / math.sqrt(n_rows) if ref.loglik_std > 0 else math.inf
        z = (mean_loglik - ref.loglik_mean) / se if math.isfinite(se) else 0.0
        s = max(0.0, self.statistic - z - policy.cusum_k)
        alarm = s > policy.cusum_h
        record = {"z": z, "statistic": s, "threshold": policy.cusum_h,
                  "p_value": math.exp(-2.0 * policy.cusum_k * s), "alarm": alarm}
        return Cusum(s, self.n_partitions + 1), record


def test_partition(counts: PartitionCounts, ref: DriftReference, policy: DriftPolicy) -> PartitionDrift:
    """The three tests on one scored partition and its verdict (the sequential step comes later).

    Raises
    ------
    ValueError
        The partition has no rows.
    """
    if counts.n_rows == 0:
        raise ValueError("a partition with no rows has no distribution to test for drift")
    raw = [t(counts, ref, policy) for t in (_rate_test, _ks_test, _occupancy_test)]
    adjusted = holm([r[2] for r in raw])
    tests = []
    for (name, statistic, p, effect, min_effect), p_adj in zip(raw, adjusted):
        significant = bool(p_adj < policy.alpha and effect >= min_effect)
        tests.append(TestResult(name, statistic, p, p_adj, effect, min_effect, significant))
    reasons = tuple(t.name for t in tests if t.significant)
    return PartitionDrift(counts.n_rows, tuple(tests), bool(reasons), None, reasons)


def assess(counts: PartitionCounts, ref: DriftReference, policy: DriftPolicy,
           cusum: Cusum = Cusum()) -> tuple[PartitionDrift, Cusum]:
    """Every test on one scored partition, the sequential step, and the verdict.

    Returns
    -------
    PartitionDrift
    Cusum
        The sequential state to carry to the next partition.
    """
    drift = test_partition(counts, ref, policy)
    new_cusum, record = cusum.step(counts.n_rows, counts.mean_loglik, ref, policy)
    return drift.with_sequential(record), new_cusum


def _sample_bins(sample: np.ndarray):
    """The :class:`pipeline.drift_bins.SampleBins` index of the sorted reference sample (built once per sample).

    It places rows among the sample values: ``hist_right[i]`` counts the rows
    with ``i`` sample values at or below them, ``hist_left[i]`` those with
    ``i`` below them (the bincounts of ``searchsorted(sample, ll, side)``).
    """
    from .drift_bins import sample_bins  # numba loads when counts are first taken

    return sample_bins(sample)


def partition_counts(log_likelihood, component, is_anomaly, ref: DriftReference, rows=None):
    """:class:`PartitionCounts` of scored rows: a value for NumPy input, a lazy value for dask input.

    The lazy form is a dask array (one flat vector of the counts per chunk,
    summed), so it is optimised and computed in one graph with the per-row
    arrays it reads: the rows are scored once.  ``PartitionCounts.from_vector``
    of its computed value is the counts.

    ``rows`` (bool, shape (n,), optional) selects the rows counted: the
    complete rows of a partition scored with missing values marginalised,
    whose log-likelihoods are of all the features the reference was taken on.
    """
    if not hasattr(log_likelihood, "dask"):
        if rows is not None:
            rows = np.asarray(rows, dtype=bool)
            log_likelihood, component, is_anomaly = (np.asarray(a)[rows] for a in
                                                     (log_likelihood, component, is_anomaly))
        return PartitionCounts.from_chunk(log_likelihood, component, is_anomaly, ref)
    import dask.array as da

    width = PartitionCounts.vector_length(ref)
    arrays = (log_likelihood, component, is_anomaly) if rows is None else (log_likelihood, component, is_anomaly, rows)
    arrays = da.core.unify_chunks(*(x for a in arrays for x in (a, "i")))[1]
    n_chunks = arrays[0].numblocks[0]
    per_chunk = da.map_blocks(_count_vector, *arrays, ref=ref, chunks=((width,) * n_chunks,), dtype=np.float64)
    return per_chunk.reshape((n_chunks, width)).sum(axis=0)


def counts_summary(ref: DriftReference, threshold: float):
    """The ``chunk_summary`` of :func:`gmm_engine.scoring.score_rows` that counts a partition in its scoring pass.

    Each chunk's task counts its own rows (flagged at ``threshold``) as it
    scores them, so the counts add no task and no second read of the
    per-row arrays; ``PartitionCounts.from_vector`` of the summed vector
    is :func:`partition_counts` of the scored rows.
    """
    return functools.partial(_chunk_count_vector, ref=ref, threshold=float(threshold))


def _chunk_count_vector(log_likelihood, component, responsibility, *, ref, threshold):
    ll = np.asarray(log_likelihood)
    return _count_vector(ll, component, ll <= threshold, ref=ref)


def _count_vector(ll, comp, flags, rows=None, *, ref):
    if rows is not None:
        ll, comp, flags = ll[rows], comp[rows], flags[rows]
    return PartitionCounts.chunk_vector(ll, comp, flags, ref)
