"""Incoming data partitions: safe ids, discovery, and safe paths derived from ids.

New data arrives under an ``incoming/`` location (a local directory or any
fsspec URL).  Each partition is one entry of that location:

=====================  ==========  ===========================
entry                  format      partition id
=====================  ==========  ===========================
``<id>.csv``           ``csv``     ``<id>``
``<id>.csv.gz``        ``csv``     ``<id>``
``<id>.parquet``       ``parquet`` ``<id>``
``<id>.pq``            ``parquet`` ``<id>``
``<id>.npy``           ``npy``     ``<id>``
``<id>.zarr`` (dir)    ``zarr``    ``<id>``
=====================  ==========  ===========================

Suffixes are matched case-insensitively.  Partition ids become file names
of output stores and keys of the manifest, so they are validated against
:data:`PARTITION_ID_PATTERN`: a name that could escape a directory (``..``,
separators, absolute paths), hide itself (leading ``.``) or confuse shells
and tools (spaces, control characters) is refused.

Producers are expected to write a partition under a temporary name and
rename it when complete; entries that look in progress (leading ``_`` or a
``.tmp``/``.partial``/``.inprogress``/``.crdownload`` suffix) and hidden
entries (leading ``.``) are skipped without a word.  Everything else that
cannot be used is listed in :attr:`Discovery.rejected` with the reason, so a
run can report it instead of silently ignoring data.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "PARTITION_ID_PATTERN",
    "FORMAT_SUFFIXES",
    "UnsafePartitionName",
    "validate_partition_id",
    "PartitionId",
    "Partition",
    "Discovery",
    "discover_partitions",
    "estimated_bytes",
    "partition_at",
    "safe_child",
]

#: Allowed partition ids: a letter or digit, then up to 199 of letters,
#: digits, ``.``, ``_``, ``=``, ``-``.  ``..`` is refused separately.
PARTITION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,199}$"
_ID_RE = re.compile(PARTITION_ID_PATTERN)
_MAX_LEN = 200

_PATTERN_HELP = (
    f"partition ids must match {PARTITION_ID_PATTERN} "
    "(start with a letter or digit; then letters, digits, '.', '_', '=', '-'; "
    f"at most {_MAX_LEN} characters; never '..')"
)

#: Entry suffix (lower case) -> partition format.  Longest suffix wins.
FORMAT_SUFFIXES: dict[str, str] = {
    ".csv.gz": "csv",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npy": "npy",
    ".zarr": "zarr",
}
_SUFFIXES_BY_LENGTH = sorted(FORMAT_SUFFIXES, key=len, reverse=True)
_IN_PROGRESS_SUFFIXES = (".tmp", ".partial", ".inprogress", ".crdownload")


class UnsafePartitionName(ValueError):
    """A partition name could escape its directory or is otherwise not a safe id."""


def _why_unsafe(name) -> str | None:
    """Return why ``name`` is not a safe id, or None when it is safe."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a str"
    if name == "":
        return "it is empty"
    if "\x00" in name:
        return "it contains a NUL byte"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "it is an absolute path"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if ".." in name:
        return "it contains '..' (path traversal)"
    if name.startswith("."):
        return "it starts with '.' (hidden entry)"
    if len(name) > _MAX_LEN:
        return f"it is {len(name)} characters long (more than {_MAX_LEN})"
    if any(c.isspace() for c in name):
        return "it contains whitespace"
    if not _ID_RE.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9._=-]", c)})
        if bad:
            return f"it contains the disallowed character(s) {''.join(bad)!r}"
        return "it does not start with a letter or digit"
    return None


class PartitionId(str):
    """A partition id that passed :func:`validate_partition_id`.

    Ids are validated once, where they enter (discovery, or a name found on
    disk); everything downstream takes a ``PartitionId`` and trusts it.  Only
    :func:`validate_partition_id` makes one.
    """

    __slots__ = ()


def validate_partition_id(name: str) -> PartitionId:
    """``name`` as a :class:`PartitionId` if it is a safe partition id, else raise.

    A ``PartitionId`` is returned as it is: it was checked when it was made.

    Parameters
    ----------
    name : str
        Candidate id (an entry name without its format suffix).

    Returns
    -------
    PartitionId
        Equal to ``name``.

    Raises
    ------
    UnsafePartitionName
        Naming the bad name, why it is refused and the allowed pattern.
    """
    if type(name) is PartitionId:
        return name
    why = _why_unsafe(name)
    if why is not None:
        raise UnsafePartitionName(
            f"Unsafe partition name {name!r}: {why}. {_PATTERN_HELP[0].upper()}{_PATTERN_HELP[1:]}; "
            "rename the partition (or the file that holds it) to such a name."
        )
    return PartitionId(name)


@dataclass(frozen=True)
class Partition:
    """One incoming partition.

    Attributes
    ----------
    id : PartitionId
        Validated once, by discovery.
    url : str
        Local absolute path, or a full fsspec URL (``memory://...``, ``s3://...``).
    format : str
        ``'csv'``, ``'parquet'``, ``'npy'`` or ``'zarr'``.
    size_bytes : int or None
        File size; None for Zarr stores (not walked) or when unknown.
    modified : float or None
        Modification (or creation) time as POSIX seconds, when known.
    """

    id: PartitionId
    url: str
    format: str
    size_bytes: int | None
    modified: float | None


@dataclass(frozen=True)
class Discovery:
    """Result of :func:`discover_partitions`.

    Attributes
    ----------
    partitions : list of Partition
        Usable partitions, sorted by id.
    rejected : list of (str, str)
        ``(entry name, reason)`` for entries that cannot be used, sorted by name.
    """

    partitions: list[Partition] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        """Ids of :attr:`partitions`, in order."""
        return [p.id for p in self.partitions]


def estimated_bytes(partition: Partition, storage_options: dict | None = None) -> int | None:
    """The size of ``partition``'s rows in memory, from its metadata alone; None when unknown.

    .npy and Zarr: shape x item size; Parquet: the row groups' uncompressed
    size; CSV: the file size (text is at least as long as its float64
    values).  Remote partitions are not looked into (None).
    """
    if not is_local(partition.url):
        return None
    path = Path(partition.url[len("file://"):] if partition.url.startswith("file://") else partition.url)
    try:
        if partition.format == "npy":
            import numpy as np

            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                from gmm_engine.npy import read_npy_header

                shape, _, dtype = read_npy_header(fh, version)
            return int(np.prod(shape)) * dtype.itemsize
        if partition.format == "zarr":
            from .data import array_bytes

            return array_bytes(str(path))
        if partition.format == "parquet":
            import pyarrow.parquet as pq

            md = pq.read_metadata(path)
            return int(sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups)))
        return int(path.stat().st_size)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def partition_at(partition_id: str, url: str) -> Partition:
    """The partition recorded as ``partition_id`` read from ``url`` (its format from the suffix)."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    split = _split_suffix(name)
    if split is None:
        raise ValueError(f"{url!r} does not end in a partition suffix ({', '.join(FORMAT_SUFFIXES)})")
    return Partition(validate_partition_id(partition_id), url, split[1], None, None)


def _is_ignored(name: str) -> bool:
    lower = name.lower()
    return name.startswith((".", "_")) or lower.endswith(_IN_PROGRESS_SUFFIXES)


def _split_suffix(name: str) -> tuple[str, str] | None:
    lower = name.lower()
    for suffix in _SUFFIXES_BY_LENGTH:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], FORMAT_SUFFIXES[suffix]
    return None


def _to_epoch(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def is_local(incoming: str) -> bool:
    return "://" not in incoming or incoming.startswith("file://")


def check_local_incoming(incoming: str) -> Path:
    """The local incoming directory as an absolute path; FileNotFoundError/NotADirectoryError naming the fix."""
    root = Path(incoming[len("file://"):] if incoming.startswith("file://") else incoming)
    root = root.expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(
            f"Incoming location {str(root)!r} does not exist: create it "
            f"(mkdir -p {root}) or fix the path in the configuration."
        )
    if not root.is_dir():
        raise NotADirectoryError(
            f"Incoming location {str(root)!r} is a file, not a directory: point the "
            "configuration at the directory that holds the partitions."
        )
    return root


def _list_local(incoming: str):
    """Yield ``(name, url, is_dir, size, mtime, problem)`` for a local directory."""
    root = check_local_incoming(incoming)
    with os.scandir(root) as it:
        for entry in it:
            url = str(root / entry.name)
            try:
                st = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                yield entry.name, url, False, None, None, "it is a broken symbolic link"
                continue
            is_dir = entry.is_dir(follow_symlinks=True)
            yield entry.name, url, is_dir, (None if is_dir else st.st_size), st.st_mtime, None


def _list_fsspec(incoming: str, storage_options: dict | None):
    import fsspec

    fs, root = fsspec.core.url_to_fs(incoming, **(storage_options or {}))
    if not fs.exists(root):
        raise FileNotFoundError(
            f"Incoming location {incoming!r} does not exist: create it "
            "(for example fs.mkdir on that URL, or let the producer create it) "
            "or fix the URL in the configuration."
        )
    if not fs.isdir(root):
        raise NotADirectoryError(
            f"Incoming location {incoming!r} is a file, not a directory: point the "
            "configuration at the prefix that holds the partitions."
        )
    root_stripped = root.rstrip("/")
    for info in fs.ls(root, detail=True):
        full = info["name"].rstrip("/")
        if full == root_stripped:
            continue  # some filesystems list the directory itself
        name = full.rsplit("/", 1)[-1]
        is_dir = info.get("type") == "directory"
        size = None if is_dir else info.get("size")
        mtime = None
        for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
            mtime = _to_epoch(info.get(key))
            if mtime is not None:
                break
        yield name, fs.unstrip_protocol(full), is_dir, size, mtime, None


def _partition(name, url, is_dir, size, mtime, problem) -> Partition | str:
    """The partition an entry holds, or why it cannot be one."""
    if problem is not None:
        return problem
    split = _split_suffix(name)
    if split is None:
        what = "directory" if is_dir else "file"
        return f"unknown suffix for a {what}: partitions must end in one of {', '.join(FORMAT_SUFFIXES)}"
    pid, fmt = split
    if fmt == "zarr" and not is_dir:
        return "a .zarr partition must be a directory (a Zarr store), not a file"
    if fmt != "zarr" and is_dir:
        return f"a .{fmt} partition must be a file, but this is a directory"
    try:
        pid = validate_partition_id(pid)
    except UnsafePartitionName as exc:
        return str(exc)
    return Partition(id=pid, url=url, format=fmt, size_bytes=None if size is None else int(size),
                     modified=mtime)


def _unambiguous(candidates: list[Partition], rejected: list) -> list[Partition]:
    """The candidates whose id no other entry gives; the others go to ``rejected``.

    Output stores are named after ids, so ids that differ only in case
    would collide on case-insensitive filesystems: they are ambiguous too.
    """
    groups: dict[str, list[Partition]] = defaultdict(list)
    for p in candidates:
        groups[p.id.lower()].append(p)
    partitions: list[Partition] = []
    for group in groups.values():
        if len(group) == 1:
            partitions.append(group[0])
            continue
        names = sorted(p.url.rstrip("/").rsplit("/", 1)[-1] for p in group)
        reason = (
            f"ambiguous: partition id {group[0].id!r} is given by {len(group)} entries "
            f"({', '.join(names)}); keep exactly one of them"
        )
        rejected.extend((name, reason) for name in names)
    return partitions


def discover_partitions(incoming: str, storage_options: dict | None = None) -> Discovery:
    """List the partitions under ``incoming``; see the module docs for the rules.

    Parameters
    ----------
    incoming : str or PathLike
        Local directory, ``file://`` URL, or any fsspec URL (``memory://inc``,
        ``s3://bucket/incoming``).
    storage_options : dict, optional
        Passed to fsspec for remote URLs.

    Returns
    -------
    Discovery
        Usable partitions sorted by id, and rejected entries with reasons.

    Raises
    ------
    FileNotFoundError
        ``incoming`` does not exist (the message says to create it or fix the path).
    NotADirectoryError
        ``incoming`` is a file.
    """
    incoming = os.fspath(incoming)
    listing = (
        _list_local(incoming) if is_local(incoming) else _list_fsspec(incoming, storage_options)
    )
    candidates: list[Partition] = []
    rejected: list[tuple[str, str]] = []
    for name, url, is_dir, size, mtime, problem in listing:
        if _is_ignored(name):
            logger.debug("ignoring hidden or in-progress entry %r", name)
            continue
        made = _partition(name, url, is_dir, size, mtime, problem)
        if isinstance(made, str):
            rejected.append((name, made))
        else:
            candidates.append(made)
    partitions = _unambiguous(candidates, rejected)
    partitions.sort(key=lambda p: p.id)
    rejected.sort()
    for name, reason in rejected:
        logger.warning("rejected incoming entry %r: %s", name, reason)
    return Discovery(partitions=partitions, rejected=rejected)


def safe_child(base, name: str, suffix: str = "") -> Path:
    """Return ``base / (name + suffix)`` after checking that it cannot escape ``base``.

    Parameters
    ----------
    base : str or PathLike
        Local directory (need not exist yet).
    name : str
        A partition id (a :class:`PartitionId` is not checked again).
    suffix : str
        Appended to the id, e.g. ``".zarr"``.

    Returns
    -------
    Path
        ``Path(base) / (name + suffix)`` (not resolved).

    Raises
    ------
    UnsafePartitionName
        ``name`` is not a safe id, or the child resolves outside ``base``
        (for example because it exists as a symbolic link to somewhere else).
    """
    name = validate_partition_id(name) + suffix
    base = Path(base)
    child = base / name
    base_real = Path(os.path.realpath(base))
    child_real = Path(os.path.realpath(child))
    if child_real.parent != base_real:
        raise UnsafePartitionName(
            f"Unsafe partition name {name!r}: {child} resolves to {child_real}, which is "
            f"outside {base_real} (a symbolic link?). Remove or replace the link so that "
            f"{name!r} is a plain entry of {base}."
        )
    return child
