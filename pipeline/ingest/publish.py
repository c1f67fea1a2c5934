"""Where the array goes: checks on ``dest``, and its atomic publication.

The array is built in a temporary sibling of ``dest`` and renamed into
place by :func:`gmm_engine.atomic.publish_dir`, the project's one
publishing mechanism (and temporary-name convention, which the sweepers
recognise): ``dest`` never exists half-written.

* Without ``overwrite`` an existing ``dest`` is refused before any data
  are read, and one that appears meanwhile is never replaced.
* With ``overwrite`` only a Zarr store (a directory holding ``zarr.json``,
  i.e. an earlier ingest) is replaced: the old one is moved aside, the new
  one moved in, the old one deleted.  Anything else there is refused,
  before reading and again at the moment of the swap.
* On any failure the temporary directory is removed, and so are the
  parent directories the ingest created for ``dest``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .location import Location, is_url
from .report import IngestError

__all__ = ["check_dest", "check_replaceable", "publishing", "zarr_store_only"]


def check_dest(dest, overwrite: bool) -> Path:
    """``dest`` as an absolute local path; refused if a URL, or existing without ``overwrite``."""
    if not isinstance(dest, (str, os.PathLike)):
        raise IngestError(f"dest must be a local path, got {type(dest).__name__}.")
    text = os.fspath(dest)
    if is_url(text):
        raise IngestError(
            f"dest must be a local path, got the URL {text!r}: ingest to a local "
            "directory, then copy the array to remote storage."
        )
    path = Path(text).absolute()
    if os.path.lexists(path) and not overwrite:
        raise IngestError(
            f"{path} already exists; pass overwrite=True (`gmm ingest --overwrite`, or "
            "`overwrite: true` in the config) to replace it, or choose another dest."
        )
    return path


def check_replaceable(dest: Path, loc: Location, overwrite: bool) -> None:
    """Refuse a ``dest`` whose replacement would delete the source, or anything but a Zarr store.

    Checked before any data are read; :func:`publishing` checks the second
    rule again at the moment of the swap.
    """
    if not loc.is_url:
        src, dst = Path(loc.path).resolve(), dest.resolve()
        if src == dst or dst in src.parents:
            raise IngestError(
                f"dest {dest} is (or contains) the source {loc.text}: replacing it "
                "would delete the data being read. Choose another dest."
            )
    if overwrite and os.path.lexists(dest):
        zarr_store_only(dest)


def zarr_store_only(path: Path) -> None:
    """Refuse to replace ``path`` unless it is a Zarr store: overwrite replaces an earlier ingest.

    The ``replaceable`` check of :func:`gmm_engine.atomic.publish_dir`; it
    raises the ingest's own refusal, which the publisher lets through.
    """
    if not (path / "zarr.json").is_file():
        raise IngestError(
            f"{path} exists and is not a Zarr store, so overwrite=True will not replace it "
            "(that would delete it); remove it yourself or choose another dest."
        )


def _make_parents(parent: Path) -> list[Path]:
    """Create missing parent directories; return those created (deepest first)."""
    created = []
    p = parent
    while not p.exists():
        created.append(p)
        p = p.parent
    parent.mkdir(parents=True, exist_ok=True)
    return created


@contextlib.contextmanager
def publishing(dest: Path, overwrite: bool, durable: bool = True):
    """Yield an empty temporary directory; on a clean exit it becomes ``dest``.

    Parameters
    ----------
    dest : Path
        Absolute, from :func:`check_dest`.
    overwrite : bool
        Replace an existing Zarr store at ``dest`` (see :func:`zarr_store_only`).
    durable : bool
        fsync before publishing (False for scratch copies, deleted after use).

    Raises
    ------
    IngestError
        ``dest`` appeared meanwhile (without ``overwrite``), or is no longer
        a Zarr store (with it).
    """
    # imported here: importing gmm_engine loads numba (~0.3 s), which an ingest never needs
    from gmm_engine.atomic import publish_dir

    created = _make_parents(dest.parent)
    in_body = False
    try:
        with publish_dir(dest, replaceable=zarr_store_only if overwrite else None, durable=durable) as tmp:
            in_body = True
            yield tmp
            in_body = False
    except BaseException as exc:
        for p in created:
            with contextlib.suppress(OSError):
                p.rmdir()
        if isinstance(exc, FileExistsError) and not in_body and not overwrite:
            # publish_dir's own refusal, not the body's: dest appeared while ingesting
            raise IngestError(
                f"{dest} appeared while ingesting; pass overwrite=True (`gmm ingest --overwrite`) "
                "to replace it, or choose another dest."
            ) from None
        raise
