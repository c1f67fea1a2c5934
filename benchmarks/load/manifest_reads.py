"""Read-only looks into the manifest while a run writes it.

A ``Manifest()`` here could create the schema before the flow does, so the
SQLite file is opened read-only; a missing file or schema reads as empty.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def _read(manifest: Path, sql: str, empty):
    """``sql``'s rows (a cursor consumed inside the connection), or ``empty`` before the schema exists."""
    if not manifest.exists():
        return empty
    with contextlib.closing(sqlite3.connect(f"file:{manifest}?mode=ro", uri=True, timeout=30)) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # schema not created yet
            return empty


def scored_count(manifest: Path) -> int:
    rows = _read(manifest, "SELECT count(*) FROM entries", None)
    return 0 if rows is None else rows[0][0]


def run_ids(manifest: Path) -> list[str]:
    rows = _read(manifest, "SELECT DISTINCT run_id FROM entries UNION SELECT DISTINCT run_id FROM claims", [])
    return sorted({r[0] for r in rows})


def failures(manifest: Path) -> list[tuple[str, str]]:
    return _read(manifest, "SELECT partition_id, error FROM failures ORDER BY id", [])
