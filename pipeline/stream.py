"""The stream of scored partitions: arrival order and the sequential drift detector.

Partitions take their place in the stream in the order they are scored,
and within one scoring run in the order they arrived (their modification
time, then their id).  Each partition's drift verdict (recorded with its
manifest entry by the scoring pass) then gets the CUSUM step of
:class:`pipeline.drift.Cusum`, carried from the previous partition scored
by the same model version: a new version starts the detector afresh,
since its reference (the data it was calibrated on) is new.  The step is
recorded in the entry's verdict under ``sequential`` with its ``position``
in the stream, so a later run continues where this one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from .drift import Cusum, DriftPolicy, DriftReference, PartitionDrift

__all__ = ["StreamPoint", "history", "sequential_steps"]


@dataclass(frozen=True)
class StreamPoint:
    """One scored partition in arrival order, as ``gmm status`` shows it."""

    position: int | None
    partition_id: str
    model_version: str
    n_rows: int
    n_anomalies: int
    mean_loglik: float
    scored_at: str
    drift: dict | None

    @property
    def anomaly_rate(self) -> float:
        return self.n_anomalies / self.n_rows if self.n_rows else float("nan")


def _position(entry) -> int | None:
    seq = (entry.drift or {}).get("sequential") or {}
    return seq.get("position")


def history(entries) -> list[StreamPoint]:
    """Every scored partition in arrival order (positioned ones first, by position; then by time)."""
    points = [StreamPoint(_position(e), e.partition_id, e.model_version, e.n_rows, e.n_anomalies,
                          e.mean_loglik, e.scored_at, e.drift) for e in entries]
    return sorted(points, key=lambda p: (p.position is None, p.position if p.position is not None else 0,
                                         p.scored_at, p.partition_id))


def _last_state(entries, model_version: str) -> tuple[Cusum, int]:
    """The CUSUM after the last partition the version scored, and the next free position in the stream."""
    positions = [p for p in (_position(e) for e in entries) if p is not None]
    mine = [(e.drift["sequential"]["position"], e.drift["sequential"]["statistic"])
            for e in entries if e.model_version == model_version and _position(e) is not None]
    state = Cusum()
    if mine:
        last_position, statistic = max(mine)
        state = Cusum(float(statistic), sum(1 for _ in mine))
    return state, (max(positions) + 1 if positions else 0)


def sequential_steps(manifest, new_ids, model_version: str, reference: DriftReference,
                     policy: DriftPolicy) -> dict:
    """The CUSUM over partitions just scored, in the order of ``new_ids``; their verdicts updated.

    Parameters
    ----------
    manifest : pipeline.manifest.Manifest
    new_ids : sequence of str
        Partitions scored by this run, in arrival order; those without a
        recorded verdict (no reference, no rows) are skipped.
    model_version : str
        The version that scored them.
    reference : DriftReference
    policy : DriftPolicy

    Returns
    -------
    dict
        Partition id -> the verdict with its sequential record (as stored).
    """
    entries = manifest.entries()
    by_id = {e.partition_id: e for e in entries}
    state, position = _last_state(entries, model_version)
    out = {}
    for pid in new_ids:
        entry = by_id.get(pid)
        if entry is None or entry.drift is None or (entry.drift.get("sequential") or {}).get("position") is not None:
            continue
        state, record = state.step(entry.n_rows, entry.mean_loglik, reference, policy)
        record["position"] = position
        position += 1
        drift = PartitionDrift.from_dict(entry.drift).with_sequential(record).to_dict()
        manifest.set_drift(pid, drift)
        out[pid] = drift
    return out
