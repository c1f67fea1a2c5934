"""Claims: a run's lease on the partition it is scoring.

A run takes a claim before scoring a partition (:func:`take`), renews it
while it works (:func:`renew`) and ends it by recording a result or
releasing it (:func:`delete_claim`).  Another run may take a claim over
only when it is *stale* (:func:`stale_reason`):

* its lease expired (the holder stopped renewing: hung, killed, or on
  another host that died), or
* its owner ran on this host and that process is gone
  (:func:`pipeline.manifest.owners.owner_alive`).

Every function takes a connection inside the caller's ``BEGIN IMMEDIATE``
transaction: the claim row is read and written under one write lock, so
two runs cannot both obtain the same partition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import ClaimConflict, ClaimLost
from .owners import Owner, owner_alive
from .schema import CLAIM_COLUMNS, epoch_iso

logger = logging.getLogger(__name__)

__all__ = ["Claim", "stale_reason"]

_SELECT_CLAIMS = f"SELECT {', '.join(CLAIM_COLUMNS)} FROM claims"


@dataclass(frozen=True)
class Claim:
    """A run's lease on a partition (see the module docs)."""

    partition_id: str
    run_id: str
    hostname: str
    host_key: str
    pid: int
    proc_start: float | None
    claimed_at: float
    expires_at: float
    lease_seconds: float


def stale_reason(claim: Claim, now: float) -> str | None:
    """Why ``claim`` may be taken over at time ``now``, or None while it is live."""
    if now >= claim.expires_at:
        return f"its lease expired at {epoch_iso(claim.expires_at)}"
    if owner_alive(claim.host_key, claim.pid, claim.proc_start) is False:
        return f"its owner, process {claim.pid} on {claim.hostname}, is no longer running"
    return None


def get_claim(conn, partition_id: str) -> Claim | None:
    """The claim row of ``partition_id`` (live or stale), or None."""
    row = conn.execute(_SELECT_CLAIMS + " WHERE partition_id = ?", (partition_id,)).fetchone()
    return None if row is None else Claim(*row)


def live_claim(conn, partition_id: str, now: float) -> Claim | None:
    """The claim of ``partition_id`` if it is live at ``now``, else None."""
    held = get_claim(conn, partition_id)
    return held if held is not None and stale_reason(held, now) is None else None


def all_claims(conn) -> list[Claim]:
    """Every claim (live or stale), sorted by partition id."""
    return [Claim(*r) for r in conn.execute(_SELECT_CLAIMS + " ORDER BY partition_id")]


def take(conn, held: Claim | None, partition_id: str, run_id: str, *, owner: Owner, now: float,
         lease_seconds: float) -> bool:
    """Write ``run_id``'s claim unless ``held`` (the current row) is another run's live claim.

    Returns
    -------
    bool
        True when the claim was written: none was held, this run held it
        (the lease is refreshed), or another run's claim was stale (taken
        over, with a warning).
    """
    if held is not None and held.run_id != run_id:
        reason = stale_reason(held, now)
        if reason is None:
            return False
        logger.warning(
            "run %s takes over the claim on partition %s from run %s: %s",
            run_id, partition_id, held.run_id, reason,
        )
    conn.execute(
        f"INSERT OR REPLACE INTO claims ({', '.join(CLAIM_COLUMNS)}) VALUES (?,?,?,?,?,?,?,?,?)",
        (partition_id, run_id, owner.hostname, owner.host_key, owner.pid, owner.proc_start,
         now, now + lease_seconds, lease_seconds),
    )
    return True


def renew(conn, held: Claim | None, partition_id: str, run_id: str, now: float) -> None:
    """Extend ``run_id``'s lease by its length from ``now``; ClaimLost if ``held`` is not its claim."""
    if held is None or held.run_id != run_id:
        holder = "nobody" if held is None else f"run {held.run_id}"
        raise ClaimLost(
            f"Run {run_id} no longer holds the claim on partition {partition_id!r} "
            f"(now held by {holder}); stop scoring it and discard its output. "
            "Renew more often than lease_seconds to keep a claim."
        )
    conn.execute(
        "UPDATE claims SET expires_at = ? WHERE partition_id = ?",
        (now + held.lease_seconds, partition_id),
    )


def refuse_foreign_live(held: Claim | None, partition_id: str, run_id: str, now: float) -> None:
    """ClaimConflict when another run than ``run_id`` holds a live claim (``held``) on the partition."""
    if held is not None and held.run_id != run_id and stale_reason(held, now) is None:
        raise ClaimConflict(
            f"Partition {partition_id!r} is claimed by run {held.run_id}, not by run "
            f"{run_id}; nothing was recorded. Discard this run's output for it "
            "(the claim was probably taken over after its lease expired)."
        )


def delete_claim(conn, partition_id: str, run_id: str | None = None) -> None:
    """Drop the claim on ``partition_id``: whoever holds it, or only ``run_id``'s."""
    if run_id is None:
        conn.execute("DELETE FROM claims WHERE partition_id = ?", (partition_id,))
    else:
        conn.execute("DELETE FROM claims WHERE partition_id = ? AND run_id = ?", (partition_id, run_id))


def release_stale(conn, now: float) -> list[str]:
    """Delete every stale claim; the partition ids released, each logged with its reason."""
    released = []
    for claim in [Claim(*r) for r in conn.execute(_SELECT_CLAIMS)]:
        reason = stale_reason(claim, now)
        if reason is not None:
            delete_claim(conn, claim.partition_id, claim.run_id)
            released.append(claim.partition_id)
            logger.warning("released stale claim of run %s on %s: %s", claim.run_id, claim.partition_id, reason)
    return released
