"""Atomic publishing of files and directories: nothing half-written is ever visible.

The one mechanism, and the one temporary-name convention, for everything
gmm-stream writes: models and checkpoints here, scores stores, ingested
arrays, plots, reports and registry pointers in the pipeline (which uses
this module rather than a copy of it).

A file or directory bound for ``<dir>/<name>`` is written under a hidden
sibling ``<dir>/.<name>.tmp-<32 hex>``, fsynced and renamed into place in
one step.  Replacing a directory moves the old one aside first, as
``<dir>/.<name>.old-<32 hex>``, then moves the new one in and deletes the
old.  :func:`parse_temp_name` recognises both roles; :func:`sweep` removes
leftovers of crashed writers and puts back an old directory whose
replacement never arrived, so a crash at any moment leaves either the old
or the new entry under its name.

Local (or network-mounted POSIX) paths only: object stores have no atomic
rename.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "TempName",
    "temp_name",
    "parse_temp_name",
    "write_bytes",
    "write_text",
    "write_json",
    "publish_dir",
    "sync_filesystem",
    "local_path",
    "remove_entry",
    "sweep",
]

#: roles of a temporary entry: being built, or a replaced directory moved aside
TMP, OLD = "tmp", "old"
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<role>tmp|old)-(?P<token>[0-9a-f]{32})$")


@dataclass(frozen=True)
class TempName:
    """What a temporary entry's name says: the final name it is for, and its role."""

    target: str
    role: str  # TMP or OLD


def temp_name(final_name: str, role: str = TMP) -> str:
    """A fresh hidden sibling name ``.<final_name>.<role>-<32 hex>``."""
    if role not in (TMP, OLD):
        raise ValueError(f"role must be {TMP!r} or {OLD!r}, got {role!r}")
    return f".{final_name}.{role}-{uuid.uuid4().hex}"


def parse_temp_name(name: str) -> TempName | None:
    """The :class:`TempName` a directory entry's name encodes, or None for an ordinary entry."""
    m = _TEMP_RE.match(name)
    return TempName(m.group("target"), m.group("role")) if m else None


# ---------------------------------------------------------------------------
# durability


def _fsync_path(path: Path, directory: bool) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open directories: best effort there
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        # a few filesystems refuse fsync on a directory; its files were synced
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


def _exists_error(final: Path, hint: str | None) -> FileExistsError:
    return FileExistsError(
        errno.EEXIST,
        f"{final} already exists and is never overwritten. "
        + (hint or "Remove it first, or write to a new path"),
        str(final),
    )


def _rename_noreplace(src: Path, dst: Path, hint: str | None = None) -> None:
    """Rename ``src`` to ``dst``; FileExistsError if ``dst`` exists, even if it appears meanwhile."""
    fn = _get_renameat2()
    if fn:
        rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise _exists_error(dst, hint)
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    # Without renameat2, rename() would replace a file or an empty directory:
    # check first (a small race remains only on such systems).
    if os.path.lexists(dst):
        raise _exists_error(dst, hint)
    os.rename(src, dst)


def local_path(path) -> Path:
    """``path`` as an absolute local path; a URL is refused (no atomic rename on object stores)."""
    text = os.fspath(path)
    if "://" in str(text):
        raise ValueError(
            f"{text!r} is a URL, but atomic outputs need a local (or mounted) path because "
            "object stores cannot rename atomically; write to a local or network-mounted "
            "directory instead"
        )
    return Path(text).expanduser().absolute()


# ---------------------------------------------------------------------------
# files


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling, fsync, ``os.replace``.

    An existing file is replaced: readers see the old or the new content,
    never a mix.  Permissions follow the umask, as for any new file.

    Returns
    -------
    Path
        The absolute path written.
    """
    path = local_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / temp_name(path.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(path.parent, directory=True)
    return path


def write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`write_bytes` of ``text`` encoded with ``encoding``."""
    return write_bytes(path, text.encode(encoding))


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented, key-sorted, strict JSON via :func:`write_text`.

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
    return write_text(path, text + "\n")


# ---------------------------------------------------------------------------
# directories


@contextmanager
def publish_dir(final_path, *, replaceable=None, exists_hint: str | None = None, durable: bool = True):
    """Build a directory under a temporary name; on a clean exit, move it to ``final_path``.

    Parameters
    ----------
    final_path : str or PathLike
        Local path where the finished directory appears.
    replaceable : callable, optional
        ``replaceable(path)`` is called when ``final_path`` exists and must
        raise (``FileExistsError`` with the reason) unless that entry may be
        replaced.  Without it an existing entry is never replaced, even one
        that appears while the directory is being built.
    exists_hint : str, optional
        The end of the ``FileExistsError`` message: how to proceed.
    durable : bool, default=True
        fsync the tree before the rename and the parent after it.  False
        keeps the all-or-nothing visibility (the rename) but leaves the
        flush to the caller: :func:`sync_filesystem` once after publishing
        many small directories, before anything relies on them surviving a
        power loss; or nothing at all for scratch data deleted after use.

    Yields
    ------
    Path
        An empty temporary sibling directory to write into.

    Notes
    -----
    On a clean exit every file and directory of the temporary tree is
    fsynced before the rename, and the parent directory after it.  On any
    exception (KeyboardInterrupt included) the temporary directory is
    removed and the exception propagates.  A replaced directory is moved
    aside (role ``old``), the new one moved in, then the old one deleted:
    a crash between the two renames leaves the old one for :func:`sweep`
    to put back.
    """
    final = local_path(final_path)
    if os.path.lexists(final):
        if replaceable is None:
            raise _exists_error(final, exists_hint)
        replaceable(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / temp_name(final.name)
    tmp.mkdir()
    try:
        yield tmp
        if durable:
            _fsync_tree(tmp)
        if replaceable is not None and os.path.lexists(final):
            replaceable(final)  # still ours to replace at the moment of the swap
            old = final.parent / temp_name(final.name, OLD)
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)
                raise
            remove_entry(old)
        else:
            _rename_noreplace(tmp, final, exists_hint)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if durable:
        _fsync_path(final.parent, directory=True)
    logger.debug("published %s", final)


_syncfs = None


def sync_filesystem(path) -> None:
    """Flush everything written to the filesystem holding ``path`` (Linux ``syncfs``; else ``os.sync``).

    One call makes durable every directory published with ``durable=False``
    on that filesystem since the last one: for many small outputs it costs
    one flush instead of one fsync per file.
    """
    global _syncfs
    if _syncfs is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).syncfs
            fn.argtypes = [ctypes.c_int]
            fn.restype = ctypes.c_int
            _syncfs = fn
        except (AttributeError, OSError):
            _syncfs = False
    if _syncfs:
        fd = os.open(local_path(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            if _syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def remove_entry(path) -> bool:
    """Delete a file, link or directory tree; False if it was already gone."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def sweep(directory, *, older_than_seconds: float = 0.0, keep=None) -> dict:
    """Clean up after crashed writers in ``directory`` (not recursive).

    A temporary entry (role ``tmp``) is deleted; an old entry (role
    ``old``) is deleted when its final name exists and renamed back to it
    when it does not (its replacement never arrived).

    Parameters
    ----------
    directory : str or PathLike
        A missing directory is fine.
    older_than_seconds : float
        Leave entries modified more recently than this alone: a writer may
        still be at work.  0 takes every entry; use it only when no writer
        can be active.
    keep : callable, optional
        ``keep(path, TempName)`` returns True for an entry that must be left
        (for example one whose writer holds a live lease).

    Returns
    -------
    dict
        ``removed``, ``restored`` and ``kept`` (lists of paths).
    """
    directory = Path(directory)
    report = {"removed": [], "restored": [], "kept": []}
    if not directory.is_dir():
        return report
    cutoff = time.time() - float(older_than_seconds)
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        name = parse_temp_name(entry.name)
        if name is None:
            continue
        path = Path(entry.path)
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue  # removed concurrently
        if (older_than_seconds > 0 and mtime > cutoff) or (keep is not None and keep(path, name)):
            report["kept"].append(str(path))
            continue
        final = directory / name.target
        if name.role == OLD and not os.path.lexists(final):
            try:
                _rename_noreplace(path, final)
            except FileNotFoundError:
                continue  # removed or restored concurrently
            except FileExistsError:
                remove_entry(path)  # the replacement arrived meanwhile
                report["removed"].append(str(path))
                continue
            report["restored"].append(str(final))
            logger.warning("put back %s: the write that was replacing it did not finish", final)
            continue
        if remove_entry(path):
            report["removed"].append(str(path))
    if report["removed"]:
        logger.info("removed %d leftover temporary entries from %s", len(report["removed"]), directory)
    return report
