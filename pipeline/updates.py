"""Model updates from scored partitions: the policy, the candidate, and whether it is promoted.

An update never reads the partitions for its statistics: every scores
store keeps the sufficient statistics of its partition under the model
that scored it (computed by the scoring pass).  The steps:

1. **Which partitions.**  The partitions the current version scored are
   not in it yet (a version absorbs the partitions its parent scored).  In
   arrival order, the newest is *held back*: the candidate is built from the
   others and judged on it.  So an update needs two such partitions.
2. **When.**  ``mode``: ``never``; ``always``; ``on_drift`` -- some partition
   among them drifted or raised the sequential alarm.  ``min_rows``: the
   absorbed partitions hold at least that many rows.
3. **The candidate.**  Their statistics (all around the current means),
   older ones forgotten as the stream moved on (each scaled by
   ``2 ** (-rows after it / half_life)``), merged, and one step of
   ``GaussianMixture.partial_fit_statistics`` with ``half_life``: the
   running statistics of the current model (its training data, or the
   data of its own update) are forgotten by the new rows, then the M-step.
   An update that would collapse a component is refused with the reason;
   the current model stays.
4. **Promotion.**  The candidate is promoted when it explains the
   held-back partition better than the current model: its per-row
   log-likelihood there is higher by at least ``min_gain`` nats on average,
   and by more than two standard errors of the per-row gains (the current
   model's scores are those the scoring pass stored).  Otherwise it stays a
   registered version, not current, and the reason is recorded.
5. **Its threshold and drift reference** are calibrated on the rows it was
   built from, as far as they still count: the absorbed partitions within
   one half-life of the newest (read again: the only read of an update).  When the held-back partition still drifts under the candidate
   (judged against the candidate's own reference), the update cannot
   explain the change -- a component may have appeared -- and the outcome
   says so and recommends ``gmm select`` on recent data.

Registration, promotion and the record in the manifest are each atomic; a
process killed in between leaves the previous version current, and the
partitions are still unabsorbed for the next run.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from gmm_engine import ComponentCollapseError

from .drift import DriftPolicy, PartitionCounts, PartitionDrift, test_partition
from .marginal_scoring import MARGINALIZE
from .scores_store import read_scores, read_statistics
from .stream import history

logger = logging.getLogger(__name__)

__all__ = ["UpdatePolicy", "UpdateOutcome", "plan_update", "build_candidate"]

MODES = ("never", "on_drift", "always")


@dataclass(frozen=True)
class UpdatePolicy:
    """When and how the model learns from scored partitions (see the module docs).

    Attributes
    ----------
    mode : {'never', 'on_drift', 'always'}
    half_life : float
        Rows after which old data weighs half (the model's running statistics
        and older partitions alike).
    min_rows : int
        Rows the absorbed partitions must hold, at least.
    contamination : float or None
        Of the candidate's threshold; None: the current model's.
    min_gain : float
        Nats per row the candidate must gain on the held-back partition to
        be promoted (and the gain must exceed two standard errors of the
        per-row gains): an update that changes nothing is not worth a
        version change.
    """

    mode: str = "never"
    half_life: float = 1_000_000.0
    min_rows: int = 1_000
    contamination: float | None = None
    min_gain: float = 0.01

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"update mode must be one of {MODES}, got {self.mode!r}")
        if not self.half_life > 0:
            raise ValueError(f"half_life must be a positive number of rows, got {self.half_life!r}")


@dataclass(frozen=True)
class UpdatePlan:
    """The partitions an update would absorb and the one it is judged on, and the rule that fired."""

    rule: str
    absorb: tuple  # StreamPoint, oldest first
    held_back: object  # StreamPoint

    @property
    def n_rows(self) -> int:
        return sum(p.n_rows for p in self.absorb)


@dataclass(frozen=True)
class UpdateOutcome:
    """What an update did, as the run reports it and the manifest records it."""

    parent: str
    rule: str
    partitions: tuple
    n_rows: int
    held_back: str | None
    version: str | None = None
    promoted: bool = False
    reason: str = ""
    candidate_loglik: float | None = None
    current_loglik: float | None = None
    unexplained: bool = False
    recommendation: str | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in self.__dict__.items()} | {"partitions": list(self.partitions)}


def _drifted(point) -> bool:
    d = point.drift or {}
    return bool(d.get("drifted") or d.get("sequential_alarm"))


def plan_update(entries, current_version: str, policy: UpdatePolicy) -> UpdatePlan | None:
    """The update the policy asks for now, or None (and why, logged)."""
    if policy.mode == "never":
        return None
    mine = [p for p in history(entries) if p.model_version == current_version and p.n_rows > 0]
    if len(mine) < 2:
        logger.info("no update yet: %d partition(s) scored by %s, two are needed (one is held back to judge "
                    "the candidate)", len(mine), current_version)
        return None
    absorb, held_back = tuple(mine[:-1]), mine[-1]
    if policy.mode == "on_drift" and not any(_drifted(p) for p in mine):
        return None
    if sum(p.n_rows for p in absorb) < policy.min_rows:
        logger.info("no update yet: %d rows to absorb, min_rows is %d", sum(p.n_rows for p in absorb),
                    policy.min_rows)
        return None
    rule = "always" if policy.mode == "always" else (
        "on_drift: " + ", ".join(p.partition_id for p in mine if _drifted(p)))
    return UpdatePlan(rule, absorb, held_back)


def decayed_statistics(plan: UpdatePlan, outputs: dict, half_life: float):
    """The absorbed partitions' statistics, older ones forgotten by the rows after them, merged.

    Parameters
    ----------
    outputs : dict
        Partition id -> its scores store.
    """
    merged = None
    rows_after = 0
    for point in reversed(plan.absorb):
        stats = read_statistics(outputs[point.partition_id])
        if stats is None:
            raise ValueError(f"the scores store of {point.partition_id} holds no statistics (scored before "
                             "updates existed): it cannot be absorbed")
        stats = stats.scaled(2.0 ** (-rows_after / half_life)) if rows_after else stats
        merged = stats if merged is None else merged.merge(stats)
        rows_after += point.n_rows
    return merged


def build_candidate(current, plan: UpdatePlan, outputs: dict, policy: UpdatePolicy):
    """The candidate model (a copy of ``current.model`` moved by the absorbed statistics), or the refusal.

    Returns
    -------
    (GaussianMixture or None, str)
        The candidate, or None with the reason it was refused.
    """
    import copy

    if not hasattr(current.model, "partial_fit_statistics"):
        return None, (f"a {type(current.model).__name__} is not updated from statistics; the current model stays "
                      "(refit it with `gmm fit` on recent data)")
    stats = decayed_statistics(plan, outputs, policy.half_life)
    candidate = copy.deepcopy(current.model)
    try:
        candidate.partial_fit_statistics(stats, half_life=policy.half_life)
    except ComponentCollapseError as exc:
        return None, f"the update would collapse a component ({exc}); the current model stays"
    return candidate, ""


@dataclass(frozen=True)
class Judgement:
    """The candidate against the current model on the held-back partition."""

    candidate_loglik: float
    current_loglik: float
    gain_se: float
    remains: PartitionDrift  # the held-back partition's drift tests under the candidate's own reference

    @property
    def gain(self) -> float:
        return self.candidate_loglik - self.current_loglik

    def better(self, min_gain: float) -> bool:
        return self.gain >= min_gain and self.gain > 2.0 * self.gain_se


def judge(candidate, held_back_rows, current_scores, reference, policy: DriftPolicy, threshold) -> Judgement:
    """The candidate on the held-back rows, paired with the current model's stored scores of the same rows."""
    with warnings.catch_warnings():
        # the staged rows were checked against the model's feature names when they were staged
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
        ll = np.asarray(candidate.score_samples(held_back_rows))
        comp = np.asarray(candidate.predict(held_back_rows))
    gains = ll - np.asarray(current_scores, dtype=np.float64)
    # rows with missing values (scored on their observed features) are paired like the others,
    # but drift is of complete rows, as the reference is
    complete = ~np.isnan(np.asarray(held_back_rows)).any(axis=1)
    counts = PartitionCounts.from_chunk(ll[complete], comp[complete], ll[complete] <= threshold, reference)
    se = float(gains.std(ddof=1) / math.sqrt(gains.size)) if gains.size > 1 else math.inf
    return Judgement(float(ll.mean()), float(np.mean(current_scores)), se, test_partition(counts, reference, policy))


def recommendation(remains: PartitionDrift, held_back: str) -> str:
    return (f"the updated model does not explain the drift of {held_back} ({', '.join(remains.reasons)} still "
            "significant under its own reference): a new component may have appeared; run `gmm select` on "
            "recent data")


def _within_half_life(absorb, half_life: float) -> list:
    """The newest absorbed partitions whose rows still weigh at least one half (at least the newest)."""
    recent, rows_after = [], 0
    for point in reversed(absorb):
        if recent and rows_after >= half_life:
            break
        recent.insert(0, point)
        rows_after += point.n_rows
    return recent


def _staged_rows(points, model, staging, outputs, bad_rows, storage_options):
    """The rows of ``points`` staged again (validated as scoring did), each a Zarr array."""
    from .partitions import partition_at, safe_child
    from .scores_store import read_scores_attrs
    from .scoring import stage

    staged = []
    for point in points:
        url = read_scores_attrs(outputs[point.partition_id])["source_url"]
        target = safe_child(staging, point.partition_id, ".update.zarr")
        array, _ = stage(partition_at(point.partition_id, url), model, target, bad_rows=bad_rows,
                         storage_options=storage_options)
        staged.append((target, array))
    return staged


def update_model(*, registry, manifest, current, plan: UpdatePlan, outputs: dict, staging, policy: UpdatePolicy,
                 drift_policy: DriftPolicy, run_id: str, bad_rows: str = "error",
                 storage_options=None) -> UpdateOutcome:
    """Build, calibrate, register and perhaps promote a candidate for ``plan``; record the attempt.

    Parameters
    ----------
    registry : ModelRegistry
    manifest : Manifest
    current : LoadedModel
        The current version (it scored the plan's partitions).
    outputs : dict
        Partition id -> scores store.
    staging : Path
        Where the absorbed and held-back partitions are staged again (removed after).
    """
    import copy
    import shutil

    import dask.array as da

    from gmm_engine import zarr_to_dask

    from .threshold import calibrate_threshold

    ids = tuple(p.partition_id for p in plan.absorb)
    base = dict(parent=current.version, rule=plan.rule, partitions=ids, n_rows=plan.n_rows,
                held_back=plan.held_back.partition_id)
    candidate, refused = build_candidate(current, plan, outputs, policy)
    if candidate is None:
        outcome = UpdateOutcome(**base, reason=refused)
        _record(manifest, outcome, run_id)
        return outcome
    recent = _within_half_life(plan.absorb, policy.half_life)
    staged = _staged_rows([*recent, plan.held_back], current.model, staging, outputs, bad_rows, storage_options)
    # partitions scored with missing values marginalised are calibrated and judged the same way
    scorer = copy.copy(candidate).set_params(missing=MARGINALIZE) if bad_rows == MARGINALIZE else candidate
    try:
        built_from = da.concatenate([zarr_to_dask(z) for _, z in staged[:-1]])
        held_back = np.asarray(staged[-1][1][:])
        contamination = policy.contamination or current.metadata["anomaly"]["contamination"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
            thr = calibrate_threshold(scorer, built_from, contamination)
        verdict = judge(scorer, held_back, read_scores(outputs[plan.held_back.partition_id])["log_likelihood"],
                        thr.reference, drift_policy, thr.threshold)
    finally:
        for target, _ in staged:
            shutil.rmtree(target, ignore_errors=True)
    cand_ll, cur_ll, remains = verdict.candidate_loglik, verdict.current_loglik, verdict.remains
    promoted = verdict.better(policy.min_gain)
    compared = (f"mean log-likelihood {cand_ll:.4f} against {cur_ll:.4f} for {current.version}, gain "
                f"{verdict.gain:.4f} +- {verdict.gain_se:.4f} nats per row")
    reason = (f"promoted: it explains {plan.held_back.partition_id} better ({compared})" if promoted else
              f"not promoted: it explains {plan.held_back.partition_id} no better, by at least {policy.min_gain:g} "
              f"nats per row and two standard errors ({compared})")
    unexplained = bool(remains.drifted)
    lineage = {"parent": current.version, "partitions": list(ids), "rows": plan.n_rows, "rule": plan.rule,
               "half_life": policy.half_life, "held_back": plan.held_back.partition_id,
               "held_back_loglik": {"candidate": cand_ll, "parent": cur_ll, "gain_se": verdict.gain_se},
               "calibrated_on": [p.partition_id for p in recent]}
    metadata = {
        "anomaly": thr.to_dict(), "drift_reference": thr.reference.to_dict(), "lineage": lineage,
        "feature_names": current.metadata.get("feature_names"), "data": current.metadata.get("data"),
        "lower_bounds": list(candidate.lower_bounds_),
    }
    version = registry.register(candidate, metadata, make_current=promoted, reason=reason,
                                attachments={"drift_score_sample": thr.reference.score_sample})
    outcome = UpdateOutcome(
        **base, version=version, promoted=promoted, reason=reason, candidate_loglik=cand_ll,
        current_loglik=cur_ll, unexplained=unexplained,
        recommendation=recommendation(remains, plan.held_back.partition_id) if unexplained else None,
        details={"threshold": thr.threshold, "held_back_drift": remains.to_dict()},
    )
    _record(manifest, outcome, run_id)
    logger.info("update of %s from %d partitions (%d rows): candidate %s, %s", current.version, len(ids),
                plan.n_rows, version, reason)
    if unexplained:
        logger.warning("%s", outcome.recommendation)
    return outcome


def _record(manifest, outcome: UpdateOutcome, run_id: str) -> None:
    manifest.record_update(parent=outcome.parent, version=outcome.version, rule=outcome.rule,
                           partitions=outcome.partitions, n_rows=outcome.n_rows, promoted=outcome.promoted,
                           reason=outcome.reason, run_id=run_id)
