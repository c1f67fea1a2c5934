"""Atomic output stores and files: nothing half-written is ever visible.

A scores store is written into a hidden temporary sibling
``.<name>.tmp-<32 hex>`` of its final path, every file and directory in it
is fsynced, and it is renamed into place in one step (``renameat2`` with
``RENAME_NOREPLACE`` where the kernel offers it, so an existing store is
never replaced, even by a concurrent writer).  A reader therefore sees
either no store or a complete one.  A crash leaves at most a temporary
directory, which :func:`remove_stale_temps` (or
:meth:`pipeline.manifest.Manifest.reconcile`) deletes.

These functions work on local (or network-mounted POSIX) paths only:
object stores have no atomic directory rename.  With a Dask cluster the
output directory must be visible to the workers at the same path.

Layout of a scores store (Zarr v3 group)::

    zarr.json            attrs: caller's attrs + {"gmm_stream": {format marker, n_rows}}
    log_likelihood/      (n,) float64
    component/           (n,) int32 or int64
    responsibility/      (n,) float64
    is_anomaly/          (n,) bool

Every chunk is written, even when it holds only fill values, so that
:func:`read_scores` can tell a complete store from a damaged one.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "SCORES_FORMAT",
    "SCORES_FORMAT_VERSION",
    "SCORE_ARRAYS",
    "ScoresStoreError",
    "atomic_store",
    "write_scores",
    "read_scores",
    "is_scores_store",
    "temp_name_for",
    "parse_temp_name",
    "remove_stale_temps",
    "atomic_write_text",
    "atomic_write_json",
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
_DEFAULT_CHUNK_ROWS = 1 << 20
_GUARD_NAME = ".write-guard"
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<token>[0-9a-f]{32})$")


class ScoresStoreError(ValueError):
    """A scores store is missing pieces, damaged, or not a scores store at all."""


# ----------------------------------------------------------------------------
# temp names, fsync and no-replace rename


def temp_name_for(final_name: str) -> str:
    """Return a fresh temporary sibling name ``.<final_name>.tmp-<uuid hex>``."""
    return f".{final_name}.tmp-{uuid.uuid4().hex}"


def parse_temp_name(name: str) -> str | None:
    """Return the final name a temporary entry was meant for, or None if ``name`` is not one."""
    m = _TEMP_RE.match(name)
    return m.group("target") if m else None


def _fsync_path(path: Path, directory: bool) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        # Some platforms cannot open directories; durability is best effort there.
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        # fsync on a directory is refused by a few filesystems (EINVAL); the
        # data files themselves were synced.
        if not (directory and exc.errno in (errno.EINVAL, errno.EBADF)):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for fname in filenames:
            _fsync_path(Path(dirpath) / fname, directory=False)
        _fsync_path(Path(dirpath), directory=True)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_renameat2 = None


def _get_renameat2():
    global _renameat2
    if _renameat2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = False
    return _renameat2


def _exists_error(final: Path) -> FileExistsError:
    return FileExistsError(
        errno.EEXIST,
        f"Output {final} already exists and is never overwritten. To re-create it, "
        "remove it first (for a scores store: Manifest.forget(partition_id), then delete "
        "the store or let Manifest.reconcile remove it), or write to a new path",
        str(final),
    )


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; raise FileExistsError if ``dst`` exists."""
    fn = _get_renameat2()
    if fn:
        rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise _exists_error(dst)
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    # Fallback: rename() refuses a non-empty target directory but would replace
    # an empty one or a file, hence the check first (a small race remains only
    # on systems without renameat2).
    if os.path.lexists(dst):
        raise _exists_error(dst)
    os.rename(src, dst)


def _check_local(path) -> Path:
    text = os.fspath(path)
    if "://" in str(text):
        raise ValueError(
            f"{text!r} is a URL, but atomic outputs need a local (or mounted) path because "
            "object stores cannot rename a directory atomically; write to a local or "
            "network-mounted directory instead"
        )
    return Path(text).expanduser().absolute()


# ----------------------------------------------------------------------------
# atomic directory and file writes


@contextmanager
def atomic_store(final_path):
    """Build a directory under a temporary name and rename it to ``final_path``.

    Parameters
    ----------
    final_path : str or PathLike
        Local path where the finished directory should appear.

    Yields
    ------
    Path
        An empty temporary sibling directory ``.<name>.tmp-<uuid>`` to write into.

    Raises
    ------
    FileExistsError
        ``final_path`` exists, before starting or at the moment of the rename;
        the message says how to proceed.  The temporary directory is removed.

    Notes
    -----
    On a clean exit all files and directories of the temporary tree are
    fsynced, it is renamed without replacing anything, and the parent
    directory is fsynced.  On any exception (including KeyboardInterrupt)
    the temporary directory is removed and the exception propagates.
    """
    final = _check_local(final_path)
    if os.path.lexists(final):
        raise _exists_error(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / temp_name_for(final.name)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        _rename_noreplace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_path(final.parent, directory=True)
    logger.debug("published %s", final)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary sibling, fsync and ``os.replace``.

    Unlike :func:`atomic_store`, an existing file is replaced (readers see the
    old or the new content, never a mix).

    Parameters
    ----------
    path : str or PathLike
    data : bytes

    Returns
    -------
    Path
    """
    path = _check_local(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / temp_name_for(path.name)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_path(path.parent, directory=True)
    return path


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded with ``encoding``."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path, obj) -> Path:
    """Write ``obj`` as indented, key-sorted, strict JSON via :func:`atomic_write_text`.

    Raises
    ------
    ValueError
        ``obj`` holds NaN or infinity (not valid JSON): replace them with None.
    TypeError
        ``obj`` holds something JSON cannot represent.
    """
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError as exc:
        raise ValueError(
            f"Cannot write {path} as JSON: {exc}. Replace NaN/infinity with None before writing"
        ) from exc
    return atomic_write_text(path, text + "\n")


# ----------------------------------------------------------------------------
# scores stores


def _is_dask(x) -> bool:
    return type(x).__module__.split(".")[0] == "dask"


def _check_score_inputs(arrays: dict):
    prepared = {}
    n = None
    for name, kind in SCORE_ARRAYS.items():
        x = arrays[name]
        if not _is_dask(x):
            x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(
                f"{name} must be a 1-D array with one value per row, got shape {x.shape}; "
                "pass one score per input row"
            )
        dt = np.dtype(x.dtype)
        if kind == "f":
            if dt.kind not in "f":
                raise ValueError(f"{name} must be floating point, got dtype {dt}; cast it with .astype('float64')")
            if dt != np.float64:
                x = x.astype(np.float64)
        elif kind == "i":
            if dt.kind not in "iu":
                raise ValueError(
                    f"component must be an integer array (component index per row), got dtype {dt}; "
                    "cast it with .astype('int64')"
                )
            if dt not in (np.dtype(np.int32), np.dtype(np.int64)):
                x = x.astype(np.int64)
        elif kind == "b" and dt != np.bool_:
            raise ValueError(
                f"is_anomaly must be a boolean array, got dtype {dt}; compare against the threshold "
                "(for example log_likelihood < threshold) or cast with .astype(bool)"
            )
        length = x.shape[0]
        if isinstance(length, float) and math.isnan(length):
            raise ValueError(
                f"{name} is a Dask array of unknown length; call .compute_chunk_sizes() on it first"
            )
        if n is None:
            n = int(length)
        elif int(length) != n:
            lengths = {k: arrays[k].shape[0] for k in SCORE_ARRAYS}
            raise ValueError(
                f"score arrays must have equal lengths, got {lengths}; they must all come from "
                "the same input rows"
            )
        prepared[name] = x
    return prepared, n


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


def write_scores(
    final_path,
    *,
    log_likelihood,
    component,
    responsibility,
    is_anomaly,
    attrs: dict,
    chunk_rows: int | None = None,
) -> Path:
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
    chunk_rows : int, optional
        Rows per Zarr chunk.  Default: the first Dask chunk length when any
        input is a Dask array, else ``min(n, 2**20)``.  Dask inputs are
        rechunked to it so each task writes whole chunks and no two tasks
        touch the same chunk.

    Returns
    -------
    Path
        ``final_path``.

    Raises
    ------
    ValueError, TypeError
        Bad shapes, dtypes or attrs (checked before anything is written).
    FileExistsError
        ``final_path`` exists.

    Notes
    -----
    Dask inputs are stored with one ``dask.array.store`` call into arrays
    created beforehand with ``create_array``, so the data flows from the
    workers straight into the store and is never gathered on the client.
    If the computation fails, writes still in flight on other threads or
    workers are waited for and later ones are skipped (see
    :class:`_GuardedTarget`), so the temporary directory is really gone
    when the exception reaches the caller.
    """
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
    arrays, n = _check_score_inputs(
        dict(
            log_likelihood=log_likelihood,
            component=component,
            responsibility=responsibility,
            is_anomaly=is_anomaly,
        )
    )
    any_dask = any(_is_dask(x) for x in arrays.values())
    if chunk_rows is None:
        if any_dask:
            first = next(x for x in arrays.values() if _is_dask(x))
            chunk_rows = first.chunks[0][0] if first.chunks[0] else 1
        else:
            chunk_rows = min(n, _DEFAULT_CHUNK_ROWS)
    chunk_rows = int(chunk_rows)
    if chunk_rows < 1:
        chunk_rows = 1

    import zarr

    with atomic_store(final_path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        guard = tmp / _GUARD_NAME
        guard.touch()
        targets, sources = [], []
        for name, x in arrays.items():
            z = group.create_array(
                name,
                shape=(n,),
                chunks=(chunk_rows,),
                dtype=x.dtype,
                config={"write_empty_chunks": True},
            )
            if _is_dask(x):
                sources.append(x.rechunk(chunk_rows))
                targets.append(_GuardedTarget(z, str(guard)))
            elif n:
                z[:] = x
        if sources:
            import dask.array as da

            try:
                # Chunks are aligned with the Zarr chunks, so no lock is needed.
                da.store(sources, targets, lock=False, compute=True)
            except BaseException:
                _abandon(guard)
                raise
        guard.unlink()
        # one metadata write (attrs.update would rewrite zarr.json once per key)
        group.update_attributes(
            {
                **attrs,
                _MARKER_KEY: {
                    "format": SCORES_FORMAT,
                    "format_version": SCORES_FORMAT_VERSION,
                    "n_rows": n,
                    "arrays": list(SCORE_ARRAYS),
                },
            }
        )
    logger.info("wrote scores for %d rows to %s", n, final_path)
    return Path(final_path)


def _store_fail(path, problem, fix="delete the store and score the partition again"):
    raise ScoresStoreError(f"Scores store {path} is unusable: {problem}. To fix: {fix}.")


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
            "pass a store written by pipeline.outputs.write_scores",
        )
    version = marker.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= SCORES_FORMAT_VERSION:
        _store_fail(path, f"format_version {version!r} is not supported (supports 1..{SCORES_FORMAT_VERSION})",
                    "upgrade gmm-stream or re-score with this release")
    n = marker.get("n_rows")
    if not isinstance(n, int) or n < 0:
        _store_fail(path, f"n_rows {n!r} in its attributes is not a non-negative integer")
    present = set(group.array_keys())
    for name, kind in SCORE_ARRAYS.items():
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
    return group, marker


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
        arrays; ``attrs`` (the caller's attrs) and ``n_rows``.

    Raises
    ------
    FileNotFoundError
        No store at ``path``.
    ScoresStoreError
        The store is incomplete, damaged or foreign; the message says what is wrong.
    """
    group, marker = _open_checked(path)
    out = {}
    for name in SCORE_ARRAYS:
        try:
            out[name] = np.asarray(group[name][...])
        except Exception as exc:  # codec errors on damaged chunks come in many types
            _store_fail(path, f"array {name!r} cannot be decoded ({type(exc).__name__}: {exc})")
    out["attrs"] = {k: v for k, v in group.attrs.items() if k != _MARKER_KEY}
    out["n_rows"] = marker["n_rows"]
    return out


def remove_stale_temps(directory, older_than_seconds: float = 0) -> list[str]:
    """Delete temporary entries (``.<name>.tmp-<uuid hex>``) left in ``directory`` by crashed writers.

    Parameters
    ----------
    directory : str or PathLike
        Directory to clean (not recursive).  A missing directory is fine.
    older_than_seconds : float
        Only remove temporaries whose modification time is at least this old.
        The default 0 removes all of them: use it only when no writer can be
        active, otherwise pass a margin longer than any write takes.

    Returns
    -------
    list of str
        Paths removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    cutoff = time.time() - float(older_than_seconds)
    removed = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if parse_temp_name(entry.name) is None:
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue  # removed concurrently
        if older_than_seconds > 0 and mtime > cutoff:
            continue
        remove_entry(Path(entry.path))
        removed.append(entry.path)
    if removed:
        logger.info("removed %d stale temporary entries from %s", len(removed), directory)
    return removed


def remove_entry(path: Path) -> bool:
    """Delete a file, link or directory tree; False if it was already gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
