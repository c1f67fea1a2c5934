"""Model selection over a grid of component counts and covariance types.

1. :func:`prepare_selection_data` draws a uniform random sample of rows
   (or all rows) and splits it into a training part and a held-out part,
   written as Zarr arrays so grid tasks share them by path.
2. Trimming (on by default when a contamination is given): anomalies in
   the training data would otherwise earn a broad "background" component
   of their own, and BIC would prefer one more component than the data's
   structure has.  The most flexible candidate (largest K, ``full``) is
   fitted once; the ``contamination`` fraction of rows it finds least
   likely (its calibrated threshold) is removed from both parts, and every
   candidate is then compared on the same trimmed rows.
3. :func:`search` fits every candidate of the grid jointly
   (``gmm_engine.JointFit``: each pass over the training rows serves all
   live candidates), drops candidates that cannot win, and extends the K
   range of the leading covariance type while the criterion still
   improves at its edge, up to ``max_n_components`` (a warning when that
   cap stops it).  :func:`evaluate_candidate` fits and scores one
   candidate alone (the reference: a jointly fitted candidate ends where
   it ends alone).
4. :func:`choose` picks the lowest BIC or AIC, or the highest held-out
   log-likelihood; :func:`selection_summary` is a run's ``summary.json``.

A selection sample small enough (``local_max_bytes``) is read into memory
and fitted on local threads: a pass over it costs less than scheduling a
Dask graph; larger ones are fitted out of core on the current client.

Dropping early (:class:`SearchSettings`): every ``judge_every`` passes,
each candidate with at least ``min_iter`` EM iterations gets a criterion
from its latest lower bound.  EM never lowers the log-likelihood, so the
leader's value bounds its final criterion from above; a candidate is
dropped when, even gaining its best per-iteration gain of the last
``window`` iterations on every iteration it has left (``max_iter``), it
would still end above that bound.  Candidates still initialising, and
with ``n_init > 1`` (a later start may do better), are never dropped.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gmm_engine import (
    ComponentCollapseError,
    ConvergenceWarning,
    GaussianMixture,
    InformationCriteria,
    JointFit,
    joint_criteria,
)

from .data import fit_input, open_data
from .threshold import calibrate_threshold

logger = logging.getLogger(__name__)

#: samples up to this many bytes are gathered on the client to be written out
_IN_MEMORY_SAMPLE_BYTES = 1 << 30


@dataclass(frozen=True)
class SelectionData:
    train: str
    holdout: str
    n_train: int
    n_holdout: int
    n_trimmed_train: int
    n_trimmed_holdout: int
    trim_threshold: float | None
    feature_names: list | None

    def to_dict(self) -> dict:
        return asdict(self)


def _write_array(path: Path, X, names):
    """Write a numpy or dask (n, D) array to a new Zarr array at ``path``."""
    import zarr

    n, D = X.shape
    rows = max(1, min(n, (64 << 20) // max(1, D * X.dtype.itemsize)))
    z = zarr.create_array(str(path), shape=(n, D), chunks=(rows, D), dtype=X.dtype, overwrite=True)
    if hasattr(X, "dask"):
        import dask.array as da

        da.store(X.rechunk((rows, D)), z, lock=False)
    else:
        z[:] = X
    if names:
        z.attrs["feature_names"] = list(names)
    return str(path)


def _subset(X, mask, names, path):
    """Rows of X where mask holds, written to ``path``; returns the path and row count."""
    import dask

    est_bytes = float(mask.sum().compute()) * X.shape[1] * X.dtype.itemsize if hasattr(mask, "dask") else 0
    sub = X[mask]
    if est_bytes <= _IN_MEMORY_SAMPLE_BYTES:
        (values,) = dask.compute(sub) if hasattr(sub, "dask") else (sub,)
        return _write_array(path, np.asarray(values), names), len(values)
    sub = sub.compute_chunk_sizes()
    return _write_array(path, sub, names), int(sub.shape[0])


def prepare_selection_data(data: str, out_dir, *, holdout_fraction: float = 0.1,
                           sample_rows: int | None = None, contamination: float | None = None,
                           trim: bool = True, probe_params: dict | None = None,
                           seed: int = 0, local_max_bytes: int = 0) -> SelectionData:
    """Sample, split and (optionally) trim the data the grid is compared on.

    Parameters
    ----------
    data : str
        Zarr array path or URL.
    out_dir : path
        Receives ``train.zarr`` and ``holdout.zarr``.
    holdout_fraction : float
    sample_rows : int, optional
        Training rows to draw (uniformly, without replacement); default all.
    contamination : float, optional
        Fraction of rows to trim as anomalies; None or ``trim=False`` keeps all.
    probe_params : dict
        ``GaussianMixture`` parameters of the trimming model (largest K, 'full').
    seed : int
    local_max_bytes : int
        A training part up to this size is read into memory for the
        trimming model's fit (local threads; see :func:`search`).

    Returns
    -------
    SelectionData
    """
    import dask.array as da

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    X, names = open_data(data)
    n = int(X.shape[0])
    total = n if sample_rows is None else min(n, int(math.ceil(sample_rows / (1 - holdout_fraction))))
    p = total / n
    u = da.random.default_rng(seed).random(n, chunks=X.chunks[0])
    cut = p * (1 - holdout_fraction)
    train_path, n_train = _subset(X, u < cut, names, out_dir / "train.zarr")
    hold_path, n_hold = _subset(X, (u >= cut) & (u < p), names, out_dir / "holdout.zarr")
    if n_train < 2 or n_hold < 1:
        raise ValueError(
            f"The selection sample has {n_train} training and {n_hold} held-out rows; "
            "increase sample_rows or holdout_fraction."
        )
    logger.info("selection sample: %d training rows, %d held-out rows", n_train, n_hold)
    trimmed_train = trimmed_hold = 0
    thr_value = None
    if trim and contamination:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe = GaussianMixture(**(probe_params or {})).fit(fit_input(train_path, local_max_bytes))
        thr = calibrate_threshold(probe, train_path, contamination, random_state=seed)
        thr_value = thr.threshold
        Xt, _ = open_data(train_path)
        Xh, _ = open_data(hold_path)
        # score by path so the feature names are checked too
        keep_t = probe.score_samples(train_path) > thr_value
        keep_h = probe.score_samples(hold_path) > thr_value
        train_path, kept_t = _subset(Xt, keep_t, names, out_dir / "train-trimmed.zarr")
        hold_path, kept_h = _subset(Xh, keep_h, names, out_dir / "holdout-trimmed.zarr")
        trimmed_train, trimmed_hold = n_train - kept_t, n_hold - kept_h
        n_train, n_hold = kept_t, kept_h
        logger.info(
            "trimmed %d training and %d held-out rows below the probe model's threshold %.6g",
            trimmed_train, trimmed_hold, thr_value,
        )
    return SelectionData(train_path, hold_path, n_train, n_hold, trimmed_train, trimmed_hold,
                         thr_value, names)


def evaluate_candidate(train: str, holdout: str, n_components: int, covariance_type: str,
                       base_params: dict, out_dir) -> dict:
    """Fit one candidate and score it.

    Returns
    -------
    dict
        ``n_components``, ``covariance_type``, ``bic``, ``aic``,
        ``train_loglik`` and ``heldout_loglik`` (means per row),
        ``n_parameters``, ``n_iter``, ``converged``, ``seconds``,
        ``model_dir``, ``status`` ('ok' or 'failed') and ``error``.
    """
    t0 = time.perf_counter()
    row = {"n_components": int(n_components), "covariance_type": covariance_type}
    params = {**base_params, "n_components": int(n_components), "covariance_type": covariance_type}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm = GaussianMixture(**params).fit(train)
    except (ComponentCollapseError, ValueError) as exc:
        logger.warning("candidate K=%d %s failed: %s", n_components, covariance_type, exc)
        return {**row, "status": "failed", "error": str(exc), "bic": math.inf, "aic": math.inf,
                "heldout_loglik": -math.inf, "seconds": time.perf_counter() - t0}
    criteria = gm.information_criteria(train)
    model_dir = Path(out_dir) / f"K{n_components}-{covariance_type}"
    gm.save(model_dir, overwrite=True)
    return {
        **row,
        "status": "ok",
        "error": None,
        "bic": criteria.bic,
        "aic": criteria.aic,
        "train_loglik": criteria.mean_loglik,
        "heldout_loglik": gm.score(holdout),
        "n_parameters": criteria.n_parameters,
        "n_iter": gm.n_iter_,
        "converged": bool(gm.converged_),
        "seconds": time.perf_counter() - t0,
        "model_dir": str(model_dir),
    }


def choose(rows: list[dict], criterion: str = "bic") -> dict:
    """The best successful candidate: lowest BIC/AIC or highest held-out log-likelihood."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        raise ValueError(
            "Every candidate failed to fit (see their errors); widen the grid, increase "
            "reg_covar, or check the data."
        )
    if criterion == "heldout":
        return max(ok, key=lambda r: r["heldout_loglik"])
    if criterion not in ("bic", "aic"):
        raise ValueError(f"criterion must be 'bic', 'aic' or 'heldout', got {criterion!r}")
    return min(ok, key=lambda r: r[criterion])


# ---------------------------------------------------------------------------
# the adaptive search: one joint fit, early drops, an extending K range

#: a candidate row's status (evaluate_candidate's 'ok' included) as summary.json words it
STATUS_TEXT = {"ok": "fitted", "dropped": "dropped early", "failed": "failed"}


@dataclass(frozen=True)
class SearchSettings:
    """How :func:`search` extends the K range and drops candidates (see the module docstring).

    Attributes
    ----------
    criterion : {'bic', 'aic', 'heldout'}
    max_n_components : int
        The K range never extends beyond this cap.
    patience : int
        The K range of the leader's type extends until this many component
        counts above it (and below it, down to 1) have been tried: a single
        worse K next to the best may be a poor local optimum of EM.
    drop_early : bool
        Drop candidates that cannot win (BIC and AIC: with 'heldout',
        judged on rows no fit sees, every candidate is fitted to the end).
    min_iter : int
        EM iterations (passes with SQUAREM) before a candidate is judged.
    judge_every : int
        Joint passes between two judgements (3: one SQUAREM cycle).
    window : int
        The last EM iterations whose largest gain is a candidate's best recent rate.
    """

    criterion: str = "bic"
    max_n_components: int = 16
    patience: int = 2
    drop_early: bool = True
    min_iter: int = 6
    judge_every: int = 3
    window: int = 6


@dataclass(frozen=True)
class SearchResult:
    """What :func:`search` found.

    Attributes
    ----------
    rows : list of dict
        One per candidate, in the order they were added (see :func:`search`).
    winner : dict
        The chosen row.
    k_range : dict
        ``tried`` (K values per covariance type), ``extensions`` (when the
        range grew, for which leader, what was added), ``stopped_by``
        ('criterion', 'cap' or 'failed'), ``message`` and ``warning``
        (None unless the cap or failed fits stopped the range with the
        winner at its edge).
    passes : int
        Joint passes over the training rows (every candidate's
        initialisation and EM); the scoring passes are not counted.
    """

    rows: list
    winner: dict
    k_range: dict
    passes: int


def best_recent_gain(lower_bounds, window: int) -> float:
    """The largest rise of the mean log-likelihood over the last ``window`` iterations (>= 0)."""
    recent = np.diff(np.asarray(lower_bounds[-(window + 1):], dtype=np.float64))
    return max(0.0, float(recent.max())) if recent.size else 0.0


def _criterion_of(criterion: str, mean_loglik: float, n_samples: int, n_parameters: int) -> float:
    ic = InformationCriteria.of(mean_loglik * n_samples, n_samples, n_parameters)
    return ic.bic if criterion == "bic" else ic.aic


class _Search:
    """The state of one search: the joint fit, the K range per type, exact scores of fitted candidates."""

    def __init__(self, jf: JointFit, base_params: dict, settings: SearchSettings, on_pass=None):
        self.jf, self.base, self.s, self.on_pass = jf, dict(base_params), settings, on_pass
        self.tried: dict[str, set] = {}
        self.exact: dict[int, dict] = {}  # candidate index -> its scores at the final parameters
        self.at_drop: dict[int, dict] = {}  # candidate index -> its criteria when dropped
        self.extensions: list[dict] = []
        self.judged = settings.criterion in ("bic", "aic")

    def add(self, n_components: int, covariance_type: str) -> int:
        self.tried.setdefault(covariance_type, set()).add(int(n_components))
        params = {**self.base, "n_components": int(n_components), "covariance_type": covariance_type}
        return self.jf.add(GaussianMixture(**params))

    # -- between passes -------------------------------------------------------

    def estimate(self, c) -> float | None:
        """An upper bound of ``c``'s final criterion (exact once scored), or None while it cannot be judged."""
        if c.index in self.exact:
            return self.exact[c.index][self.s.criterion]
        if c.status == "fitted" or (c.status == "running" and c.n_iter >= self.s.min_iter):
            return _criterion_of(self.s.criterion, c.lower_bound, self.jf.n_samples, c.n_parameters)
        return None

    def between_passes(self, jf: JointFit) -> None:
        """Every ``judge_every`` passes: drop who cannot win, extend the leader's range if it sits at an edge."""
        cands = jf.candidates
        if self.on_pass is not None:
            self.on_pass(jf.passes, sum(c.live for c in cands), len(cands))
        if not self.judged or jf.passes % self.s.judge_every:
            return
        est = {c.index: v for c in cands if (v := self.estimate(c)) is not None}
        if not est:
            return
        leader = min(est, key=est.get)
        if self.s.drop_early:
            self._drop_hopeless(cands, est, leader)
        self.extend(cands[leader], "the leader, from its current lower bound")

    def _drop_hopeless(self, cands, est, leader) -> None:
        N, crit = self.jf.n_samples, self.s.criterion
        best, lead = est[leader], cands[leader]
        for c in cands:
            if c.status != "running" or c.index not in est or c.index == leader or c.estimator.n_init > 1:
                continue
            gain = best_recent_gain(c.lower_bounds, self.s.window)
            left = max(0, int(c.estimator.max_iter) - c.n_iter)
            reach = est[c.index] - 2.0 * N * gain * left
            if reach <= best:
                continue
            reason = (f"{crit.upper()} {est[c.index]:,.1f} after {c.n_iter} EM iterations; gaining its best recent "
                      f"{gain:.3g} per row on each of its {left} iterations left it would reach {reach:,.1f}, "
                      f"above the leader's {best:,.1f} (K={lead.n_components} {lead.covariance_type})")
            self.at_drop[c.index] = {
                "bic": _criterion_of("bic", c.lower_bound, N, c.n_parameters),
                "aic": _criterion_of("aic", c.lower_bound, N, c.n_parameters),
                "train_loglik": c.lower_bound,
            }
            self.jf.drop(c.index, reason)

    def extend(self, c, why: str) -> list:
        """Add the K values of ``c``'s type within ``patience`` of its K (1 to the cap) not tried yet; returns them."""
        K, ct, p = c.n_components, c.covariance_type, self.s.patience
        tried = self.tried[ct]
        new = [k for k in (*range(K + 1, min(self.s.max_n_components, K + p) + 1), *range(max(1, K - p), K))
               if k not in tried]
        if new:
            self.extensions.append({"at_pass": self.jf.passes, "covariance_type": ct, "leader": K,
                                    "added": new, "why": why})
            logger.info("K range of %s extended by %s around K=%d (%s)", ct, new, K, why)
            for k in new:
                self.add(k, ct)
        return new

    # -- after the joint fit ran dry --------------------------------------------

    def score_fitted(self, train, holdout) -> None:
        """Criteria at the final parameters of the candidates fitted since the last call (one pass each)."""
        todo = [c for c in self.jf.candidates if c.status == "fitted" and c.index not in self.exact]
        if not todo:
            return
        models = [c.estimator for c in todo]
        on_train = joint_criteria(models, train)
        on_holdout = joint_criteria(models, holdout)
        for c, tr, ho in zip(todo, on_train, on_holdout):
            self.exact[c.index] = {"bic": tr.bic, "aic": tr.aic, "train_loglik": tr.mean_loglik,
                                   "heldout_loglik": ho.mean_loglik, "n_parameters": tr.n_parameters}

    def rows(self, out_dir=None) -> list:
        """A row per candidate; with ``out_dir``, every fitted model saved there (``model_dir``)."""
        return [self._row(c, out_dir) for c in self.jf.candidates]

    def _row(self, c, out_dir) -> dict:
        row = {"n_components": c.n_components, "covariance_type": c.covariance_type,
               "n_parameters": c.n_parameters, "n_iter": c.n_iter, "passes": c.n_passes,
               "joined_at_pass": c.joined_at, "converged": c.converged}
        if c.status == "fitted":
            gm = c.estimator
            row = {**row, "status": "ok", "error": None, "reason": None, **self.exact[c.index],
                   "n_iter": int(gm.n_iter_), "converged": bool(gm.converged_), "criteria_at": "final parameters"}
            if out_dir is not None:
                model_dir = Path(out_dir) / f"K{c.n_components}-{c.covariance_type}"
                gm.save(model_dir, overwrite=True)
                row["model_dir"] = str(model_dir)
            return row
        if c.status == "dropped":
            return {**row, "status": "dropped", "error": None, "reason": c.reason, **self.at_drop[c.index],
                    "heldout_loglik": None, "criteria_at": "the lower bound when dropped"}
        return {**row, "status": "failed", "error": str(c.error), "reason": None, "bic": math.inf,
                "aic": math.inf, "heldout_loglik": -math.inf, "criteria_at": None}

    def k_range(self, winner: dict) -> dict:
        """What stopped the range of the winner's type, with a warning when it stopped at the winner."""
        K, ct, crit = winner["n_components"], winner["covariance_type"], self.s.criterion.upper()
        evaluated = {c.n_components for c in self.jf.candidates
                     if c.covariance_type == ct and c.status in ("fitted", "dropped")}
        warning = None
        if K < max(evaluated):
            stopped_by = "criterion"
            message = (f"{crit} is worse beyond K={K} {ct} (tried up to K={max(evaluated)}): "
                       "the best K lies inside the range tried.")
        elif K >= self.s.max_n_components:
            stopped_by = "cap"
            message = warning = (
                f"The K range stopped at the cap grid.max_n_components={self.s.max_n_components}: {crit} still "
                f"improved at K={K} {ct}, the largest K tried, so the best K may lie beyond it; raise "
                "grid.max_n_components to search further.")
        else:
            stopped_by = "failed"
            failed = sorted(k for k in self.tried[ct] if k > K)
            message = warning = (
                f"The K range of {ct} could not extend beyond K={K}, the winner: the fits of K={failed} "
                f"failed (see their errors), so the best K may lie beyond it; raise reg_covar or check the data.")
        return {"tried": {t: sorted(ks) for t, ks in self.tried.items()}, "extensions": self.extensions,
                "max_n_components": self.s.max_n_components, "stopped_by": stopped_by, "message": message,
                "warning": warning}


def search(train: str, holdout: str, n_components, covariance_types, base_params: dict, out_dir,
           settings: SearchSettings = SearchSettings(), *, local_max_bytes: int = 256 << 20,
           on_pass=None) -> SearchResult:
    """Fit the grid jointly, drop who cannot win, extend the K range while the winner sits at its edge.

    Parameters
    ----------
    train, holdout : str
        Zarr paths (:func:`prepare_selection_data`).
    n_components : sequence of int
        The initial K range, for every type.
    covariance_types : sequence of str
    base_params : dict
        ``GaussianMixture`` parameters of every candidate.
    out_dir : path
        Receives ``K<k>-<type>/``, the model of every fitted candidate.
    settings : SearchSettings
    local_max_bytes : int
        Rows up to this size are read into memory and fitted on local
        threads (a pass over them costs less than a Dask graph); larger
        ones are fitted out of core, on the current Dask client if any.
    on_pass : callable, optional
        ``on_pass(passes, live, total)`` after every joint pass: passes so
        far, live candidates, candidates added (a progress bar).

    Returns
    -------
    SearchResult
        Rows have ``n_components``, ``covariance_type``, ``status``
        ('ok', 'dropped' or 'failed'), ``error``, ``reason`` (why it was
        dropped), ``bic``, ``aic``, ``train_loglik`` (mean),
        ``heldout_loglik`` (mean; None when dropped), ``criteria_at``
        (the final parameters, or the lower bound at the drop),
        ``n_parameters``, ``n_iter``, ``converged``, ``passes`` (its own
        passes, initialisation included), ``joined_at_pass`` and, when
        fitted, ``model_dir``.
    """
    for name, value in (("max_n_components", settings.max_n_components), ("patience", settings.patience)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    X_train, X_holdout = fit_input(train, local_max_bytes), fit_input(holdout, local_max_bytes)
    with warnings.catch_warnings(), JointFit(X_train) as jf:
        # a candidate stopped by max_iter is reported with converged=False in its row
        warnings.simplefilter("ignore", ConvergenceWarning)
        state = _Search(jf, base_params, settings, on_pass)
        for ct in covariance_types:
            for k in sorted(set(n_components)):
                state.add(k, ct)
        while True:
            jf.run(state.between_passes)
            state.score_fitted(X_train, X_holdout)
            winner = choose(state.rows(), settings.criterion)
            progress = next(c for c in jf.candidates if c.status == "fitted" and (
                c.n_components, c.covariance_type) == (winner["n_components"], winner["covariance_type"]))
            if not state.extend(progress, "the winner, from its final criteria"):
                break
        if on_pass is not None:
            on_pass(jf.passes, 0, len(jf.candidates))
        rows = state.rows(out_dir)
        winner = choose(rows, settings.criterion)
        k_range = state.k_range(winner)
        if k_range["warning"]:
            logger.warning("%s", k_range["warning"])
        return SearchResult(rows, winner, k_range, jf.passes)


# ---------------------------------------------------------------------------
# what a run reports


def _finite(x):
    return x if not isinstance(x, float) or math.isfinite(x) else None


def _why(row: dict) -> str:
    if row["status"] == "ok":
        return (f"converged after {row['n_iter']} EM iterations" if row["converged"]
                else f"stopped by max_iter after {row['n_iter']} EM iterations")
    return row["reason"] if row["status"] == "dropped" else row["error"]


def candidates_table(rows: list) -> list:
    """summary.json's ``candidates``: criteria, iterations, status (fitted / dropped early / failed) and why."""
    return [{
        "n_components": r["n_components"], "covariance_type": r["covariance_type"],
        "bic": _finite(r.get("bic")), "aic": _finite(r.get("aic")),
        "heldout_loglik": _finite(r.get("heldout_loglik")), "train_loglik": _finite(r.get("train_loglik")),
        "criteria_at": r.get("criteria_at"), "n_parameters": r["n_parameters"], "iterations": r["n_iter"],
        "passes": r["passes"], "joined_at_pass": r["joined_at_pass"], "converged": r["converged"],
        "status": STATUS_TEXT[r["status"]], "why": _why(r),
    } for r in rows]


def selection_notes(found: dict) -> list:
    """Markdown lines for the report: what stopped the K range (a warning first when it stopped at the winner)."""
    k = found["k_range"]
    counts = {s: sum(r["status"] == s for r in found["table"]) for s in STATUS_TEXT}
    lines = [f"> **Warning:** {k['warning']}", ""] if k["warning"] else []
    tried = "; ".join(f"{ct}: K = {', '.join(map(str, ks))}" for ct, ks in k["tried"].items())
    lines += [
        f"K range: {'' if k['warning'] else k['message'] + ' '}Tried {tried}.",
        "",
        f"{len(found['table'])} candidates fitted jointly in {found['passes']:,} passes over the training rows: "
        f"{counts['ok']} fitted, {counts['dropped']} dropped early (could not win), {counts['failed']} failed.",
        "",
    ]
    return lines


def selection_summary(found: dict, prep: dict, criterion: str, seconds: float, registered: dict | None) -> dict:
    """``summary.json`` of a ``gmm select`` run."""
    w = found["winner"]
    return {
        "criterion": criterion,
        "selected": {"n_components": w["n_components"], "covariance_type": w["covariance_type"],
                     criterion: _finite(w[criterion if criterion != "heldout" else "heldout_loglik"]),
                     "model_dir": w.get("model_dir")},
        "registered": None if registered is None else registered["version"],
        "candidates": candidates_table(found["table"]),
        "k_range": found["k_range"],
        "warning": found["k_range"]["warning"],
        "passes": int(found["passes"]),
        "seconds": round(float(seconds), 3),
        "sample": {k: prep[k] for k in ("n_train", "n_holdout", "n_trimmed_train", "n_trimmed_holdout",
                                        "trim_threshold")},
    }
