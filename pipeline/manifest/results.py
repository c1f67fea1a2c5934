"""What scoring recorded: one entry per scored partition, and the failed attempts.

An entry (:class:`ManifestEntry`) is checked field by field before it is
written (:func:`check_entry` names the field and the fix), because SQLite
would store almost anything: NaN becomes NULL (read back as NaN), a numpy
integer is taken as an int, a local time is refused so that ``scored_at``
values compare as strings.

The functions below take an open connection, so the caller decides which
transaction they run in (see :mod:`pipeline.manifest.schema`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import socket
from dataclasses import dataclass

from ..partitions import validate_partition_id
from .errors import AlreadyScored
from .schema import ENTRY_COLUMNS, FAILURE_COLUMNS, UPDATE_COLUMNS, utc_now_iso

__all__ = ["ManifestEntry", "check_entry", "check_run_id"]

_SELECT_ENTRIES = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries"


@dataclass(frozen=True)
class ManifestEntry:
    """One scored partition.

    Attributes
    ----------
    partition_id : str
    model_version : str
        Identifies the model that produced the scores.
    output_path : str
        Scores store; relative paths are taken relative to the outputs
        directory by :meth:`Manifest.reconcile`.
    n_rows : int
    n_anomalies : int
        ``0 <= n_anomalies <= n_rows``.
    mean_loglik : float
        Mean per-row log-likelihood (NaN when there are no rows).
    threshold : float or None
        Anomaly threshold on the log-likelihood that was applied.
    source_url : str
        Where the partition was read from.
    scored_at : str
        ISO 8601 timestamp in UTC, e.g. from :func:`utc_now_iso`.
    run_id : str
        The run that scored it.
    drift : dict or None
        The partition's drift verdict (see :mod:`pipeline.drift`): each
        test's statistic, p-values and effect, ``drifted``, and the
        sequential detector's record; None when the model had no drift
        reference.
    """

    partition_id: str
    model_version: str
    output_path: str
    n_rows: int
    n_anomalies: int
    mean_loglik: float
    threshold: float | None
    source_url: str
    scored_at: str
    run_id: str
    drift: dict | None = None


# ----------------------------------------------------------------------------
# validation


def check_run_id(run_id) -> str:
    """``run_id`` if it is a non-empty string; ValueError naming the fix otherwise."""
    if not isinstance(run_id, str) or not run_id.strip():
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}; pass the flow run's id")
    return run_id


def _float_or_none(x):
    if x is None:
        return None
    x = float(x)
    # SQLite cannot store NaN (it becomes NULL); be explicit about it.
    return None if math.isnan(x) else x


def _check_fields(entry: ManifestEntry) -> None:
    for name in ("model_version", "output_path", "source_url"):
        value = getattr(entry, name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"ManifestEntry.{name} must be a non-empty string, got {value!r}")
    for name in ("n_rows", "n_anomalies"):
        value = getattr(entry, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"ManifestEntry.{name} must be a non-negative integer, got {value!r}")
    if entry.n_anomalies > entry.n_rows:
        raise ValueError(
            f"ManifestEntry.n_anomalies={entry.n_anomalies} exceeds n_rows={entry.n_rows}; "
            "count anomalies over the same rows"
        )
    for name in ("mean_loglik", "threshold"):
        value = getattr(entry, name)
        if value is not None and not isinstance(value, numbers.Real):
            raise ValueError(f"ManifestEntry.{name} must be a number, got {value!r}")
    try:
        ts = _dt.datetime.fromisoformat(entry.scored_at)
    except (TypeError, ValueError):
        ts = None
    if ts is None or ts.utcoffset() != _dt.timedelta(0):
        raise ValueError(
            f"ManifestEntry.scored_at must be an ISO 8601 time in UTC such as "
            f"'2026-01-31T12:00:00+00:00', got {entry.scored_at!r}; use pipeline.manifest.utc_now_iso()"
        )


def check_entry(entry: ManifestEntry) -> tuple:
    """The row to insert for ``entry``, in :data:`ENTRY_COLUMNS` order, after checking every field.

    Raises
    ------
    TypeError
        ``entry`` is not a :class:`ManifestEntry`.
    UnsafePartitionName, ValueError
        A field is malformed; the message names it and the fix.
    """
    if not isinstance(entry, ManifestEntry):
        raise TypeError(f"expected a ManifestEntry, got {type(entry).__name__}")
    validate_partition_id(entry.partition_id)
    check_run_id(entry.run_id)
    _check_fields(entry)
    return (*_row(entry), drift_json(entry.drift))


def drift_json(drift) -> str | None:
    """A drift verdict as stored: strict JSON (non-finite numbers refused), or None."""
    if drift is None:
        return None
    if not isinstance(drift, dict):
        raise ValueError(f"ManifestEntry.drift must be a dict or None, got {type(drift).__name__}")
    try:
        return json.dumps(drift, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ManifestEntry.drift is not strict JSON ({exc}); store NaN and infinity as null") from None


def _row(entry: ManifestEntry) -> tuple:
    return (
        entry.partition_id,
        entry.model_version,
        entry.output_path,
        int(entry.n_rows),
        int(entry.n_anomalies),
        _float_or_none(entry.mean_loglik),
        _float_or_none(entry.threshold),
        entry.source_url,
        entry.scored_at,
        entry.run_id,
    )


# ----------------------------------------------------------------------------
# entries


def _entry_from_row(row) -> ManifestEntry:
    d = dict(zip(ENTRY_COLUMNS, row))
    d["mean_loglik"] = math.nan if d["mean_loglik"] is None else float(d["mean_loglik"])
    d["drift"] = None if d["drift"] is None else json.loads(d["drift"])
    return ManifestEntry(**d)


def is_scored(conn, partition_id: str) -> bool:
    return conn.execute("SELECT 1 FROM entries WHERE partition_id = ?", (partition_id,)).fetchone() is not None


def refuse_if_scored(conn, partition_id: str) -> None:
    """AlreadyScored when ``partition_id`` has an entry."""
    row = conn.execute("SELECT run_id, scored_at FROM entries WHERE partition_id = ?", (partition_id,)).fetchone()
    if row is not None:
        raise AlreadyScored(
            f"Partition {partition_id!r} is already scored (run {row[0]} at {row[1]}); "
            "nothing was recorded. To re-score it, call Manifest.forget first."
        )


def insert_entry(conn, values: tuple) -> None:
    """Insert a row from :func:`check_entry`."""
    conn.execute(f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}) VALUES ({', '.join('?' * len(ENTRY_COLUMNS))})",
                 values)


def set_drift(conn, partition_id: str, drift: dict) -> int:
    """Replace the drift verdict of a recorded partition (the sequential step adds to it); rows changed."""
    return conn.execute("UPDATE entries SET drift = ? WHERE partition_id = ?",
                        (drift_json(drift), partition_id)).rowcount


def delete_entry(conn, partition_id: str) -> int:
    """Delete the entry of ``partition_id``; the number of rows deleted (0 or 1)."""
    return conn.execute("DELETE FROM entries WHERE partition_id = ?", (partition_id,)).rowcount


def delete_exact_entry(conn, entry: ManifestEntry) -> int:
    """Delete ``entry`` only if it is still the one recorded (same run and time); rows deleted."""
    return conn.execute(
        "DELETE FROM entries WHERE partition_id = ? AND run_id = ? AND scored_at = ?",
        (entry.partition_id, entry.run_id, entry.scored_at),
    ).rowcount


def all_entries(conn) -> list[ManifestEntry]:
    """Every entry, sorted by partition id."""
    return [_entry_from_row(r) for r in conn.execute(_SELECT_ENTRIES + " ORDER BY partition_id")]


def get_entry(conn, partition_id: str) -> ManifestEntry | None:
    row = conn.execute(_SELECT_ENTRIES + " WHERE partition_id = ?", (partition_id,)).fetchone()
    return None if row is None else _entry_from_row(row)


def scored_ids(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT partition_id FROM entries")}


# ----------------------------------------------------------------------------
# failures


def add_failure(conn, partition_id: str, run_id: str, error: str) -> None:
    conn.execute(
        "INSERT INTO failures (partition_id, run_id, error, failed_at, hostname) VALUES (?,?,?,?,?)",
        (partition_id, run_id, error, utc_now_iso(), socket.gethostname()),
    )


def clear_failures(conn, partition_id: str) -> None:
    conn.execute("DELETE FROM failures WHERE partition_id = ?", (partition_id,))


def failures(conn, partition_id: str | None = None) -> list[dict]:
    """Failed attempts (of one partition, or all), oldest first, as dicts of :data:`FAILURE_COLUMNS`."""
    sql = f"SELECT {', '.join(FAILURE_COLUMNS)} FROM failures"
    args: tuple = ()
    if partition_id is not None:
        sql += " WHERE partition_id = ?"
        args = (partition_id,)
    rows = conn.execute(sql + " ORDER BY id", args).fetchall()
    return [dict(zip(FAILURE_COLUMNS, r)) for r in rows]


# ----------------------------------------------------------------------------
# model updates


def add_update(conn, *, parent: str, version: str | None, rule: str, partitions: list, n_rows: int,
               promoted: bool, reason: str, run_id: str) -> None:
    """Record one model update attempt (``version`` None when no candidate was registered)."""
    conn.execute(
        f"INSERT INTO updates ({', '.join(UPDATE_COLUMNS)}) VALUES ({', '.join('?' * len(UPDATE_COLUMNS))})",
        (utc_now_iso(), parent, version, rule, json.dumps(list(partitions)), int(n_rows), int(bool(promoted)),
         reason, check_run_id(run_id)),
    )


def updates(conn) -> list[dict]:
    """Every update attempt, oldest first, as dicts of :data:`UPDATE_COLUMNS`."""
    rows = conn.execute(f"SELECT {', '.join(UPDATE_COLUMNS)} FROM updates ORDER BY id").fetchall()
    out = []
    for r in rows:
        d = dict(zip(UPDATE_COLUMNS, r))
        d["partitions"] = json.loads(d["partitions"])
        d["promoted"] = bool(d["promoted"])
        out.append(d)
    return out
