"""Initialisation of the mixture parameters on chunked data.

All methods follow scikit-learn's ``BaseMixture._initialize_parameters``:
they produce responsibilities (here: their sufficient statistics) from
which one M-step with weights ``nk / n_samples`` gives the starting
parameters; user ``weights_init``, ``means_init`` and ``precisions_init``
replace what they specify.

Randomness that touches rows comes from :func:`_rng.row_uniforms`, a
function of the global row index, so a given ``random_state`` gives the
same initialisation whatever the chunking and whatever order the
scheduler runs chunks in.

* ``random``: uniform responsibilities per row, normalised.
* ``random_from_data``: K distinct rows drawn with
  ``RandomState.choice(n_samples, K, replace=False)``, the same draw as
  scikit-learn's.
* ``k-means++``: greedy k-means++ (``2 + log K`` trials per centre) out of
  core, one pass per centre: each pass scores the previous round's trial
  centres and, for every trial, already samples the next round's trials
  by exponential races (``-log(u) / d^2``: the smallest key is a draw
  proportional to ``d^2``).
* ``kmeans``: k-means|| (Bahmani et al. 2012) with a fixed ``2 K`` draws
  per round (weighted sampling without replacement by exponential keys),
  candidates weighted by the rows nearest to them and reclustered in
  memory with weighted k-means++ and Lloyd, then Lloyd passes on the
  chunks until the centres move less than scikit-learn's KMeans ``tol``.

With row weights (``sample_weight``) every method weighs rows as repeated
rows: sampling probabilities (k-means|| and k-means++ draws, the first
centre, 'random_from_data') are proportional to the weight (times the
squared distance where there is one), so a row of weight 0 is never
chosen; candidate weights, Lloyd means and random responsibilities are
weighted.  The rows drawn uniformly (``RandomState.randint`` or
``choice``) without weights are drawn by exponential races on the weights
instead, one pass each: unweighted draws are exactly today's.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from . import _covariance
from . import _kernels as kern
from ._chunked import ChunkedData
from ._params import _NK_EPS, GMMParams, m_step
from ._rng import row_uniforms
from ._stats import DataSummary, SuffStats

logger = logging.getLogger(__name__)

#: k-means|| sampling rounds and draws per round (times n_components)
KMEANS_PARALLEL_ROUNDS = 5
KMEANS_PARALLEL_OVERSAMPLING = 2
#: Lloyd passes over the data at most, and scikit-learn KMeans' relative tol
KMEANS_MAX_ITER = 300
KMEANS_TOL = 1e-4


# ---------------------------------------------------------------------------
# values returned by chunk functions


@dataclass(frozen=True, eq=False)
class _TopKeys:
    """The (at most ``m``) rows with the smallest finite keys, and the total squared distance.

    ``m`` travels with the value: a chunk may hold fewer than ``m`` rows with
    a finite key (small chunks, duplicated rows), and the merge must still
    keep ``m`` of the union, whatever the chunking.
    """

    keys: np.ndarray  # (<= m,)
    idx: np.ndarray  # (<= m,)
    rows: np.ndarray  # (<= m, D)
    cost: float
    m: int

    def merge(self, other):
        keys = np.concatenate([self.keys, other.keys])
        idx = np.concatenate([self.idx, other.idx])
        rows = np.concatenate([self.rows, other.rows])
        order = np.lexsort((idx, keys))[: self.m]
        return _TopKeys(keys[order], idx[order], rows[order], self.cost + other.cost, self.m)


@dataclass(frozen=True, eq=False)
class _Races:
    """Per hypothesis h: potential, and the winner of each of L races."""

    potentials: np.ndarray  # (H,)
    keys: np.ndarray  # (H, L)
    idx: np.ndarray  # (H, L)
    rows: np.ndarray  # (H, L, D)

    def merge(self, other):
        take = (other.keys < self.keys) | ((other.keys == self.keys) & (other.idx < self.idx))
        return _Races(
            self.potentials + other.potentials,
            np.where(take, other.keys, self.keys),
            np.where(take, other.idx, self.idx),
            np.where(take[..., None], other.rows, self.rows),
        )


@dataclass(frozen=True, eq=False)
class _Counts:
    counts: np.ndarray

    def merge(self, other):
        return _Counts(self.counts + other.counts)


# ---------------------------------------------------------------------------
# chunk functions (top level: they travel to workers by reference)


def _min_sqdist(block, centers):
    dist = np.full(block.shape[0], np.inf)
    kern.min_sqdist_update(block, np.ascontiguousarray(centers, dtype=np.float64), dist)
    return dist


def _weighted(d2, weights):
    """Squared distances times row weights; a row of weight 0 adds nothing, however far (0 * inf)."""
    with np.errstate(invalid="ignore"):
        return np.where(weights > 0, d2 * weights, 0.0)


def _exp_keys(u, weights):
    with np.errstate(divide="ignore"):
        return np.where(weights > 0, -np.log1p(-u) / weights, np.inf)


def _top_keys(block, start, keys, cost, m):
    take = np.argsort(keys, kind="stable")[:m]
    take = take[np.isfinite(keys[take])]
    return _TopKeys(keys[take], start + take, np.asarray(block[take], dtype=np.float64), cost, m)


def _topkeys_chunk(block, start, centers, key, stream, m, weights=None):
    d2 = _min_sqdist(block, centers)
    if weights is not None:
        d2 = _weighted(d2, weights)
    u = row_uniforms(key, stream, start, start + block.shape[0], 1)[:, 0]
    return _top_keys(block, start, _exp_keys(u, d2), float(d2.sum()), m)


def _weighted_draw_chunk(block, start, key, m, weights):
    """The ``m`` rows with the smallest exponential keys on the weights: a weighted draw without replacement."""
    u = row_uniforms(key, 0, start, start + block.shape[0], 1)[:, 0]
    return _top_keys(block, start, _exp_keys(u, weights), float(np.sum(weights)), m)


def _races_chunk(block, start, centers, trials, key, stream, n_races, weights=None):
    if block.shape[0] == 0:
        # a zero-row chunk (left by filtering) wins no race: the neutral value
        H = 1 if trials is None else trials.shape[0]
        return _Races(
            np.zeros(H),
            np.full((H, n_races), np.inf),
            np.full((H, n_races), -1, dtype=np.intp),
            np.zeros((H, n_races, block.shape[1])),
        )
    d2 = _min_sqdist(block, centers)
    if trials is None:
        hyp = d2[:, None]
    else:
        each = np.empty((block.shape[0], trials.shape[0]))
        kern.sqdist_each(block, np.ascontiguousarray(trials), each)
        hyp = np.minimum(d2[:, None], each)
    if weights is not None:
        hyp = _weighted(hyp, weights[:, None])
    n, H = hyp.shape
    u = row_uniforms(key, stream, start, start + n, H * n_races).reshape(n, H, n_races)
    keys = _exp_keys(u, hyp[:, :, None])
    win = np.argmin(keys, axis=0)  # (H, L)
    best = np.take_along_axis(keys, win[None], axis=0)[0]
    return _Races(
        hyp.sum(axis=0),
        best,
        np.where(np.isfinite(best), start + win, -1),
        np.asarray(block[win], dtype=np.float64),
    )


def _count_nearest_chunk(block, start, centers, weights=None):
    labels = np.empty(block.shape[0], dtype=np.int64)
    dist = np.empty(block.shape[0])
    kern.nearest(block, centers, labels, dist)
    if weights is not None:
        return _Counts(np.bincount(labels, weights=weights, minlength=centers.shape[0]))
    return _Counts(np.bincount(labels, minlength=centers.shape[0]).astype(np.float64))


def _lloyd_chunk(block, start, centers, covariance_type, weights=None):
    labels = np.empty(block.shape[0], dtype=np.int64)
    dist = np.empty(block.shape[0])
    kern.nearest(block, centers, labels, dist)
    resp = np.zeros((block.shape[0], centers.shape[0]))
    resp[np.arange(block.shape[0]), labels] = 1.0
    return SuffStats.from_resp(block, resp, centers, covariance_type, weights)


def _scatter_chunk(block, start, shift, weights=None):
    """Sum and scatter of all rows around ``shift`` (1, D): one component owning every row."""
    resp = np.ones((block.shape[0], 1))
    return SuffStats.from_resp(block, resp, shift, _covariance.FULL, weights)


def _random_resp_chunk(block, start, shift, key, covariance_type, weights=None):
    K = shift.shape[0]
    resp = row_uniforms(key, 0, start, start + block.shape[0], K)
    resp /= resp.sum(axis=1, keepdims=True)
    return SuffStats.from_resp(block, resp, shift, covariance_type, weights)


# ---------------------------------------------------------------------------
# in-memory weighted k-means for the k-means|| candidates


def _weighted_kmeanspp(points, weights, K, rs):
    m = points.shape[0]
    n_trials = 2 + int(np.log(K))
    p = weights / weights.sum()
    first = rs.choice(m, p=p)
    centers = [points[first]]
    d2 = ((points - points[first]) ** 2).sum(axis=1)
    for _ in range(1, K):
        pot = (weights * d2).sum()
        if pot <= 0:
            centers.append(points[rs.randint(m)])
            continue
        cum = np.cumsum(weights * d2)
        cand = np.searchsorted(cum, rs.uniform(size=n_trials) * pot)
        cand = np.clip(cand, None, m - 1)
        dc = ((points[None, :, :] - points[cand][:, None, :]) ** 2).sum(axis=2)
        dc = np.minimum(d2[None], dc)
        best = int(np.argmin((dc * weights).sum(axis=1)))
        centers.append(points[cand[best]])
        d2 = dc[best]
    return np.array(centers)


def _weighted_lloyd(points, weights, centers, tol, max_iter=300):
    for _ in range(max_iter):
        labels = np.empty(points.shape[0], dtype=np.int64)
        dist = np.empty(points.shape[0])
        kern.nearest(points, centers, labels, dist)
        new = centers.copy()
        for k in range(centers.shape[0]):
            mask = labels == k
            if weights[mask].sum() > 0:
                new[k] = np.average(points[mask], axis=0, weights=weights[mask])
        moved = ((new - centers) ** 2).sum()
        centers = new
        if moved <= tol:
            break
    return centers


# ---------------------------------------------------------------------------
# the methods


def draw_rows(data: ChunkedData, rs, size=None, replace=True):
    """Rows drawn at random: uniformly without weights, in proportion to the row weights with them.

    Without weights the draw is ``rs.randint(n)`` (``size=None``),
    ``rs.randint(n, size=size)`` or ``rs.choice(n, size, replace=False)``,
    then ``data.take``: the same calls, the same rows, as before weights
    existed.  With weights one pass draws ``size`` distinct rows by
    exponential keys on the weights (a row of weight 0 never wins); when
    fewer rows have a positive weight and ``replace`` allows, they repeat.

    Returns
    -------
    indices : ndarray of shape (size,) (1 when ``size`` is None)
    rows : ndarray of shape (len(indices), D), float64
    """
    if not data.weighted:
        if not replace:
            indices = rs.choice(data.n_samples, size=size, replace=False)
        elif size is None:
            indices = [int(rs.randint(data.n_samples))]
        else:
            indices = rs.randint(data.n_samples, size=size)
        return np.asarray(indices), data.take(indices)
    key = int(rs.randint(0, 2**63 - 1, dtype=np.int64))
    m = 1 if size is None else int(size)
    top = data.map_reduce(_weighted_draw_chunk, key, m)
    indices, rows = top.idx, top.rows
    if replace and 0 < len(indices) < m:
        pick = np.resize(np.arange(len(indices)), m)
        indices, rows = indices[pick], rows[pick]
    return indices, rows


def _one_hot_stats(rows, covariance_type):
    """Statistics of responsibilities equal to 1 on one row per component.

    With weights too: a chosen row of weight w is one of w repeated rows,
    of which only the chosen one has a responsibility.
    """
    empty = SuffStats.zeros(covariance_type, rows, loglik=float("nan"))
    K = rows.shape[0]
    return dataclasses.replace(empty, nk=np.ones(K), n_samples=K, sum_weights=float(K))


def tied_one_hot_covariance(data: ChunkedData, summary: DataSummary, rows, reg_covar):
    """scikit-learn's tied covariance from responsibilities 1 at one row per component.

    scikit-learn's ``_estimate_gaussian_covariances_tied`` computes
    ``(X^T X - sum_k nk_k m_k m_k^T) / sum(nk) + reg_covar I`` with the raw
    second moment ``X^T X`` of *all* rows, not only of those with a
    responsibility; with one-hot responsibilities at the chosen rows ``x_k``
    (``nk_k = 1 + 10 eps``, ``m_k = x_k / nk_k``) that is the second moment
    about the origin of the other rows, divided by K.  This is that value,
    from one pass accumulating the (weighted) scatter ``S`` and sum ``s`` of all rows
    around the data mean ``c`` in float64: with ``e_k = x_k - c`` and
    ``X^T X = S + c s^T + s c^T + N c c^T``, the difference is assembled
    from moderate terms and one exact rank-one term, so data far from the
    origin loses nothing to cancellation (the result itself is then
    dominated by ``(N - K) c c^T``, as scikit-learn's is).

    Parameters
    ----------
    data : ChunkedData
    summary : DataSummary
        Gives the shift (the data mean).
    rows : ndarray of shape (K, D)
        The chosen rows, one per component.
    reg_covar : float

    Returns
    -------
    ndarray of shape (D, D)
    """
    rows = np.asarray(rows, dtype=np.float64)
    K, D = rows.shape
    c = np.asarray(summary.mean, dtype=np.float64).reshape(1, D)
    stats = data.map_reduce(_scatter_chunk, c)
    c = c[0]
    S, s = stats.scatter[0], stats.sums[0]
    nk = np.ones(K) + _NK_EPS
    e = rows - c
    inv = 1.0 / nk
    t = s - (e * inv[:, None]).sum(axis=0)  # s - sum_k e_k / nk_k
    diff = (
        S - np.einsum("k,ki,kj->ij", inv, e, e)
        + np.outer(c, t) + np.outer(t, c)
        + (float(stats.sum_weights) - inv.sum()) * np.outer(c, c)
    )
    cov = diff / nk.sum()
    cov = 0.5 * (cov + cov.T)
    cov[np.arange(D), np.arange(D)] += reg_covar
    return cov


def kmeans_plusplus_rows(data: ChunkedData, K: int, rs: np.random.RandomState):
    """Greedy k-means++ centres drawn from the rows, one pass per centre.

    Returns
    -------
    rows : ndarray of shape (K, D)
    indices : ndarray of shape (K,)
    """
    key = int(rs.randint(0, 2**63 - 1, dtype=np.int64))
    n_races = 2 + int(np.log(K))
    first, first_row = draw_rows(data, rs)
    rows = [first_row[0]]
    indices = [int(first[0])]
    trials, trial_idx = None, None
    stream = 0
    while len(rows) < K:
        res = data.map_reduce(
            _races_chunk, np.array(rows), trials, key, stream, n_races
        )
        stream += 1
        h = 0
        if trials is not None:
            h = int(np.argmin(res.potentials))
            if trial_idx[h] >= 0:
                rows.append(trials[h])
                indices.append(int(trial_idx[h]))
            else:  # fewer distinct rows than components
                i, row = draw_rows(data, rs)
                rows.append(row[0])
                indices.append(int(i[0]))
            if len(rows) == K:
                break
        valid = res.idx[h] >= 0
        if not valid.any():
            trials = draw_rows(data, rs, n_races)[1]
            trial_idx = np.full(n_races, -1)
        else:
            # races that found no row (all remaining distances 0) repeat a winner
            pick = np.where(valid, np.arange(n_races), np.flatnonzero(valid)[0])
            trials, trial_idx = res.rows[h][pick], res.idx[h][pick]
    return np.array(rows), np.array(indices)


def kmeans_parallel_centers(data: ChunkedData, summary: DataSummary, K: int, rs):
    """k-means|| candidates reclustered to K centres (not yet refined by Lloyd)."""
    key = int(rs.randint(0, 2**63 - 1, dtype=np.int64))
    candidates = draw_rows(data, rs)[1]
    m = KMEANS_PARALLEL_OVERSAMPLING * K
    for r in range(KMEANS_PARALLEL_ROUNDS):
        top = data.map_reduce(_topkeys_chunk, candidates, key, r, m)
        if top.cost <= 0 or len(top.idx) == 0:
            break
        candidates = np.vstack([candidates, top.rows])
    counts = data.map_reduce(_count_nearest_chunk, candidates).counts
    tol = KMEANS_TOL * float(np.mean(summary.variance))
    if candidates.shape[0] <= K:
        extra = draw_rows(data, rs, K - candidates.shape[0])[1]
        return np.vstack([candidates, extra])
    centers = _weighted_kmeanspp(candidates, counts, K, rs)
    return _weighted_lloyd(candidates, counts, centers, tol)


def kmeans_stats(data, summary, K, covariance_type, rs):
    """Hard k-means labels as sufficient statistics (scikit-learn's 'kmeans')."""
    centers = kmeans_parallel_centers(data, summary, K, rs)
    tol = KMEANS_TOL * float(np.mean(summary.variance))
    for it in range(1, KMEANS_MAX_ITER + 1):
        stats = data.map_reduce(_lloyd_chunk, centers, covariance_type)
        empty = stats.nk == 0
        new = np.where(empty[:, None], centers, centers + stats.sums / np.maximum(stats.nk, 1e-300)[:, None])
        moved = float(((new - centers) ** 2).sum())
        logger.debug("k-means pass %d: centre shift %.3g (tol %.3g)", it, moved, tol)
        if moved <= tol:
            break
        centers = new
    return stats


def initial_statistics(data: ChunkedData, summary: DataSummary, *, n_components: int, covariance_type: str,
                       init_params: str, rs: np.random.RandomState):
    """The statistics of scikit-learn's initial responsibilities for ``init_params``.

    Returns
    -------
    stats : SufficientStatistics
    chosen : ndarray of shape (K, D) or None
        The rows with a responsibility of 1 ('random_from_data',
        'k-means++'), whose tied covariance reads every row
        (:func:`tied_one_hot_covariance`); None for the other methods.
    """
    K, D = n_components, data.n_features
    chosen = None
    if init_params == "kmeans":
        stats = kmeans_stats(data, summary, K, covariance_type, rs)
    elif init_params == "random":
        key = int(rs.randint(0, 2**63 - 1, dtype=np.int64))
        shift = np.broadcast_to(summary.mean, (K, D)).copy()
        stats = data.map_reduce(_random_resp_chunk, shift, key, covariance_type)
    elif init_params == "random_from_data":
        chosen = draw_rows(data, rs, K, replace=False)[1]
        stats = _one_hot_stats(chosen, covariance_type)
    elif init_params == "k-means++":
        chosen, _ = kmeans_plusplus_rows(data, K, rs)
        stats = _one_hot_stats(chosen, covariance_type)
    else:  # pragma: no cover - validated by the estimator
        raise ValueError(f"unknown init_params {init_params!r}")
    return stats, chosen


def initial_params(
    data: ChunkedData,
    summary: DataSummary,
    *,
    n_components: int,
    covariance_type: str,
    init_params: str,
    reg_covar: float,
    rs: np.random.RandomState,
    weights_init=None,
    means_init=None,
    precisions_init=None,
) -> GMMParams:
    """Starting parameters, as scikit-learn's ``GaussianMixture._initialize``.

    ``weights_init``, ``means_init`` and ``precisions_init`` must already be
    validated arrays (or None).
    """
    cov = _covariance.get(covariance_type)
    K = n_components
    if weights_init is not None and means_init is not None and precisions_init is not None:
        return GMMParams.from_precisions_cholesky(
            covariance_type,
            weights_init,
            means_init,
            cov.precision_cholesky_from_precisions(precisions_init),
        )
    stats, chosen = initial_statistics(
        data, summary, n_components=K, covariance_type=covariance_type, init_params=init_params, rs=rs,
    )
    # scikit-learn's weights nk / n_samples: with row weights, their sum
    params = m_step(stats, reg_covar, n_samples=summary.weight)
    one_hot = chosen is not None
    if one_hot and cov.one_hot_start_reads_all_rows and precisions_init is None:
        # scikit-learn's tied start from one row per component reads every row
        # (for the other types only the chosen rows count; for 'kmeans' and
        # 'random' every row has responsibilities summing to 1, so the
        # statistics above already are scikit-learn's)
        covariances = tied_one_hot_covariance(data, summary, chosen, reg_covar)
        params = GMMParams(
            covariance_type, params.weights, params.means, covariances, cov.precision_cholesky(covariances)
        )
    weights = params.weights if weights_init is None else np.asarray(weights_init, dtype=np.float64)
    means = params.means if means_init is None else np.asarray(means_init, dtype=np.float64)
    if precisions_init is None:
        return GMMParams(covariance_type, weights, means, params.covariances, params.precisions_cholesky)
    return GMMParams.from_precisions_cholesky(
        covariance_type, weights, means, cov.precision_cholesky_from_precisions(precisions_init)
    )
