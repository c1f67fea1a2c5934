"""Scores stores: one Zarr v3 group of per-row scores per partition, published atomically.

Layout::

    zarr.json            attrs: caller's attrs + {"gmm_stream": {format marker, n_rows,
                         and "statistics": the partition's sufficient statistics, lossless}}
    log_likelihood/      (n,) float64
    component/           (n,) int32 or int64
    responsibility/      (n,) float64
    is_anomaly/          (n,) bool
    n_observed/          (n,) int, optional: the features each row had (rows scored with
                         missing values marginalised; absent when every row was complete)

A store is built in a temporary sibling and renamed into place with
:func:`gmm_engine.atomic.publish_dir` without replacing anything: a reader
sees no store or a complete one, and an existing store is never
overwritten, even by a concurrent writer.  A crash leaves at most a
temporary directory, which :meth:`pipeline.manifest.Manifest.reconcile`
deletes.  Local (or network-mounted POSIX) paths only; with a Dask cluster
the directory must be visible to the workers at the same path.

Every chunk is written, even when it holds only fill values, so that
:func:`read_scores` can tell a complete store from a damaged one.

:func:`write_scores` returns a :class:`ScoresSummary` (rows, anomalies,
mean log-likelihood) computed in the same pass that writes the arrays, so
the manifest records what the store holds without reading it back.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gmm_engine.atomic import publish_dir

from .zarr_v3 import write_group

logger = logging.getLogger(__name__)

__all__ = [
    "SCORES_FORMAT",
    "SCORES_FORMAT_VERSION",
    "SCORE_ARRAYS",
    "OPTIONAL_ARRAYS",
    "ScoresStoreError",
    "ScoresSummary",
    "write_scores",
    "read_scores",
    "is_scores_store",
    "scores_marker",
]

SCORES_FORMAT = "gmm-stream.scores"
SCORES_FORMAT_VERSION = 1
_MARKER_KEY = "gmm_stream"
#: Array name -> allowed dtype kind ("f" float, "i" signed integer, "b" bool).
SCORE_ARRAYS = {
    "log_likelihood": "f",
    "component": "i",
    "responsibility": "f",
    "is_anomaly": "b",
}
#: Arrays a store may hold besides SCORE_ARRAYS (listed in its marker when present).
OPTIONAL_ARRAYS = {
    "n_observed": "i",
}
_DEFAULT_CHUNK_ROWS = 1 << 20
_GUARD_NAME = ".write-guard"
#: the marker entry of a scores store holding the partition's sufficient statistics
STATISTICS = "statistics"
#: how an existing store is refused (after "<path> already exists and is never overwritten. ")
_EXISTS_HINT = (
    "To re-create it, remove it first (for a scores store: Manifest.forget(partition_id), then delete "
    "the store or let Manifest.reconcile remove it), or write to a new path"
)


class ScoresStoreError(ValueError):
    """A scores store is missing pieces, damaged, or not a scores store at all."""


@dataclass(frozen=True)
class ScoresSummary:
    """What a written scores store holds, for the manifest.

    Attributes
    ----------
    path : Path
        The store.
    n_rows : int
    n_anomalies : int
        Rows whose ``is_anomaly`` is True.
    mean_loglik : float
        Mean of the stored (float64) log-likelihood; NaN when there are no rows.
    statistics : gmm_engine.SufficientStatistics or None
        The partition's statistics under the scoring model, as stored.
    extra : dict
        The caller's further values of the same pass (e.g. drift counts), computed.
    """

    path: Path
    n_rows: int
    n_anomalies: int
    mean_loglik: float
    statistics: object = None
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------
# checking the inputs


def _is_dask(x) -> bool:
    return type(x).__module__.split(".")[0] == "dask"


def _check_attrs(attrs) -> None:
    if not isinstance(attrs, dict):
        raise TypeError(f"attrs must be a dict, got {type(attrs).__name__}")
    if _MARKER_KEY in attrs:
        raise ValueError(f"attrs key {_MARKER_KEY!r} is reserved for the store's own metadata; rename it")
    try:
        json.dumps(attrs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"attrs must be JSON-serialisable without NaN/infinity ({exc}); convert numpy scalars "
            "with float()/int() and NaN to None"
        ) from exc


def _check_dtype(name: str, kind: str, x):
    """``x`` in its stored dtype (float64, int32/int64, bool), or ValueError naming the cast."""
    dt = np.dtype(x.dtype)
    if kind == "f":
        if dt.kind not in "f":
            raise ValueError(f"{name} must be floating point, got dtype {dt}; cast it with .astype('float64')")
        return x if dt == np.float64 else x.astype(np.float64)
    if kind == "i":
        if dt.kind not in "iu":
            raise ValueError(
                f"component must be an integer array (component index per row), got dtype {dt}; "
                "cast it with .astype('int64')"
            )
        return x if dt in (np.dtype(np.int32), np.dtype(np.int64)) else x.astype(np.int64)
    if dt != np.bool_:
        raise ValueError(
            f"is_anomaly must be a boolean array, got dtype {dt}; compare against the threshold "
            "(for example log_likelihood < threshold) or cast with .astype(bool)"
        )
    return x


def _check_score_inputs(arrays: dict) -> tuple[dict, int]:
    """The arrays in their stored dtypes and their common length."""
    prepared = {}
    n = None
    kinds = {**SCORE_ARRAYS, **{k: v for k, v in OPTIONAL_ARRAYS.items() if arrays.get(k) is not None}}
    for name, kind in kinds.items():
        x = arrays[name]
        if not _is_dask(x):
            x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(
                f"{name} must be a 1-D array with one value per row, got shape {x.shape}; "
                "pass one score per input row"
            )
        x = _check_dtype(name, kind, x)
        length = x.shape[0]
        if isinstance(length, float) and math.isnan(length):
            raise ValueError(
                f"{name} is a Dask array of unknown length; call .compute_chunk_sizes() on it first"
            )
        if n is None:
            n = int(length)
        elif int(length) != n:
            lengths = {k: arrays[k].shape[0] for k in kinds}
            raise ValueError(
                f"score arrays must have equal lengths, got {lengths}; they must all come from "
                "the same input rows"
            )
        prepared[name] = x
    return prepared, n


def _chunk_rows(arrays: dict, n: int, chunk_rows: int | None) -> int:
    if chunk_rows is None:
        first = next((x for x in arrays.values() if _is_dask(x)), None)
        if first is not None:
            chunk_rows = first.chunks[0][0] if first.chunks[0] else 1
        else:
            chunk_rows = min(n, _DEFAULT_CHUNK_ROWS)
    return max(1, int(chunk_rows))


# ----------------------------------------------------------------------------
# writing


class _GuardedTarget:
    """Write target for ``da.store`` that stops writing once the store is abandoned.

    When a Dask computation fails, ``compute`` raises at the first error
    while tasks already running elsewhere keep going; their writes would
    re-create the temporary directory after it was removed (Zarr creates
    parent directories).  Each write therefore takes a shared ``flock`` on a
    guard file inside the temporary directory and skips the write if the
    guard has been unlinked; :func:`_abandon` takes the exclusive lock
    (waiting for writes in flight) and unlinks the guard.
    """

    def __init__(self, array, guard: str):
        self.array = array
        self.guard = guard

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def ndim(self):
        return self.array.ndim

    def __setitem__(self, key, value):
        try:
            fd = os.open(self.guard, os.O_RDONLY)
        except FileNotFoundError:
            logger.debug("skipping a write to abandoned store (guard %s is gone)", self.guard)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.fstat(fd).st_nlink == 0:
                logger.debug("skipping a write to abandoned store (guard %s unlinked)", self.guard)
                return
            self.array[key] = value
        finally:
            os.close(fd)  # releases the lock


def _abandon(guard: Path) -> None:
    """Wait for guarded writes in flight, then make all later ones no-ops."""
    try:
        fd = os.open(guard, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.unlink(guard)
    finally:
        os.close(fd)


def _write_arrays(group, arrays: dict, n: int, chunk_rows: int, guard: Path, later: dict) -> tuple:
    """Create the arrays in ``group`` and fill them; the mean log-likelihood, anomaly count and ``later``, computed.

    Dask inputs are written by one ``dask.array.store`` computed together
    with the reductions and with ``later`` (values of the same pass, such as
    the partition's statistics), so every chunk is scored once and the data
    flows from the workers straight into the store.
    """
    targets, sources = [], []
    for name, x in arrays.items():
        z = group.create_array(name, shape=(n,), chunks=(chunk_rows,), dtype=x.dtype,
                               config={"write_empty_chunks": True})
        if _is_dask(x):
            x = arrays[name] = x.rechunk(chunk_rows)  # whole Zarr chunks per task
            sources.append(x)
            targets.append(_GuardedTarget(z, str(guard)))
        elif n:
            z[:] = x
    # the summary of the very arrays stored: NumPy values, or lazy reductions
    # computed in one graph with the store
    ll, flag = arrays["log_likelihood"], arrays["is_anomaly"]
    mean, count = (ll.mean() if n else math.nan), flag.sum()
    names = list(later)
    values = list(later.values())
    if sources or any(hasattr(v, "__dask_graph__") for v in values):
        import dask.array as da

        from gmm_engine import compute

        try:
            # Chunks are aligned with the Zarr chunks, so no lock is needed.
            stored = da.store(sources, targets, lock=False, compute=False) if sources else None
            _, mean, count, *values = compute(stored, mean, count, *values)
        except BaseException:
            _abandon(guard)
            raise
    return float(mean), int(count), dict(zip(names, values))


def _mean_loglik(arrays: dict, n: int) -> float:
    """The mean stored log-likelihood of NumPy arrays (NaN for no rows)."""
    return float(arrays["log_likelihood"].mean()) if n else math.nan


def _write_lazy(tmp: Path, arrays: dict, n: int, chunk_rows: int, later: dict):
    """Create the group with zarr and write lazy arrays into it (:func:`_write_arrays`); (group, mean, count, later)."""
    import zarr

    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    guard = tmp / _GUARD_NAME
    guard.touch()
    mean, count, computed = _write_arrays(group, arrays, n, chunk_rows, guard, later)
    guard.unlink()
    return group, mean, count, computed


def _statistics_entry(stats) -> dict:
    """The partition's sufficient statistics as the marker keeps them: JSON lists and scalars, lossless.

    Python writes every float64 as its shortest round-tripping decimal, so
    the lists read back bit for bit; the statistics are small (K x D x D at
    most) and travel with the one metadata write the store makes anyway.
    """
    arrays, scalars = stats.to_arrays()
    return {**scalars, "arrays": {name: {"shape": list(a.shape), "values": a.ravel().tolist()}
                                  for name, a in arrays.items()}}


def write_scores(final_path, *, log_likelihood, component, responsibility, is_anomaly, attrs: dict,
                 chunk_rows: int | None = None, statistics=None, extra: dict | None = None,
                 durable: bool = True, n_observed=None) -> ScoresSummary:
    """Write per-row scores as a Zarr v3 group, atomically.

    Parameters
    ----------
    final_path : str or PathLike
        Local path of the store to create; must not exist.
    log_likelihood : ndarray or dask array, shape (n,)
        float64 (other float dtypes are widened).
    component : ndarray or dask array, shape (n,)
        int32 or int64 (other integer dtypes become int64).
    responsibility : ndarray or dask array, shape (n,)
        float64, the responsibility of the chosen component.
    is_anomaly : ndarray or dask array, shape (n,)
        bool.
    attrs : dict
        JSON-serialisable metadata (model version, threshold, source URL ...).
        The key ``"gmm_stream"`` is reserved.
    n_observed : ndarray or dask array, shape (n,), optional
        int: the features each row had, for rows scored with missing values
        marginalised; stored as the array ``n_observed``.
    chunk_rows : int, optional
        Rows per Zarr chunk.  Default: the first Dask chunk length when any
        input is a Dask array, else ``min(n, 2**20)``.  Dask inputs are
        rechunked to it so each task writes whole chunks and no two tasks
        touch the same chunk.
    statistics : gmm_engine.SufficientStatistics or its lazy form, optional
        The partition's statistics under the scoring model (``score_rows(...,
        with_stats=True)``), stored in the group ``statistics`` so that a
        model update never reads the partition again; lazy ones are computed
        in the same pass as the scores.
    extra : dict, optional
        Further values of the same pass (lazy or not), computed with the
        scores and returned in ``ScoresSummary.extra``; not stored.
    durable : bool
        fsync the store before publishing it (default).  With False it is
        still published whole or not at all; the caller flushes it
        (``gmm_engine.atomic.sync_filesystem``, once for many stores) before
        recording it anywhere.

    Returns
    -------
    ScoresSummary
        ``final_path``, the row count, the anomaly count and the mean
        stored log-likelihood, computed while writing.

    Raises
    ------
    ValueError, TypeError
        Bad shapes, dtypes or attrs (checked before anything is written).
    FileExistsError
        ``final_path`` exists.

    Notes
    -----
    Dask inputs are stored with one ``dask.array.store`` into arrays
    created beforehand with ``create_array``, so the data is never
    gathered on the client.  If the computation fails, writes still in
    flight on other threads or workers are waited for and later ones are
    skipped (see :class:`_GuardedTarget`), so the temporary directory is
    really gone when the exception reaches the caller.  NumPy inputs
    (with values of ``extra`` and ``statistics`` already computed) are
    written file by file as zarr would write them (:mod:`pipeline.zarr_v3`).
    """
    _check_attrs(attrs)
    arrays, n = _check_score_inputs(
        dict(log_likelihood=log_likelihood, component=component, responsibility=responsibility,
             is_anomaly=is_anomaly, n_observed=n_observed)
    )
    chunk_rows = _chunk_rows(arrays, n, chunk_rows)

    later = {**(extra or {}), **({STATISTICS: statistics} if statistics is not None else {})}
    lazy = any(_is_dask(x) for x in arrays.values()) or any(hasattr(v, "__dask_graph__") for v in later.values())
    with publish_dir(final_path, exists_hint=_EXISTS_HINT, durable=durable) as tmp:
        if lazy:
            group, mean, count, computed = _write_lazy(tmp, arrays, n, chunk_rows, later)
        else:
            mean, count, computed = _mean_loglik(arrays, n), int(arrays["is_anomaly"].sum()), dict(later)
        stats = computed.pop(STATISTICS, None)
        marker = {"format": SCORES_FORMAT, "format_version": SCORES_FORMAT_VERSION, "n_rows": n,
                  "arrays": list(arrays)}
        if stats is not None:
            marker[STATISTICS] = _statistics_entry(stats)
        group_attrs = {**attrs, _MARKER_KEY: marker}
        if lazy:
            # one metadata write (attrs.update would rewrite zarr.json once per key)
            group.update_attributes(group_attrs)
        else:
            # in memory: the files themselves, without zarr's per-call round trips (~10x faster when small)
            write_group(tmp, arrays, chunk_rows, group_attrs)
    logger.info("wrote scores for %d rows to %s", n, final_path)
    return ScoresSummary(Path(final_path), n, count, mean, stats, computed)


# ----------------------------------------------------------------------------
# reading


def _store_fail(path, problem, fix="delete the store and score the partition again"):
    raise ScoresStoreError(f"Scores store {path} is unusable: {problem}. To fix: {fix}.")


def _stored_arrays(marker) -> dict:
    """Name -> dtype kind of the arrays a store's marker says it holds (the required ones at least)."""
    listed = marker.get("arrays") if isinstance(marker.get("arrays"), list) else []
    return {**SCORE_ARRAYS, **{k: v for k, v in OPTIONAL_ARRAYS.items() if k in listed}}


def _check_arrays(path, group, n: int, kinds: dict) -> None:
    present = set(group.array_keys())
    for name, kind in kinds.items():
        if name not in present:
            _store_fail(path, f"array {name!r} is missing")
        z = group[name]
        if z.shape != (n,):
            _store_fail(path, f"array {name!r} has shape {z.shape}, expected ({n},)")
        if np.dtype(z.dtype).kind != kind:
            _store_fail(path, f"array {name!r} has dtype {z.dtype}, expected kind {kind!r}")
        # Every chunk is written (write_empty_chunks=True), so a missing chunk
        # means the store was damaged after it was published.
        if z.nchunks_initialized != z.nchunks:
            _store_fail(path, f"array {name!r} has {z.nchunks_initialized} of its {z.nchunks} chunks")


def _open_checked(path):
    """Open a scores store and check its structure; returns ``(group, marker)``."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            errno.ENOENT,
            f"Scores store {path} does not exist; check the path or score the partition first",
            str(path),
        )
    if not (path / "zarr.json").is_file():
        _store_fail(path, "it has no zarr.json, so it is not a (complete) Zarr store")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for unreadable metadata
        _store_fail(path, f"its Zarr metadata cannot be read ({type(exc).__name__}: {exc})")
    marker = group.attrs.get(_MARKER_KEY)
    if not isinstance(marker, dict) or marker.get("format") != SCORES_FORMAT:
        _store_fail(
            path,
            f"its attributes lack the {SCORES_FORMAT!r} marker (not a gmm-stream scores store)",
            "pass a store written by pipeline.scores_store.write_scores",
        )
    version = marker.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= SCORES_FORMAT_VERSION:
        _store_fail(path, f"format_version {version!r} is not supported (supports 1..{SCORES_FORMAT_VERSION})",
                    "upgrade gmm-stream or re-score with this release")
    n = marker.get("n_rows")
    if not isinstance(n, int) or n < 0:
        _store_fail(path, f"n_rows {n!r} in its attributes is not a non-negative integer")
    _check_arrays(path, group, n, _stored_arrays(marker))
    return group, marker


def scores_marker(path) -> dict | None:
    """The ``gmm_stream`` marker of the store at ``path``, or None (reads zarr.json only; no Zarr import)."""
    try:
        doc = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    marker = (doc.get("attributes") or {}).get(_MARKER_KEY) if isinstance(doc, dict) else None
    if isinstance(marker, dict) and marker.get("format") == SCORES_FORMAT:
        return marker
    return None


def read_scores_attrs(path) -> dict:
    """The caller's attributes of a scores store (source, model version, threshold ...), no arrays read.

    Raises
    ------
    ScoresStoreError
        ``path`` is not a scores store.
    """
    if scores_marker(path) is None:
        _store_fail(path, f"it has no {SCORES_FORMAT!r} marker (not a gmm-stream scores store)",
                    "pass a store written by pipeline.scores_store.write_scores")
    doc = json.loads((Path(path) / "zarr.json").read_text())
    return {k: v for k, v in doc["attributes"].items() if k != _MARKER_KEY}


def is_scores_store(path) -> bool:
    """Quick check (metadata and chunk count, no data read): is ``path`` a complete scores store?"""
    try:
        _open_checked(path)
    except (FileNotFoundError, ScoresStoreError):
        return False
    return True


def read_scores(path) -> dict:
    """Read a scores store written by :func:`write_scores`.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    dict
        ``log_likelihood`` (n,) float64, ``component`` (n,) int,
        ``responsibility`` (n,) float64, ``is_anomaly`` (n,) bool as NumPy
        arrays, ``n_observed`` (n,) int when the store has it; ``attrs``
        (the caller's attrs) and ``n_rows``.

    Raises
    ------
    FileNotFoundError
        No store at ``path``.
    ScoresStoreError
        The store is incomplete, damaged or foreign; the message says what is wrong.
    """
    group, marker = _open_checked(path)
    out = {}
    for name in _stored_arrays(marker):
        try:
            out[name] = np.asarray(group[name][...])
        except Exception as exc:  # codec errors on damaged chunks come in many types
            _store_fail(path, f"array {name!r} cannot be decoded ({type(exc).__name__}: {exc})")
    out["attrs"] = {k: v for k, v in group.attrs.items() if k != _MARKER_KEY}
    out["n_rows"] = marker["n_rows"]
    return out


def read_statistics(path):
    """The sufficient statistics a scores store holds (``gmm_engine.SufficientStatistics``), or None.

    Raises
    ------
    ScoresStoreError
        The store is not a scores store, or its statistics are damaged.
    """
    from gmm_engine import SufficientStatistics

    marker = scores_marker(path)
    if marker is None:
        _store_fail(path, f"it has no {SCORES_FORMAT!r} marker (not a gmm-stream scores store)",
                    "pass a store written by pipeline.scores_store.write_scores")
    entry = marker.get(STATISTICS)
    if entry is None:
        return None
    try:
        arrays = {name: np.asarray(a["values"], dtype=np.float64).reshape(a["shape"])
                  for name, a in entry["arrays"].items()}
        return SufficientStatistics.from_arrays(arrays, {k: v for k, v in entry.items() if k != "arrays"})
    except (ValueError, KeyError, TypeError) as exc:
        _store_fail(path, f"its statistics cannot be read ({exc})")
