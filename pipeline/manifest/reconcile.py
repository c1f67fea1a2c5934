"""Crash recovery: make the manifest and the directories it describes agree again.

A run can die at any moment: while it holds claims, while a scores store
is being written (a temporary ``.<id>.zarr.tmp-<hex>`` is left), between
publishing a store and recording it (an *orphan* store), or after someone
deleted a recorded store.  :func:`reconcile` repairs each case in one
named step, in this order:

1. :func:`_release_stale_claims`  claims whose lease expired or whose owner
   is gone are deleted, so their partitions can be scored again.
2. :func:`_sweep_outputs`  temporary entries of the outputs directory
   (:func:`gmm_engine.atomic.parse_temp_name`: ``tmp`` and ``old`` roles)
   go through :func:`gmm_engine.atomic.sweep`.  An entry for a partition
   store is kept while that partition has a live claim (its writer is at
   work) and otherwise handled at once; any other entry (from atomic file
   writes) only once older than the grace period.  A replaced entry whose
   replacement never arrived is put back, before step 3 looks for it.
3. :func:`_forget_lost_entries`  entries whose output store does not exist
   are deleted, so the partition is scored again.
4. :func:`_remove_orphans`  ``<id>.zarr`` stores that carry the scores
   marker but whose partition has no entry and no live claim are renamed
   to a temporary name, then deleted: nobody sees a half-deleted store.
5. :func:`_sweep_other_dirs`  the other publishing directories a caller
   names are swept with the grace period alone (no claims there).

What the manifest does not own (no scores marker, names that are not
partition ids, stores of a partition whose entry points elsewhere, remote
output paths) is never deleted; it is listed under ``ignored``.  Anything
belonging to a live claim is left alone, so reconcile may run while other
runs are scoring.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from gmm_engine.atomic import TempName, parse_temp_name, sweep, temp_name

from ..partitions import UnsafePartitionName, validate_partition_id
from ..scores_store import scores_marker
from . import claims, results
from .schema import Database

logger = logging.getLogger(__name__)

#: Temporaries that belong to no partition (e.g. from gmm_engine.atomic.write_json)
#: are only removed by reconcile when older than this; their writers finish in
#: milliseconds.
TEMP_GRACE_SECONDS = 3600.0

#: the report's keys, each a list; see :meth:`pipeline.manifest.Manifest.reconcile`
REPORT_KEYS = (
    "released_stale_claims",
    "forgotten",
    "removed_orphans",
    "removed_temps",
    "kept_in_progress",
    "ignored",
    "restored",
    "removed_other_temps",
    "kept_other_temps",
)


def reconcile(db: Database, outputs_dir, *, now: float, temp_grace_seconds: float, other_dirs=()) -> dict:
    """The steps of the module docs, in order; see :meth:`pipeline.manifest.Manifest.reconcile`."""
    outputs_dir = _existing_outputs_dir(outputs_dir)
    others = _other_dirs(other_dirs, outputs_dir)
    report: dict = {key: [] for key in REPORT_KEYS}
    _release_stale_claims(db, now, report)
    _sweep_outputs(db, outputs_dir, now, temp_grace_seconds, report)
    referenced = _forget_lost_entries(db, outputs_dir, report)
    _remove_orphans(db, outputs_dir, referenced, now, report)
    _sweep_other_dirs(others, temp_grace_seconds, report)
    return report


def _existing_outputs_dir(outputs_dir) -> Path:
    outputs_dir = Path(outputs_dir).expanduser().absolute()
    if not outputs_dir.is_dir():
        raise FileNotFoundError(
            f"Outputs directory {outputs_dir} does not exist; nothing was changed. Fix the path "
            "(or mount the volume): reconciling against a missing directory would forget every entry."
        )
    return outputs_dir


def _other_dirs(other_dirs, outputs_dir: Path) -> list[Path]:
    if isinstance(other_dirs, (str, os.PathLike)):
        raise TypeError(
            f"other_dirs must be an iterable of directories, got the single path {other_dirs!r}; "
            "wrap it in a list"
        )
    dirs = [Path(d).expanduser().absolute() for d in other_dirs]
    if outputs_dir in dirs:
        raise ValueError(
            f"other_dirs includes the outputs directory {outputs_dir}; nothing was changed. Leave it "
            "out: it is always reconciled, with the claims of its partitions taken into account."
        )
    return dirs


def _resolve(outputs_dir: Path, output_path: str) -> Path:
    """An entry's output path, absolute; relative paths are taken relative to ``outputs_dir``."""
    p = Path(output_path).expanduser()
    return Path(os.path.abspath(p if p.is_absolute() else outputs_dir / p))


def _store_partition(name: str) -> str | None:
    """The partition id of a store name ``<id>.zarr``, or None for any other name."""
    if not name.endswith(".zarr"):
        return None
    pid = name[: -len(".zarr")]
    try:
        validate_partition_id(pid)
    except UnsafePartitionName:
        return None
    return pid


# ----------------------------------------------------------------------------
# the steps


def _release_stale_claims(db: Database, now: float, report: dict) -> None:
    with db.write() as conn:
        report["released_stale_claims"].extend(claims.release_stale(conn, now))


def _sweep_outputs(db: Database, outputs_dir: Path, now: float, grace: float, report: dict) -> None:
    def keep(path: Path, name: TempName) -> bool:
        pid = _store_partition(name.target)
        if pid is not None:
            with db.read() as conn:
                return claims.live_claim(conn, pid, now) is not None
        try:
            age = time.time() - path.lstat().st_mtime
        except FileNotFoundError:
            return False  # removed concurrently: nothing to keep
        return age < grace

    swept = sweep(outputs_dir, keep=keep)
    report["removed_temps"].extend(swept["removed"])
    report["kept_in_progress"].extend(swept["kept"])
    report["restored"].extend(swept["restored"])


def _forget_lost_entries(db: Database, outputs_dir: Path, report: dict) -> set[Path]:
    """Forget entries whose output is missing; the outputs of the others (absolute paths)."""
    with db.read() as conn:
        entries = results.all_entries(conn)
    referenced: set[Path] = set()
    for entry in entries:
        if "://" in entry.output_path:
            report["ignored"].append((entry.output_path, "remote output paths are not checked"))
            continue
        out = _resolve(outputs_dir, entry.output_path)
        if out.exists():
            referenced.add(out)
            continue
        with db.write() as conn:
            # Delete only the exact entry we looked at, and only if its
            # output is still missing now that we hold the write lock.
            n = 0 if out.exists() else results.delete_exact_entry(conn, entry)
        if n:
            report["forgotten"].append(entry.partition_id)
            logger.warning("forgot partition %s: its output %s is missing", entry.partition_id, out)
    return referenced


def _remove_orphans(db: Database, outputs_dir: Path, referenced: set[Path], now: float, report: dict) -> None:
    for dirent in sorted(os.scandir(outputs_dir), key=lambda e: e.name):
        if parse_temp_name(dirent.name) is not None:
            continue  # what _sweep_outputs left is in progress
        if not dirent.name.endswith(".zarr") or not dirent.is_dir(follow_symlinks=False):
            continue  # not an output store (exports, notes ...): not ours to judge
        path = Path(dirent.path)
        pid = _store_partition(dirent.name)
        if pid is None:
            report["ignored"].append((str(path), "name is not <partition id>.zarr"))
        elif path in referenced:
            continue
        elif scores_marker(path) is None:
            report["ignored"].append((str(path), "not a gmm-stream scores store (no scores marker)"))
        else:
            _remove_orphan(db, outputs_dir, path, pid, now, report)


def _remove_orphan(db: Database, outputs_dir: Path, path: Path, pid: str, now: float, report: dict) -> None:
    with db.read() as conn:
        recorded = results.get_entry(conn, pid)
        held = claims.live_claim(conn, pid, now)
    if recorded is not None:
        if _resolve(outputs_dir, recorded.output_path) != path:
            report["ignored"].append((str(path), f"partition {pid} is recorded with output {recorded.output_path}"))
        return  # recorded since we listed the entries
    if held is not None:
        report["kept_in_progress"].append(str(path))
        return
    trash = path.parent / temp_name(path.name)
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return  # removed concurrently
    shutil.rmtree(trash, ignore_errors=True)
    report["removed_orphans"].append(str(path))
    logger.warning("removed output %s: partition %s has no manifest entry", path, pid)


def _sweep_other_dirs(dirs: list[Path], grace: float, report: dict) -> None:
    for d in dirs:
        swept = sweep(d, older_than_seconds=grace)
        report["removed_other_temps"].extend(swept["removed"])
        report["kept_other_temps"].extend(swept["kept"])
        report["restored"].extend(swept["restored"])
