"""A human-readable JSON snapshot of the manifest, for people and dashboards.

The document, read in one snapshot of the database and written
atomically with :func:`gmm_engine.atomic.write_json`::

    {"format": "gmm-stream.manifest.export", "schema_version": 1,
     "manifest": <database path>, "exported_at": <ISO UTC>,
     "entries":  [ManifestEntry fields ..., sorted by id; NaN as null; "drift": the verdict or null],
     "claims":   [{partition_id, run_id, hostname, pid, claimed_at, expires_at (ISO UTC)}],
     "failures": [{partition_id, run_id, error, failed_at, hostname}, oldest first],
     "updates":  [{at, parent, version, rule, partitions, n_rows, promoted, reason, run_id}, oldest first]}
"""

from __future__ import annotations

import math
from dataclasses import asdict

from gmm_engine.atomic import write_json

from . import claims, results
from .schema import APPLICATION, SCHEMA_VERSION, Database, epoch_iso, utc_now_iso


def _json_safe(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _claim_doc(c: claims.Claim) -> dict:
    return {
        "partition_id": c.partition_id,
        "run_id": c.run_id,
        "hostname": c.hostname,
        "pid": c.pid,
        "claimed_at": epoch_iso(c.claimed_at),
        "expires_at": epoch_iso(c.expires_at),
    }


def export_json(db: Database, path) -> None:
    """Write the snapshot of the module docs to ``path`` (replacing it atomically)."""
    with db.read() as conn:
        entries = results.all_entries(conn)
        held = claims.all_claims(conn)
        failures = results.failures(conn)
        updates = results.updates(conn)
    write_json(path, {
        "format": APPLICATION + ".export",
        "schema_version": SCHEMA_VERSION,
        "manifest": str(db.path),
        "exported_at": utc_now_iso(),
        "entries": [_json_safe(asdict(e)) for e in entries],
        "claims": [_claim_doc(c) for c in held],
        "failures": failures,
        "updates": updates,
    })
