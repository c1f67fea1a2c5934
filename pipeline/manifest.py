"""The scoring manifest: which partitions are scored, claimed, or failed.

The manifest is one SQLite database (standard library ``sqlite3``) in WAL
mode.  Every write runs in its own ``BEGIN IMMEDIATE`` transaction on a
fresh connection with a busy timeout, so any number of threads and
processes on one host (and several concurrent scoring runs) can share it.
SQLite over network filesystems is not reliable: keep the manifest on a
local disk of the host that runs the flows.

Tables (schema version 1)
-------------------------
``meta``      application marker and schema version.
``entries``   one row per scored partition (:class:`ManifestEntry`).
``claims``    one row per partition a run is scoring right now: run id,
              owner (hostname, host key, pid, process start time) and lease.
``failures``  every failed attempt, until the partition is scored.

Claims
------
A run calls :meth:`Manifest.claim` before scoring a partition and only
proceeds when it returns True.  The claim is a lease: the holder calls
:meth:`Manifest.renew` while working and ends it with
:meth:`Manifest.record_success`, :meth:`Manifest.record_failure` or
:meth:`Manifest.release`.  Another run may take a claim over when it is
*stale*:

* its lease expired (the holder stopped renewing: hung, killed, or on
  another host that died), or
* its owner ran on this host (same hostname, kernel boot and pid
  namespace) and that process is gone: no such pid, a zombie, or a pid
  that now belongs to a process with a different start time (pid reuse).

Owners on other hosts are judged by their lease only.  Claims are checked
and written inside one ``BEGIN IMMEDIATE`` transaction, so two runs cannot
both obtain the same partition.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import numbers
import os
import shutil
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .outputs import SCORES_FORMAT, atomic_write_json, parse_temp_name, remove_entry, temp_name_for
from .partitions import UnsafePartitionName, validate_partition_id

logger = logging.getLogger(__name__)

__all__ = [
    "APPLICATION",
    "SCHEMA_VERSION",
    "ManifestError",
    "NotAManifestError",
    "ClaimLost",
    "ClaimConflict",
    "AlreadyScored",
    "ManifestEntry",
    "Claim",
    "Manifest",
    "utc_now_iso",
]

APPLICATION = "gmm-stream.manifest"
SCHEMA_VERSION = 1
#: Non-partition temporaries (e.g. from atomic_write_json) are only removed
#: by reconcile when older than this; their writers finish in milliseconds.
TEMP_GRACE_SECONDS = 3600.0

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE entries (
    partition_id  TEXT PRIMARY KEY,
    model_version TEXT NOT NULL,
    output_path   TEXT NOT NULL,
    n_rows        INTEGER NOT NULL CHECK (n_rows >= 0),
    n_anomalies   INTEGER NOT NULL CHECK (n_anomalies >= 0 AND n_anomalies <= n_rows),
    mean_loglik   REAL,
    threshold     REAL,
    source_url    TEXT NOT NULL,
    scored_at     TEXT NOT NULL,
    run_id        TEXT NOT NULL
);
CREATE TABLE claims (
    partition_id  TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    host_key      TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    proc_start    REAL,
    claimed_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    lease_seconds REAL NOT NULL
);
CREATE TABLE failures (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    partition_id  TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    error         TEXT NOT NULL,
    failed_at     TEXT NOT NULL,
    hostname      TEXT NOT NULL
);
CREATE INDEX failures_by_partition ON failures (partition_id);
"""

_ENTRY_COLUMNS = (
    "partition_id",
    "model_version",
    "output_path",
    "n_rows",
    "n_anomalies",
    "mean_loglik",
    "threshold",
    "source_url",
    "scored_at",
    "run_id",
)
_CLAIM_COLUMNS = (
    "partition_id",
    "run_id",
    "hostname",
    "host_key",
    "pid",
    "proc_start",
    "claimed_at",
    "expires_at",
    "lease_seconds",
)
# Start times are exact tick counts (see _proc_info); the tolerance only
# absorbs float rounding.
_START_TOLERANCE = 1e-3


class ManifestError(RuntimeError):
    """Base class for manifest errors."""


class NotAManifestError(ManifestError, ValueError):
    """The file is not a gmm-stream manifest (foreign SQLite file, not SQLite, or too new)."""


class ClaimLost(ManifestError):
    """The run no longer holds the claim it is renewing: stop working on that partition."""


class ClaimConflict(ManifestError):
    """Another run holds a live claim on the partition."""


class AlreadyScored(ManifestError):
    """The partition already has a manifest entry."""


def utc_now_iso() -> str:
    """Current time as an ISO 8601 string in UTC (``...+00:00``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _epoch_iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat()


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


# ----------------------------------------------------------------------------
# process identity


def _read_first_line(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.readline().strip()
    except OSError:
        return ""


def _host_key() -> str:
    # Same hostname is not enough: containers can share one, and after a
    # reboot or in another pid namespace the same pid means another process.
    boot_id = _read_first_line("/proc/sys/kernel/random/boot_id")
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pidns = ""
    return f"{socket.gethostname()}|{boot_id}|{pidns}"


_PROCFS = os.path.isdir("/proc/self")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_info(pid: int) -> tuple[float | None, bool] | None:
    """``(start time, is zombie)`` of process ``pid``, or None if there is no such process.

    On Linux the start time is read from ``/proc/<pid>/stat`` as seconds
    since boot (an exact tick count).  psutil's wall-clock ``create_time``
    is derived from the boot time, which shifts when the clock is adjusted,
    and would make a live owner look like a reused pid.  Start times are
    only compared within one boot (the host key includes the boot id).
    """
    if _PROCFS:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                data = fh.read()
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError:
            pass  # unreadable: fall back to psutil
        else:
            # the command name (field 2) may contain spaces and ')'
            fields = data[data.rindex(b")") + 2:].split()
            return int(fields[19]) / _CLK_TCK, fields[0] == b"Z"
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.create_time(), proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return (None, False)  # exists, but cannot be inspected


_OWNER_CACHE: dict[int, tuple[str, str, int, float | None]] = {}


def _current_owner() -> tuple[str, str, int, float | None]:
    """``(hostname, host_key, pid, process start time)`` of this process (cached per pid)."""
    pid = os.getpid()
    owner = _OWNER_CACHE.get(pid)
    if owner is None:
        info = _proc_info(pid)
        owner = (socket.gethostname(), _host_key(), pid, info[0] if info else None)
        _OWNER_CACHE.clear()
        _OWNER_CACHE[pid] = owner
    return owner


def _owner_alive(claim: Claim) -> bool | None:
    """True/False for owners on this host; None when the owner is elsewhere (unknown)."""
    if claim.host_key != _current_owner()[1]:
        return None
    info = _proc_info(claim.pid)
    if info is None:
        return False
    start, zombie = info
    if zombie:
        return False  # exited, not yet reaped by its parent
    if start is not None and claim.proc_start is not None and abs(start - claim.proc_start) > _START_TOLERANCE:
        return False  # the pid was reused by a newer process
    return True


# ----------------------------------------------------------------------------
# validation helpers


def _check_run_id(run_id) -> str:
    if not isinstance(run_id, str) or not run_id.strip():
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}; pass the flow run's id")
    return run_id


def _float_or_none(x):
    if x is None:
        return None
    x = float(x)
    # SQLite cannot store NaN (it becomes NULL); be explicit about it.
    return None if math.isnan(x) else x


def _check_entry(entry: ManifestEntry) -> tuple:
    if not isinstance(entry, ManifestEntry):
        raise TypeError(f"expected a ManifestEntry, got {type(entry).__name__}")
    validate_partition_id(entry.partition_id)
    _check_run_id(entry.run_id)
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


def _entry_from_row(row) -> ManifestEntry:
    d = dict(zip(_ENTRY_COLUMNS, row))
    d["mean_loglik"] = math.nan if d["mean_loglik"] is None else float(d["mean_loglik"])
    return ManifestEntry(**d)


def _claim_from_row(row) -> Claim:
    return Claim(**dict(zip(_CLAIM_COLUMNS, row)))


def _json_safe(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _scores_marker(path: Path) -> dict | None:
    """The ``gmm_stream`` marker of a scores store's zarr.json, or None (cheap, no Zarr import)."""
    try:
        doc = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    marker = (doc.get("attributes") or {}).get("gmm_stream") if isinstance(doc, dict) else None
    if isinstance(marker, dict) and marker.get("format") == SCORES_FORMAT:
        return marker
    return None


# ----------------------------------------------------------------------------


class Manifest:
    """SQLite manifest of scored partitions, claims and failures (see the module docs).

    Parameters
    ----------
    path : str or PathLike
        Database file; created (with parent directories) when missing.
    timeout : float
        Seconds to wait for another writer's lock before failing.
    clock : callable, optional
        Returns the current POSIX time; used for leases (tests pass a fake).

    Raises
    ------
    NotAManifestError
        ``path`` is not SQLite, is another application's SQLite database, or
        was written by a newer schema version.

    Notes
    -----
    The object holds no open connection (each call opens its own), so it can
    be pickled to other processes and used from several threads.
    """

    def __init__(self, path, *, timeout: float = 30.0, clock=time.time):
        self.path = Path(path).expanduser().absolute()
        self.timeout = float(timeout)
        self._clock = clock
        if self.path.is_dir():
            raise NotAManifestError(
                f"Manifest path {self.path} is a directory; pass a file path such as {self.path / 'manifest.sqlite'}"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._init_schema()

    def __repr__(self) -> str:
        return f"Manifest({str(self.path)!r})"

    # -- connections --------------------------------------------------------

    @contextmanager
    def _connect(self):
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self):
        """A connection inside ``BEGIN IMMEDIATE``; commits on normal exit, rolls back on error."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self):
        """A connection inside a deferred transaction: all reads see one snapshot."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _foreign(self, what: str) -> NotAManifestError:
        return NotAManifestError(
            f"{self.path} is not a gmm-stream manifest: {what}. Nothing was changed. "
            "Pass the path of an existing manifest or of a new file, or move this file away."
        )

    def _init_schema(self) -> None:
        try:
            with self._connect() as conn:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if tables:
                    self._check_ours(conn, tables)
                self._enable_wal(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # Re-check under the write lock: another process may have
                    # created the schema since the first look.
                    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                    if tables:
                        self._check_ours(conn, tables)
                    else:
                        for stmt in _SCHEMA.split(";"):
                            if stmt.strip():
                                conn.execute(stmt)
                        conn.executemany(
                            "INSERT INTO meta (key, value) VALUES (?, ?)",
                            [
                                ("application", APPLICATION),
                                ("schema_version", str(SCHEMA_VERSION)),
                                ("created_at", utc_now_iso()),
                            ],
                        )
                        logger.info("created manifest %s (schema version %d)", self.path, SCHEMA_VERSION)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except NotAManifestError:
            raise
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise self._foreign(f"it is not an SQLite database ({exc})") from exc
            raise ManifestError(f"Cannot open manifest {self.path}: {exc}. Check the path and its permissions.") from exc

    def _check_ours(self, conn, tables: set[str]) -> None:
        if "meta" not in tables:
            raise self._foreign(f"it is an SQLite database with other tables ({', '.join(sorted(tables))})")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise self._foreign(f"its meta table names application {meta.get('application')!r}")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise self._foreign(f"schema_version {meta.get('schema_version')!r} is not an integer") from None
        if version > SCHEMA_VERSION:
            raise NotAManifestError(
                f"{self.path} has manifest schema version {version}, newer than this release "
                f"supports ({SCHEMA_VERSION}); upgrade gmm-stream. Nothing was changed."
            )

    def _enable_wal(self, conn) -> None:
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                # Switching needs exclusive access; another process may be
                # switching or writing at the same moment.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- claims -------------------------------------------------------------

    def _get_claim(self, conn, partition_id: str) -> Claim | None:
        row = conn.execute(
            f"SELECT {', '.join(_CLAIM_COLUMNS)} FROM claims WHERE partition_id = ?", (partition_id,)
        ).fetchone()
        return None if row is None else _claim_from_row(row)

    def _stale_reason(self, claim: Claim, now: float) -> str | None:
        if now >= claim.expires_at:
            return f"its lease expired at {_epoch_iso(claim.expires_at)}"
        if _owner_alive(claim) is False:
            return f"its owner, process {claim.pid} on {claim.hostname}, is no longer running"
        return None

    def claim(self, partition_id: str, run_id: str, *, lease_seconds: float = 600) -> bool:
        """Try to obtain the right to score ``partition_id`` now.

        Parameters
        ----------
        partition_id : str
        run_id : str
        lease_seconds : float
            Lease length; call :meth:`renew` more often than this while working.

        Returns
        -------
        bool
            True when the partition is not scored and is unclaimed, claimed by
            this run already (the lease is refreshed), or held by a stale claim
            (taken over, with a warning).  False when it is scored or another
            run holds a live claim.
        """
        validate_partition_id(partition_id)
        _check_run_id(run_id)
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
        hostname, host_key, pid, start = _current_owner()
        now = self._clock()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM entries WHERE partition_id = ?", (partition_id,)).fetchone():
                return False
            held = self._get_claim(conn, partition_id)
            if held is not None and held.run_id != run_id:
                reason = self._stale_reason(held, now)
                if reason is None:
                    return False
                logger.warning(
                    "run %s takes over the claim on partition %s from run %s: %s",
                    run_id, partition_id, held.run_id, reason,
                )
            conn.execute(
                f"INSERT OR REPLACE INTO claims ({', '.join(_CLAIM_COLUMNS)}) VALUES (?,?,?,?,?,?,?,?,?)",
                (partition_id, run_id, hostname, host_key, pid, start, now, now + lease_seconds, lease_seconds),
            )
        return True

    def renew(self, partition_id: str, run_id: str) -> None:
        """Extend this run's lease on ``partition_id`` by its lease length from now.

        Raises
        ------
        ClaimLost
            The run no longer holds the claim (taken over after going stale,
            released, or already recorded): stop working on the partition.
        """
        validate_partition_id(partition_id)
        _check_run_id(run_id)
        now = self._clock()
        with self._write() as conn:
            held = self._get_claim(conn, partition_id)
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

    def release(self, partition_id: str, run_id: str) -> None:
        """Drop this run's claim on ``partition_id`` (no-op if it holds none)."""
        validate_partition_id(partition_id)
        _check_run_id(run_id)
        with self._write() as conn:
            conn.execute("DELETE FROM claims WHERE partition_id = ? AND run_id = ?", (partition_id, run_id))

    def claims(self) -> list[Claim]:
        """All current claims (live or stale), sorted by partition id."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_CLAIM_COLUMNS)} FROM claims ORDER BY partition_id"
            ).fetchall()
        return [_claim_from_row(r) for r in rows]

    # -- results ------------------------------------------------------------

    def record_success(self, entry: ManifestEntry) -> None:
        """Record a scored partition: insert the entry, drop the claim and clear its failures, atomically.

        Raises
        ------
        AlreadyScored
            The partition already has an entry (:meth:`forget` it to re-score).
        ClaimConflict
            Another run holds a live claim on it (this run's claim went stale
            and was taken over); discard this run's output.
        ValueError
            The entry is malformed (names the field and the fix).
        """
        values = _check_entry(entry)
        now = self._clock()
        with self._write() as conn:
            row = conn.execute(
                "SELECT run_id, scored_at FROM entries WHERE partition_id = ?", (entry.partition_id,)
            ).fetchone()
            if row is not None:
                raise AlreadyScored(
                    f"Partition {entry.partition_id!r} is already scored (run {row[0]} at {row[1]}); "
                    "nothing was recorded. To re-score it, call Manifest.forget first."
                )
            held = self._get_claim(conn, entry.partition_id)
            if held is not None and held.run_id != entry.run_id:
                if self._stale_reason(held, now) is None:
                    raise ClaimConflict(
                        f"Partition {entry.partition_id!r} is claimed by run {held.run_id}, not by run "
                        f"{entry.run_id}; nothing was recorded. Discard this run's output for it "
                        "(the claim was probably taken over after its lease expired)."
                    )
            conn.execute(
                f"INSERT INTO entries ({', '.join(_ENTRY_COLUMNS)}) VALUES (?,?,?,?,?,?,?,?,?,?)", values
            )
            conn.execute("DELETE FROM claims WHERE partition_id = ?", (entry.partition_id,))
            conn.execute("DELETE FROM failures WHERE partition_id = ?", (entry.partition_id,))
        logger.info("recorded partition %s (%d rows, %d anomalies)", entry.partition_id, entry.n_rows, entry.n_anomalies)

    def record_failure(self, partition_id: str, run_id: str, error: str) -> None:
        """Append a failed attempt to the history and drop this run's claim."""
        validate_partition_id(partition_id)
        _check_run_id(run_id)
        error = str(error)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO failures (partition_id, run_id, error, failed_at, hostname) VALUES (?,?,?,?,?)",
                (partition_id, run_id, error, utc_now_iso(), socket.gethostname()),
            )
            conn.execute("DELETE FROM claims WHERE partition_id = ? AND run_id = ?", (partition_id, run_id))
        logger.warning("partition %s failed in run %s: %s", partition_id, run_id, error.splitlines()[0] if error else "")

    def scored_ids(self) -> set[str]:
        """Ids of all scored partitions."""
        with self._read() as conn:
            return {r[0] for r in conn.execute("SELECT partition_id FROM entries")}

    def entries(self) -> list[ManifestEntry]:
        """All entries, sorted by partition id."""
        with self._read() as conn:
            rows = conn.execute(f"SELECT {', '.join(_ENTRY_COLUMNS)} FROM entries ORDER BY partition_id").fetchall()
        return [_entry_from_row(r) for r in rows]

    def get(self, partition_id: str) -> ManifestEntry | None:
        """The entry for ``partition_id``, or None."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {', '.join(_ENTRY_COLUMNS)} FROM entries WHERE partition_id = ?", (partition_id,)
            ).fetchone()
        return None if row is None else _entry_from_row(row)

    def failures(self, partition_id: str | None = None) -> list[dict]:
        """Failed attempts since each partition was last scored, oldest first.

        Returns
        -------
        list of dict
            Keys ``partition_id``, ``run_id``, ``error``, ``failed_at`` (ISO UTC), ``hostname``.
        """
        sql = "SELECT partition_id, run_id, error, failed_at, hostname FROM failures"
        args: tuple = ()
        if partition_id is not None:
            sql += " WHERE partition_id = ?"
            args = (partition_id,)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY id", args).fetchall()
        keys = ("partition_id", "run_id", "error", "failed_at", "hostname")
        return [dict(zip(keys, r)) for r in rows]

    def forget(self, partition_id: str) -> None:
        """Delete the entry of ``partition_id`` so it is scored again.

        Only the manifest changes: the old output store then has no entry, so
        the next scoring would refuse to overwrite it until it is deleted;
        :meth:`reconcile` deletes it.
        """
        validate_partition_id(partition_id)
        with self._write() as conn:
            n = conn.execute("DELETE FROM entries WHERE partition_id = ?", (partition_id,)).rowcount
        if n:
            logger.info("forgot partition %s", partition_id)

    # -- crash recovery -----------------------------------------------------

    def reconcile(self, outputs_dir, *, temp_grace_seconds: float = TEMP_GRACE_SECONDS) -> dict:
        """Make the manifest and the output directory agree after a crash.

        Safe to run while other runs are scoring: anything belonging to a
        live claim is left alone.

        Steps
        -----
        1. Stale claims (see the module docs) are released.
        2. Entries whose output store does not exist are forgotten, so the
           partition is scored again.  (Relative ``output_path`` values are
           taken relative to ``outputs_dir``.)
        3. ``<id>.zarr`` stores in ``outputs_dir`` that carry the scores
           marker but whose partition has no entry and no live claim (a crash
           between publishing the store and recording it, or a forgotten
           partition) are removed: first renamed to a temporary name, then
           deleted, so nobody sees a half-deleted store.
        4. Temporary entries ``.<name>.tmp-<hex>``: those of a partition
           store are removed unless a live claim on that partition exists;
           any others (from atomic file writes) only when older than
           ``temp_grace_seconds``.

        Entries the manifest does not own (no scores marker, names that are
        not partition ids, stores of a partition whose entry points to
        another path) are never deleted; they are listed under ``ignored``.

        Parameters
        ----------
        outputs_dir : str or PathLike
            The directory that holds the scores stores; must exist.
        temp_grace_seconds : float

        Returns
        -------
        dict
            Lists ``released_stale_claims`` (ids), ``forgotten`` (ids),
            ``removed_orphans`` (paths), ``removed_temps`` (paths),
            ``kept_in_progress`` (paths) and ``ignored`` ((path, reason)).

        Raises
        ------
        FileNotFoundError
            ``outputs_dir`` does not exist (nothing is changed: every entry
            would otherwise look lost).
        """
        outputs_dir = Path(outputs_dir).expanduser().absolute()
        if not outputs_dir.is_dir():
            raise FileNotFoundError(
                f"Outputs directory {outputs_dir} does not exist; nothing was changed. Fix the path "
                "(or mount the volume): reconciling against a missing directory would forget every entry."
            )
        report: dict = {
            "released_stale_claims": [],
            "forgotten": [],
            "removed_orphans": [],
            "removed_temps": [],
            "kept_in_progress": [],
            "ignored": [],
        }
        now = self._clock()

        # 1. stale claims
        with self._write() as conn:
            for claim in [_claim_from_row(r) for r in conn.execute(f"SELECT {', '.join(_CLAIM_COLUMNS)} FROM claims")]:
                reason = self._stale_reason(claim, now)
                if reason is not None:
                    conn.execute(
                        "DELETE FROM claims WHERE partition_id = ? AND run_id = ?", (claim.partition_id, claim.run_id)
                    )
                    report["released_stale_claims"].append(claim.partition_id)
                    logger.warning("released stale claim of run %s on %s: %s", claim.run_id, claim.partition_id, reason)

        # 2. entries without output
        def resolve(output_path: str) -> Path:
            p = Path(output_path).expanduser()
            return Path(os.path.abspath(p if p.is_absolute() else outputs_dir / p))

        referenced: set[Path] = set()
        for entry in self.entries():
            if "://" in entry.output_path:
                report["ignored"].append((entry.output_path, "remote output paths are not checked"))
                continue
            out = resolve(entry.output_path)
            if out.exists():
                referenced.add(out)
                continue
            with self._write() as conn:
                # Delete only the exact entry we looked at, and only if its
                # output is still missing now that we hold the write lock.
                n = 0
                if not out.exists():
                    n = conn.execute(
                        "DELETE FROM entries WHERE partition_id = ? AND run_id = ? AND scored_at = ?",
                        (entry.partition_id, entry.run_id, entry.scored_at),
                    ).rowcount
            if n:
                report["forgotten"].append(entry.partition_id)
                logger.warning("forgot partition %s: its output %s is missing", entry.partition_id, out)

        # 3 and 4. scan the outputs directory
        for dirent in sorted(os.scandir(outputs_dir), key=lambda e: e.name):
            path = Path(dirent.path)
            target = parse_temp_name(dirent.name)
            if target is not None:
                self._reconcile_temp(path, target, now, temp_grace_seconds, report)
                continue
            if not dirent.name.endswith(".zarr") or not dirent.is_dir(follow_symlinks=False):
                continue  # not an output store (exports, notes ...): not ours to judge
            pid = dirent.name[: -len(".zarr")]
            try:
                validate_partition_id(pid)
            except UnsafePartitionName:
                report["ignored"].append((str(path), "name is not <partition id>.zarr"))
                continue
            if path in referenced:
                continue
            if _scores_marker(path) is None:
                report["ignored"].append((str(path), "not a gmm-stream scores store (no scores marker)"))
                continue
            with self._read() as conn:
                row = conn.execute("SELECT output_path FROM entries WHERE partition_id = ?", (pid,)).fetchone()
                held = self._get_claim(conn, pid)
            if row is not None:
                if resolve(row[0]) != path:
                    report["ignored"].append((str(path), f"partition {pid} is recorded with output {row[0]}"))
                continue  # recorded since we listed the entries
            if held is not None and self._stale_reason(held, now) is None:
                report["kept_in_progress"].append(str(path))
                continue
            trash = path.parent / temp_name_for(path.name)
            try:
                os.rename(path, trash)
            except FileNotFoundError:
                continue  # removed concurrently
            shutil.rmtree(trash, ignore_errors=True)
            report["removed_orphans"].append(str(path))
            logger.warning("removed output %s: partition %s has no manifest entry", path, pid)
        return report

    def _reconcile_temp(self, path: Path, target: str, now: float, grace: float, report: dict) -> None:
        pid = target[: -len(".zarr")] if target.endswith(".zarr") else None
        if pid is not None:
            try:
                validate_partition_id(pid)
            except UnsafePartitionName:
                pid = None
        if pid is not None:
            with self._read() as conn:
                held = self._get_claim(conn, pid)
            if held is not None and self._stale_reason(held, now) is None:
                report["kept_in_progress"].append(str(path))
                return
        else:
            try:
                age = time.time() - path.lstat().st_mtime
            except FileNotFoundError:
                return
            if age < grace:
                report["kept_in_progress"].append(str(path))
                return
        if not remove_entry(path):
            return
        report["removed_temps"].append(str(path))
        logger.info("removed leftover temporary %s", path)

    # -- export -------------------------------------------------------------

    def export_json(self, path) -> None:
        """Write a human-readable JSON snapshot of the manifest, atomically.

        The document has ``format``, ``schema_version``, ``manifest`` (the
        database path), ``exported_at``, ``entries`` (sorted by id; NaN as
        null), ``claims`` and ``failures``.
        """
        with self._read() as conn:
            entries = [
                _entry_from_row(r)
                for r in conn.execute(f"SELECT {', '.join(_ENTRY_COLUMNS)} FROM entries ORDER BY partition_id")
            ]
            claims = [
                _claim_from_row(r)
                for r in conn.execute(f"SELECT {', '.join(_CLAIM_COLUMNS)} FROM claims ORDER BY partition_id")
            ]
            failures = conn.execute(
                "SELECT partition_id, run_id, error, failed_at, hostname FROM failures ORDER BY id"
            ).fetchall()
        doc = {
            "format": APPLICATION + ".export",
            "schema_version": SCHEMA_VERSION,
            "manifest": str(self.path),
            "exported_at": utc_now_iso(),
            "entries": [_json_safe(asdict(e)) for e in entries],
            "claims": [
                {
                    "partition_id": c.partition_id,
                    "run_id": c.run_id,
                    "hostname": c.hostname,
                    "pid": c.pid,
                    "claimed_at": _epoch_iso(c.claimed_at),
                    "expires_at": _epoch_iso(c.expires_at),
                }
                for c in claims
            ],
            "failures": [
                dict(zip(("partition_id", "run_id", "error", "failed_at", "hostname"), f)) for f in failures
            ],
        }
        atomic_write_json(path, doc)
