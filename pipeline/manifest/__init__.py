"""The scoring manifest: which partitions are scored, claimed, or failed.

The manifest is one SQLite database (standard library ``sqlite3``) in WAL
mode.  Every write runs in its own ``BEGIN IMMEDIATE`` transaction on a
fresh connection with a busy timeout, so any number of threads and
processes on one host (and several concurrent scoring runs) can share it.
SQLite over network filesystems is not reliable: keep the manifest on a
local disk of the host that runs the flows.

:class:`Manifest` is the one object callers use; each of its concerns has
a module of its own:

==============  =============================================================
``schema``      tables, connections, the "is this our database" checks, WAL
``results``     :class:`ManifestEntry` (checked field by field) and failures
``owners``      process liveness: host key, ``/proc``, is the owner alive
``claims``      :class:`Claim`: take, renew, release, stale claims
``reconcile``   crash recovery against the outputs directory, in named steps
``export``      the JSON snapshot
``errors``      the exceptions
==============  =============================================================

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

import logging
import time
from pathlib import Path

from ..partitions import validate_partition_id
from . import claims as _claims
from . import results as _results
from .claims import Claim
from .errors import AlreadyScored, ClaimConflict, ClaimLost, ManifestError, NotAManifestError
from .export import export_json as _export_json
from .owners import current_owner
from .reconcile import TEMP_GRACE_SECONDS
from .reconcile import reconcile as _reconcile
from .results import ManifestEntry, check_entry, check_run_id
from .schema import APPLICATION, SCHEMA_VERSION, open_database, utc_now_iso

logger = logging.getLogger(__name__)

__all__ = [
    "APPLICATION",
    "SCHEMA_VERSION",
    "TEMP_GRACE_SECONDS",
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
        self._db = open_database(self.path, self.timeout)

    def __repr__(self) -> str:
        return f"Manifest({str(self.path)!r})"

    # -- claims -------------------------------------------------------------

    def _get_claim(self, conn, partition_id: str) -> Claim | None:
        # the one read of a claim row inside claim()/record_success()'s transaction
        return _claims.get_claim(conn, partition_id)

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
        check_run_id(run_id)
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
        owner = current_owner()
        now = self._clock()
        with self._db.write() as conn:
            if _results.is_scored(conn, partition_id):
                return False
            held = self._get_claim(conn, partition_id)
            return _claims.take(conn, held, partition_id, run_id, owner=owner, now=now,
                                lease_seconds=lease_seconds)

    def claim_many(self, partition_ids, run_id: str, *, lease_seconds: float = 600) -> list[str]:
        """:meth:`claim` for several partitions in one transaction; the ids this run now holds, in order.

        One write (and one sync of the database) instead of one per
        partition, for runs that score many small partitions.
        """
        ids = [validate_partition_id(pid) for pid in partition_ids]
        check_run_id(run_id)
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
        owner = current_owner()
        now = self._clock()
        held_now = []
        with self._db.write() as conn:
            for pid in ids:
                if _results.is_scored(conn, pid):
                    continue
                if _claims.take(conn, self._get_claim(conn, pid), pid, run_id, owner=owner, now=now,
                                lease_seconds=lease_seconds):
                    held_now.append(pid)
        return held_now

    def renew(self, partition_id: str, run_id: str) -> None:
        """Extend this run's lease on ``partition_id`` by its lease length from now.

        Raises
        ------
        ClaimLost
            The run no longer holds the claim (taken over after going stale,
            released, or already recorded): stop working on the partition.
        """
        validate_partition_id(partition_id)
        check_run_id(run_id)
        now = self._clock()
        with self._db.write() as conn:
            _claims.renew(conn, self._get_claim(conn, partition_id), partition_id, run_id, now)

    def release(self, partition_id: str, run_id: str) -> None:
        """Drop this run's claim on ``partition_id`` (no-op if it holds none)."""
        validate_partition_id(partition_id)
        check_run_id(run_id)
        with self._db.write() as conn:
            _claims.delete_claim(conn, partition_id, run_id)

    def claims(self) -> list[Claim]:
        """All current claims (live or stale), sorted by partition id."""
        with self._db.read() as conn:
            return _claims.all_claims(conn)

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
        values = check_entry(entry)
        pid = entry.partition_id
        now = self._clock()
        with self._db.write() as conn:
            _results.refuse_if_scored(conn, pid)
            _claims.refuse_foreign_live(self._get_claim(conn, pid), pid, entry.run_id, now)
            _results.insert_entry(conn, values)
            _claims.delete_claim(conn, pid)
            _results.clear_failures(conn, pid)
        logger.info("recorded partition %s (%d rows, %d anomalies)", pid, entry.n_rows, entry.n_anomalies)

    def record_successes(self, entries) -> list:
        """:meth:`record_success` for several entries in one transaction.

        Returns
        -------
        list of (ManifestEntry, ManifestError or None)
            For each entry, None when it was recorded, or the error (AlreadyScored,
            ClaimConflict) that kept it out; the others are recorded regardless.
        """
        checked = [(e, check_entry(e)) for e in entries]
        now = self._clock()
        out = []
        with self._db.write() as conn:
            for entry, values in checked:
                pid = entry.partition_id
                try:
                    _results.refuse_if_scored(conn, pid)
                    _claims.refuse_foreign_live(self._get_claim(conn, pid), pid, entry.run_id, now)
                except ManifestError as exc:
                    out.append((entry, exc))
                    continue
                _results.insert_entry(conn, values)
                _claims.delete_claim(conn, pid)
                _results.clear_failures(conn, pid)
                out.append((entry, None))
        logger.info("recorded %d partitions", sum(err is None for _, err in out))
        return out

    def record_failure(self, partition_id: str, run_id: str, error: str) -> None:
        """Append a failed attempt to the history and drop this run's claim."""
        validate_partition_id(partition_id)
        check_run_id(run_id)
        error = str(error)
        with self._db.write() as conn:
            _results.add_failure(conn, partition_id, run_id, error)
            _claims.delete_claim(conn, partition_id, run_id)
        logger.warning("partition %s failed in run %s: %s", partition_id, run_id, error.splitlines()[0] if error else "")

    def scored_ids(self) -> set[str]:
        """Ids of all scored partitions."""
        with self._db.read() as conn:
            return _results.scored_ids(conn)

    def entries(self) -> list[ManifestEntry]:
        """All entries, sorted by partition id."""
        with self._db.read() as conn:
            return _results.all_entries(conn)

    def get(self, partition_id: str) -> ManifestEntry | None:
        """The entry for ``partition_id``, or None."""
        with self._db.read() as conn:
            return _results.get_entry(conn, partition_id)

    def failures(self, partition_id: str | None = None) -> list[dict]:
        """Failed attempts since each partition was last scored, oldest first.

        Returns
        -------
        list of dict
            Keys ``partition_id``, ``run_id``, ``error``, ``failed_at`` (ISO UTC), ``hostname``.
        """
        with self._db.read() as conn:
            return _results.failures(conn, partition_id)

    def set_drift(self, partition_id: str, drift: dict) -> None:
        """Replace the drift verdict of a recorded partition (the sequential detector adds its step).

        Raises
        ------
        KeyError
            The partition has no entry.
        """
        validate_partition_id(partition_id)
        with self._db.write() as conn:
            if not _results.set_drift(conn, partition_id, drift):
                raise KeyError(f"partition {partition_id!r} has no manifest entry to add a drift verdict to")

    def record_update(self, *, parent: str, version: str | None, rule: str, partitions, n_rows: int,
                      promoted: bool, reason: str, run_id: str) -> None:
        """Record a model update attempt: the parent version, the candidate (if any), why and from what."""
        with self._db.write() as conn:
            _results.add_update(conn, parent=parent, version=version, rule=rule, partitions=list(partitions),
                                n_rows=n_rows, promoted=promoted, reason=reason, run_id=run_id)

    def updates(self) -> list[dict]:
        """Every model update attempt, oldest first (see :data:`pipeline.manifest.schema.UPDATE_COLUMNS`)."""
        with self._db.read() as conn:
            return _results.updates(conn)

    def forget(self, partition_id: str) -> None:
        """Delete the entry of ``partition_id`` so it is scored again.

        Only the manifest changes: the old output store then has no entry, so
        the next scoring would refuse to overwrite it until it is deleted;
        :meth:`reconcile` deletes it.
        """
        validate_partition_id(partition_id)
        with self._db.write() as conn:
            n = _results.delete_entry(conn, partition_id)
        if n:
            logger.info("forgot partition %s", partition_id)

    # -- crash recovery and export --------------------------------------------

    def reconcile(self, outputs_dir, *, temp_grace_seconds: float = TEMP_GRACE_SECONDS,
                  other_dirs=()) -> dict:
        """Make the manifest and the output directory agree after a crash.

        Safe to run while other runs are scoring: anything belonging to a
        live claim is left alone.  The steps are those of
        :mod:`pipeline.manifest.reconcile`: stale claims released;
        temporary entries of ``outputs_dir`` swept (those of a partition
        store unless its claim is live, any others only when older than
        ``temp_grace_seconds``; a replaced entry whose replacement never
        arrived is put back); entries whose output store does not exist
        forgotten (relative ``output_path`` values are taken relative to
        ``outputs_dir``); orphan stores (scores marker, no entry, no live
        claim) removed; ``other_dirs`` swept.

        Entries the manifest does not own (no scores marker, names that are
        not partition ids, stores of a partition whose entry points to
        another path) are never deleted; they are listed under ``ignored``.

        Parameters
        ----------
        outputs_dir : str or PathLike
            The directory that holds the scores stores; must exist.
        temp_grace_seconds : float
        other_dirs : iterable of str or PathLike, optional
            Other directories published through :mod:`gmm_engine.atomic`
            (models, reports ...): each is swept with
            ``gmm_engine.atomic.sweep(d, older_than_seconds=temp_grace_seconds)``.
            A missing one is fine; ``outputs_dir`` itself is refused.

        Returns
        -------
        dict
            Lists ``released_stale_claims`` (ids), ``forgotten`` (ids),
            ``removed_orphans`` (paths), ``removed_temps`` (paths),
            ``kept_in_progress`` (paths) and ``ignored`` ((path, reason)),
            all of ``outputs_dir``; ``restored`` (final paths put back, in
            ``outputs_dir`` and ``other_dirs``); ``removed_other_temps`` and
            ``kept_other_temps`` (paths in ``other_dirs``).

        Raises
        ------
        FileNotFoundError
            ``outputs_dir`` does not exist (nothing is changed: every entry
            would otherwise look lost).
        ValueError
            ``other_dirs`` includes ``outputs_dir`` (nothing is changed).
        """
        return _reconcile(self._db, outputs_dir, now=self._clock(), temp_grace_seconds=temp_grace_seconds,
                          other_dirs=other_dirs)

    def export_json(self, path) -> None:
        """Write a human-readable JSON snapshot of the manifest, atomically.

        The document has ``format``, ``schema_version``, ``manifest`` (the
        database path), ``exported_at``, ``entries`` (sorted by id; NaN as
        null), ``claims`` and ``failures``.
        """
        _export_json(self._db, path)
