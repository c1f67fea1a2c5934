"""Per-chunk statistics as values: built from one chunk, merged associatively.

Every value here is a small frozen dataclass with a constructor from a
chunk and a ``merge``; a tree reduction of any shape over any chunking
gives the same totals up to rounding.  Arrays are float64 whatever the
input dtype.  Row weights (``sample_weight``) multiply every statistic of
their row; without weights every row weighs 1, bit for bit.

=================================  ==========================================================
value                              what a pass gives
=================================  ==========================================================
:class:`SufficientStatistics`      the E-step (or given responsibilities): n, s, Q, loglik
:class:`DataSummary`               the scan: rows, mean and scatter, NaN/inf rows, weights
:class:`RowChecks`                 the scan's checks alone, for passes that check as they go
:class:`CheckedStats`              an E-step pass and the checks of the rows it read
:class:`LoglikTotal`               the weighted log-likelihood of scoring
=================================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from . import _covariance, _missing
from ._validation import missing_value_rows, non_finite_message, unusable_rows_message
from ._weights import WeightSummary, raise_if_invalid
from .exceptions import DataValidationError

#: how many offending row indices a data summary keeps for error messages
MAX_BAD_ROWS_REPORTED = 10

_STAT_ARRAYS = ("shift", "nk", "sums", "scatter")


def _json_float(x: float):
    """A float as JSON keeps it exactly: a number, or 'nan', 'inf', '-inf'."""
    x = float(x)
    return x if math.isfinite(x) else repr(x)


@dataclass(frozen=True, eq=False)
class SufficientStatistics:
    """Sufficient statistics of a Gaussian mixture around a per-component shift.

    With responsibilities ``r`` (n, K), row weights ``w`` (n,) (1 without
    ``sample_weight``) and shift ``a`` (K, D):

    ``nk[k] = sum_n w_n r[n, k]``, ``sums[k] = sum_n w_n r[n, k] (x_n - a_k)``
    and ``scatter`` the weighted scatter of ``x_n - a_k``: (K, D, D) for
    full, summed over components (D, D) for tied, its diagonal (K, D) for
    diag, its trace (K,) for spherical.

    The value is frozen: :meth:`merge`, :meth:`rebased` and :meth:`scaled`
    return new statistics.  :meth:`to_arrays` / :meth:`from_arrays` convert
    it losslessly to plain float64 arrays and JSON scalars.

    Attributes
    ----------
    covariance_type : str
    shift : ndarray of shape (K, D)
        Shared by every chunk of one pass, so merging is plain addition.
    nk, sums, scatter : ndarray
    loglik : float
        Sum over rows of ``w_n log p(x_n)`` under the parameters that gave
        the responsibilities; NaN when the responsibilities were supplied.
    n_samples : int
        Rows counted, whatever their weight.
    sum_weights : float
        Sum of the row weights (``n_samples`` without weights): the ``N``
        of the M-step, the lower bound and BIC.
    """

    covariance_type: str
    shift: np.ndarray
    nk: np.ndarray
    sums: np.ndarray
    scatter: np.ndarray
    loglik: float
    n_samples: int
    sum_weights: float

    @property
    def n_components(self) -> int:
        return self.shift.shape[0]

    @property
    def n_features(self) -> int:
        return self.shift.shape[1]

    @property
    def mean_loglik(self) -> float:
        """``loglik / sum_weights``: the mean log-likelihood per unit weight."""
        return self.loglik / self.sum_weights if self.sum_weights else math.nan

    @classmethod
    def zeros(cls, covariance_type, shift, loglik=0.0):
        K, D = shift.shape
        cov = _covariance.get(covariance_type)
        return cls(
            covariance_type, shift, np.zeros(K), np.zeros((K, D)),
            np.zeros(cov.scatter_shape(K, D)), loglik, 0, 0.0,
        )

    @classmethod
    def from_estep(cls, X, kp, weights=None, rows=None):
        """E-step on one chunk: responsibilities under ``kp``, shift = its means.

        Parameters
        ----------
        X : ndarray of shape (n, D), float32 or float64
        kp : KernelParams
        weights : ndarray of shape (n,), float64, optional
            Row weights; None for unit weights.
        rows : ndarray of shape (n, 3), float64, optional
            Receives every row's log-likelihood, most likely component and
            its responsibility, from the same kernel call.

        With ``kp.marginal`` set, rows with NaN entries are marginalised
        (:mod:`gmm_engine._missing`): their log-likelihood is that of their
        observed features, and they add their completed rows and
        conditional covariances.
        """
        cov = _missing.kernels(kp)
        K, D = kp.means.shape
        nk = np.zeros(K)
        sums = np.zeros((K, D))
        scatter = np.zeros(cov.scatter_shape(K, D))
        loglik = cov.estep(X, kp, nk, sums, scatter, weights=weights, rows=rows)
        total = float(X.shape[0]) if weights is None else float(np.sum(weights))
        return cls(
            kp.covariance_type, kp.means, nk, sums, cov.finish_scatter(scatter),
            float(loglik), X.shape[0], total,
        )

    @classmethod
    def from_resp(cls, X, resp, shift, covariance_type, weights=None):
        """Statistics of one chunk for given responsibilities.

        Parameters
        ----------
        X : ndarray of shape (n, D)
        resp : ndarray of shape (n, K), float64
        shift : ndarray of shape (K, D)
        covariance_type : str
        weights : ndarray of shape (n,), optional
            Row weights, multiplied into the responsibilities.
        """
        cov = _covariance.get(covariance_type)
        K, D = shift.shape
        nk = np.zeros(K)
        sums = np.zeros((K, D))
        scatter = np.zeros(cov.scatter_shape(K, D))
        total = float(X.shape[0])
        if weights is not None:
            total = float(np.sum(weights))
            keep = weights != 0
            if not keep.all():  # removed rows, however far away (0 * inf is NaN)
                X, resp, weights = X[keep], resp[keep], weights[keep]
            resp = resp * weights[:, None]
        cov.accumulate(X, np.ascontiguousarray(resp, dtype=np.float64), shift, nk, sums, scatter)
        return cls(
            covariance_type, shift, nk, sums, cov.finish_scatter(scatter),
            float("nan"), X.shape[0], total,
        )

    def merge(self, other: "SufficientStatistics") -> "SufficientStatistics":
        """The statistics of both sets of rows; both must be around the same shift (see :meth:`rebased`)."""
        if self.shift is not other.shift and not np.array_equal(self.shift, other.shift):
            raise ValueError(
                "cannot merge statistics accumulated around different shifts: re-express one "
                "around the other's shift first (SufficientStatistics.rebased)"
            )
        return SufficientStatistics(
            self.covariance_type,
            self.shift,
            self.nk + other.nk,
            self.sums + other.sums,
            self.scatter + other.scatter,
            self.loglik + other.loglik,
            self.n_samples + other.n_samples,
            self.sum_weights + other.sum_weights,
        )

    def rebased(self, shift) -> "SufficientStatistics":
        """The same statistics re-expressed around ``shift`` (K, D), exactly.

        ``s_b = s_a + n delta`` and ``Q_b = Q_a + s_a delta^T + delta s_a^T +
        n delta delta^T`` with ``delta = a - b`` per component (diag: its
        diagonal, spherical: its trace, tied: summed over components).
        Statistics from different passes must be around one shift before
        they are merged.
        """
        shift = np.asarray(shift, dtype=np.float64)
        if shift.shape != self.shift.shape:
            raise ValueError(f"shift has shape {shift.shape}, expected {self.shift.shape}")
        if shift is self.shift or np.array_equal(shift, self.shift):
            return self
        delta = self.shift - shift
        cov = _covariance.get(self.covariance_type)
        return dataclasses.replace(
            self,
            shift=shift,
            sums=self.sums + self.nk[:, None] * delta,
            scatter=cov.rebase_scatter(self.scatter, self.nk, self.sums, delta),
        )

    def scaled(self, factor: float) -> "SufficientStatistics":
        """The statistics with every row's weight multiplied by ``factor`` (``n_samples`` unchanged)."""
        f = float(factor)
        return dataclasses.replace(
            self, nk=self.nk * f, sums=self.sums * f, scatter=self.scatter * f,
            loglik=self.loglik * f, sum_weights=self.sum_weights * f,
        )

    def to_arrays(self) -> tuple[dict, dict]:
        """``(arrays, scalars)``: float64 arrays and JSON-serialisable scalars, lossless.

        ``arrays`` maps 'shift', 'nk', 'sums', 'scatter' to ndarrays;
        ``scalars`` holds 'covariance_type', 'loglik', 'n_samples' and
        'sum_weights' (non-finite floats as 'nan', 'inf', '-inf').
        :meth:`from_arrays` of them is these statistics bit for bit.
        """
        arrays = {name: np.ascontiguousarray(getattr(self, name), dtype=np.float64) for name in _STAT_ARRAYS}
        scalars = {
            "covariance_type": self.covariance_type,
            "loglik": _json_float(self.loglik),
            "n_samples": int(self.n_samples),
            "sum_weights": _json_float(self.sum_weights),
        }
        return arrays, scalars

    @classmethod
    def from_arrays(cls, arrays: dict, scalars: dict) -> "SufficientStatistics":
        """Statistics from :meth:`to_arrays`' output, checked.

        Raises
        ------
        ValueError
            An unknown covariance type, a missing entry, or arrays whose
            shapes do not fit each other; the message says which.
        """
        try:
            ctype = _covariance.check_name(scalars["covariance_type"])
            values = {name: np.asarray(arrays[name], dtype=np.float64) for name in _STAT_ARRAYS}
            loglik, total = float(scalars["loglik"]), float(scalars["sum_weights"])
            n = scalars["n_samples"]
        except KeyError as exc:
            raise ValueError(f"sufficient statistics lack {exc.args[0]!r}") from None
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n_samples must be a non-negative integer, got {n!r}")
        shift = values["shift"]
        if shift.ndim != 2:
            raise ValueError(f"shift must have shape (n_components, n_features), got {shift.shape}")
        K, D = shift.shape
        expected = {"nk": (K,), "sums": (K, D), "scatter": _covariance.get(ctype).scatter_shape(K, D)}
        for name, shape in expected.items():
            if values[name].shape != shape:
                raise ValueError(
                    f"{name} has shape {values[name].shape}, expected {shape} for "
                    f"covariance_type={ctype!r} and a shift of shape {shift.shape}"
                )
        return cls(ctype, shift, values["nk"], values["sums"], values["scatter"], loglik, int(n), total)


#: the engine's short name for it
SuffStats = SufficientStatistics


def _non_finite_rows(X, start, missing=False):
    """(usable row mask, NaN rows, inf rows, first bad global indices, empty rows, incomplete rows) of a chunk.

    Without ``missing`` a usable row is finite; NaN rows hold a NaN and inf
    rows an infinity but no NaN (empty and incomplete rows: 0).  With
    ``missing`` (marginalised) NaN entries are usable: the bad rows are
    those with an infinity (inf rows) or with every feature NaN (empty
    rows), NaN rows are 0, and incomplete rows are the usable ones with a
    NaN.
    """
    finite = np.isfinite(X).all(axis=1)
    if finite.all():
        return finite, 0, 0, (), 0, 0
    if missing:
        inf_rows, empty_rows = missing_value_rows(X)
        usable = ~(inf_rows | empty_rows)
        bad = tuple(int(start + i) for i in np.flatnonzero(~usable)[:MAX_BAD_ROWS_REPORTED])
        return usable, 0, int(inf_rows.sum()), bad, int(empty_rows.sum()), int((usable & ~finite).sum())
    nan_rows = np.isnan(X).any(axis=1)
    n_nan = int(nan_rows.sum())
    n_inf = int((~finite & ~nan_rows).sum())
    bad = tuple(int(start + i) for i in np.flatnonzero(~finite)[:MAX_BAD_ROWS_REPORTED])
    return finite, n_nan, n_inf, bad, 0, 0


def _observed_moments(good, w):
    """Per feature over observed (not NaN) entries: (weight, mean, squared deviations), each (D,)."""
    obs = ~np.isnan(good)
    x = np.where(obs, good, 0.0).astype(np.float64)
    wo = obs * (1.0 if w is None else w[:, None])
    fw = wo.sum(axis=0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(fw > 0, (wo * x).sum(axis=0) / fw, 0.0)
    m2 = (wo * (x - mean) ** 2).sum(axis=0)
    return fw, mean, m2


def _merge_weights(a, b):
    return None if a is None else a.merge(b)


@dataclass(frozen=True, eq=False)
class DataSummary:
    """Row count, per-feature (weighted) mean and scatter, the non-finite rows and the weights' checks.

    Means and squared deviations merge with Chan et al.'s parallel update
    (weighted: the weight totals in place of the counts), so data far from
    the origin keeps its variance.

    Attributes
    ----------
    n_samples : int
        Rows seen, finite or not.
    n_finite : int
    mean : ndarray of shape (D,)
        Over finite rows, weighted by the row weights.
    m2 : ndarray of shape (D,)
        Weighted sum of squared deviations from ``mean`` over finite rows.
    n_nan_rows, n_inf_rows : int
        Rows with at least one NaN, and rows with an infinity but no NaN.
    bad_rows : tuple of int
        The first global row indices that are not finite.
    weight : int or float
        Total weight of the finite rows: ``n_finite`` (an int) without
        weights.  Invalid weights (NaN, inf, negative) count as 0 here;
        ``weights`` records them.
    weights : WeightSummary or None
        The checks of the row weights; None without weights.
    n_empty_rows, n_incomplete_rows : int
        With ``missing`` (``missing='marginalize'``; else 0): rows with every
        feature NaN (bad), and usable rows with some NaN (marginalised).
        NaN rows are then 0, inf rows those with an infinity, and "finite"
        reads "usable" above.
    feature_weight : ndarray of shape (D,) or None
        With ``missing``: the weight of the observed entries of each
        feature, over which ``mean`` and ``m2`` are taken; None without.

    ``from_chunk(..., missing=True)`` summarises rows whose NaN entries
    are to be marginalised (``missing`` above).
    """

    n_samples: int
    n_finite: int
    mean: np.ndarray
    m2: np.ndarray
    n_nan_rows: int
    n_inf_rows: int
    bad_rows: tuple
    weight: float
    weights: WeightSummary | None
    n_empty_rows: int = 0
    n_incomplete_rows: int = 0
    feature_weight: np.ndarray | None = None

    @classmethod
    def from_chunk(cls, X, start, weights=None, missing=False):
        X = np.asarray(X)
        finite, n_nan, n_inf, bad, n_empty, n_incomplete = _non_finite_rows(X, start, missing)
        good = X if finite.all() else X[finite]
        m = good.shape[0]
        fw = None
        if weights is None:
            total, checks = m, None
            if missing:
                fw, mean, m2 = _observed_moments(good, None)
            elif m:
                mean = good.mean(axis=0, dtype=np.float64)
                m2 = ((good - mean) ** 2).sum(axis=0, dtype=np.float64)
        else:
            checks = WeightSummary.of(weights)
            w = np.asarray(weights, dtype=np.float64)[finite]
            # rows of weight 0 are removed rows (however far away); the
            # checks refuse NaN, infinite and negative weights
            keep = np.isfinite(w) & (w > 0)
            good, w = good[keep], w[keep]
            total = float(w.sum())
            if missing:
                fw, mean, m2 = _observed_moments(good, w)
            elif total > 0:
                mean = (w @ good) / total
                m2 = w @ ((good - mean) ** 2)
        if not total and not missing:
            mean = np.zeros(X.shape[1])
            m2 = np.zeros(X.shape[1])
        return cls(X.shape[0], m, mean, m2, n_nan, n_inf, bad, total, checks, n_empty, n_incomplete, fw)

    def merge(self, other: "DataSummary") -> "DataSummary":
        w = self.weight + other.weight
        if self.feature_weight is not None:
            mean, m2, fw = _merge_observed(self, other)
        elif w == 0:
            mean, m2, fw = self.mean, self.m2, None
        else:
            delta = other.mean - self.mean
            mean = self.mean + delta * (other.weight / w)
            m2 = self.m2 + other.m2 + delta**2 * (self.weight * other.weight / w)
            fw = None
        bad = tuple(sorted(self.bad_rows + other.bad_rows))[:MAX_BAD_ROWS_REPORTED]
        return DataSummary(
            self.n_samples + other.n_samples,
            self.n_finite + other.n_finite,
            mean,
            m2,
            self.n_nan_rows + other.n_nan_rows,
            self.n_inf_rows + other.n_inf_rows,
            bad,
            w,
            _merge_weights(self.weights, other.weights),
            self.n_empty_rows + other.n_empty_rows,
            self.n_incomplete_rows + other.n_incomplete_rows,
            fw,
        )

    @property
    def n_bad_rows(self) -> int:
        return self.n_nan_rows + self.n_inf_rows + self.n_empty_rows

    @property
    def variance(self) -> np.ndarray:
        if self.feature_weight is not None:
            return np.where(self.feature_weight > 0, self.m2 / np.maximum(self.feature_weight, 1e-300), 0.0)
        return self.m2 / (self.weight if self.weight > 0 else max(self.n_finite, 1))


def _merge_observed(a: DataSummary, b: DataSummary):
    """Chan et al.'s parallel update per feature, with each feature's observed weight: (mean, m2, weight)."""
    fw = a.feature_weight + b.feature_weight
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(fw > 0, b.feature_weight / fw, 0.0)
        cross = np.where(fw > 0, a.feature_weight * b.feature_weight / fw, 0.0)
    delta = b.mean - a.mean
    return a.mean + delta * share, a.m2 + b.m2 + delta**2 * cross, fw


@dataclass(frozen=True, eq=False)
class RowChecks:
    """The checks of :class:`DataSummary` without its moments: what a checking pass needs.

    Attributes
    ----------
    n_samples, n_nan_rows, n_inf_rows, bad_rows, weights
        As in :class:`DataSummary`.
    """

    n_samples: int
    n_nan_rows: int
    n_inf_rows: int
    bad_rows: tuple
    weights: WeightSummary | None
    n_empty_rows: int = 0

    @classmethod
    def from_chunk(cls, X, start, weights=None, missing=False):
        _, n_nan, n_inf, bad, n_empty, _ = _non_finite_rows(np.asarray(X), start, missing)
        return cls(X.shape[0], n_nan, n_inf, bad, None if weights is None else WeightSummary.of(weights), n_empty)

    def merge(self, other: "RowChecks") -> "RowChecks":
        bad = tuple(sorted(self.bad_rows + other.bad_rows))[:MAX_BAD_ROWS_REPORTED]
        return RowChecks(
            self.n_samples + other.n_samples, self.n_nan_rows + other.n_nan_rows,
            self.n_inf_rows + other.n_inf_rows, bad, _merge_weights(self.weights, other.weights),
            self.n_empty_rows + other.n_empty_rows,
        )

    @property
    def n_bad_rows(self) -> int:
        return self.n_nan_rows + self.n_inf_rows + self.n_empty_rows


def refuse_bad_rows(checks, data) -> None:
    """Raise for the NaN or inf rows, then the invalid weights, a scan (or a checking pass) found.

    Parameters
    ----------
    checks : DataSummary or RowChecks
        Over all of ``data``.
    data : ChunkedData
        Names the dtypes in the messages; with ``data.missing`` the bad rows
        are those that cannot be marginalised.

    Raises
    ------
    DataValidationError
        X's message names the rows; the weights' is scikit-learn's.
    """
    if checks.n_bad_rows and data.missing:
        raise DataValidationError(
            unusable_rows_message(
                checks.n_inf_rows, checks.n_empty_rows, data.n_samples, list(checks.bad_rows), dtype=data.dtype,
            )
        )
    if checks.n_bad_rows:
        raise DataValidationError(
            non_finite_message(
                checks.n_nan_rows, checks.n_inf_rows, data.n_samples, list(checks.bad_rows), dtype=data.dtype,
            )
        )
    if data.weighted:
        raise_if_invalid(checks.weights, data.weights.dtype)


@dataclass(frozen=True, eq=False)
class CheckedStats:
    """The E-step statistics of a pass and the checks of the rows it read.

    One pass instead of a scan and a pass: the statistics are used only
    once the checks passed.
    """

    stats: SufficientStatistics
    checks: RowChecks

    def merge(self, other: "CheckedStats") -> "CheckedStats":
        return CheckedStats(self.stats.merge(other.stats), self.checks.merge(other.checks))


@dataclass(frozen=True, eq=False)
class LoglikTotal:
    """``sum_n w_n log p(x_n)`` and ``sum_n w_n`` of scored rows (rows of weight 0 left out).

    ``checks`` is None when the rows and weights were checked beforehand.
    """

    loglik: float
    sum_weights: float
    checks: RowChecks | None

    def merge(self, other: "LoglikTotal") -> "LoglikTotal":
        checks = None if self.checks is None else self.checks.merge(other.checks)
        return LoglikTotal(self.loglik + other.loglik, self.sum_weights + other.sum_weights, checks)


# ---------------------------------------------------------------------------
# Chunk functions for ChunkedData.map_reduce: ``fn(block, start, *args)``,
# with ``weights=`` on weighted data.  Top-level so that they pickle by
# reference to distributed workers.


def estep_chunk(block, start, kp, weights=None):
    return SufficientStatistics.from_estep(block, kp, weights)


def summary_chunk(block, start, missing=False, weights=None):
    return DataSummary.from_chunk(block, start, weights, missing)


def checked_estep_chunk(block, start, kp, weights=None):
    """The E-step and the checks of the chunk, for passes over data no scan has seen."""
    checks = RowChecks.from_chunk(block, start, weights, missing=kp.marginal is not None)
    return CheckedStats(SufficientStatistics.from_estep(block, kp, weights), checks)


def loglik_chunk(block, start, kp, check, weights=None):
    """Weighted log-likelihood total of a chunk under ``kp`` (one fused scoring kernel call)."""
    checks = RowChecks.from_chunk(block, start, weights, missing=kp.marginal is not None) if check else None
    ll = np.empty(block.shape[0])
    _missing.kernels(kp).score_samples(block, kp, ll)
    if weights is None:
        return LoglikTotal(float(ll.sum()), float(block.shape[0]), checks)
    w = np.asarray(weights, dtype=np.float64)
    # a row of weight 0 is a removed row, even where its log-likelihood is -inf
    with np.errstate(invalid="ignore"):
        total = float(np.where(w != 0, ll * w, 0.0).sum())
    return LoglikTotal(total, float(w.sum()), checks)
