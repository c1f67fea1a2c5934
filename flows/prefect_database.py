"""A migrated Prefect database that a new work directory's server starts from.

``prefect server start`` on a fresh SQLite database migrates its schema
from nothing and registers Prefect's block types, about half of its ~12 s
of start-up here (measured: 12.2-13.6 s fresh, 6.9-8.2 s on a copy of a
migrated database).  So the first server that comes up healthy on a fresh
database leaves a consistent copy of it in the user's cache
(``<cache>/prefect-<version>/prefect.db``, where ``<cache>`` is
``$GMM_STREAM_CACHE``, else ``$XDG_CACHE_HOME/gmm-stream``, else
``~/.cache/gmm-stream``; SQLite's ``VACUUM INTO``, which folds the
write-ahead log in),
and the database of a later work directory starts as a copy of that.

The copy is taken the moment the server answers, before any command has
used it, and only of a database that server created (no file, log or
shared memory before it started) and that holds no flow, run or deployment:
the schema and what the server registers for itself.  A server that does
not come up from a copy drops the template, so the next start migrates
afresh and keeps a new one.  It is keyed by the Prefect version, whose
migrations made it; a newer Prefect makes its own (and migrates a copied
older database forward as it would any).  A database configured elsewhere
(``PREFECT_API_DATABASE_CONNECTION_URL``, e.g. PostgreSQL) is left alone.
Failing to read or write the cache only costs the start-up time it saves.
:func:`prepare` (``python -m flows.prefect_database``, which ``make
install`` runs) keeps the template at install time, so that not even the
first command on a machine pays the migration.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

logger = logging.getLogger(__name__)

DATABASE = "prefect.db"
#: overrides where the migrated database is kept (the test suite points it at a temporary directory)
CACHE_VARIABLE = "GMM_STREAM_CACHE"
_URL_SETTINGS = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")
#: the database file and what SQLite keeps beside it
_FILES = ("", "-wal", "-shm", "-journal")


def template_path() -> Path | None:
    """Where the migrated database of this Prefect version is kept; None when the database is not SQLite here."""
    if any(os.environ.get(name) for name in _URL_SETTINGS):
        return None
    try:
        prefect_version = version("prefect")
    except PackageNotFoundError:  # pragma: no cover - prefect is a dependency
        return None
    cache = os.environ.get(CACHE_VARIABLE)
    if not cache:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gmm-stream"
    return Path(cache) / f"prefect-{prefect_version}" / DATABASE


def is_new(home: Path) -> bool:
    """Whether ``home`` holds no database at all (no file, no write-ahead log or shared memory left over)."""
    home = Path(home)
    return not any((home / f"{DATABASE}{suffix}").exists() for suffix in _FILES)


@contextlib.contextmanager
def server_start(home: Path, failure=Exception):
    """Around a server's start on ``home``: its database from the kept copy if it has none, the first fresh one kept.

    Only a database this server creates from nothing may become the
    template, never one with history; a start that raises ``failure`` from
    a copy drops the copy and the template (:func:`forget`).
    """
    new = is_new(home)
    seeded = new and seed(home)
    try:
        yield
    except failure:
        if seeded:
            forget(home)
        raise
    if new and not seeded:
        remember(home)


def seed(home: Path) -> bool:
    """Give ``home`` a copy of the migrated database if it has no database yet; whether it did.

    The copy is linked into place, which fails rather than replace a
    database another command's server has created meanwhile.
    """
    from gmm_engine.atomic import temp_name

    template, database = template_path(), Path(home) / DATABASE
    if template is None or not is_new(home) or not template.is_file():
        return False
    database.parent.mkdir(parents=True, exist_ok=True)
    tmp = database.with_name(temp_name(database.name))
    try:
        shutil.copyfile(template, tmp)
        os.link(tmp, database)  # no-clobber: FileExistsError if a database appeared meanwhile
    except OSError as exc:
        logger.info("could not start from the migrated Prefect database %s (%s); migrating afresh", template, exc)
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    logger.info("Prefect database of %s copied from %s", home, template)
    return True


def forget(home: Path) -> None:
    """Drop the kept template, and ``home``'s copy of it: a server did not start from that copy."""
    template = template_path()
    for path in ([template] if template is not None else []) + [Path(home) / f"{DATABASE}{suffix}"
                                                                for suffix in _FILES]:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    logger.warning("a Prefect server did not start from the kept migrated database; it is dropped, the next "
                   "start migrates a fresh one")


def remember(home: Path) -> None:
    """Keep ``home``'s freshly migrated database as the template, if none is kept yet."""
    from gmm_engine.atomic import temp_name

    template, database = template_path(), Path(home) / DATABASE
    if template is None or template.exists() or not database.is_file():
        return
    tmp = template.with_name(temp_name(template.name))
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(database, timeout=10)) as con:
            # a schema that Prefect's migrations made, and nothing a command wrote into it
            if not con.execute("SELECT count(*) FROM alembic_version").fetchone()[0]:
                raise sqlite3.DatabaseError("no migration recorded")
            for table in ("flow_run", "deployment", "flow"):
                if con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]:
                    raise sqlite3.DatabaseError(f"it holds rows of {table}")
            con.execute("VACUUM INTO ?", (str(tmp),))
        os.replace(tmp, template)
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        logger.info("could not keep the migrated Prefect database in %s (%s)", template.parent, exc)
        return
    logger.info("kept the migrated Prefect database as %s for new work directories", template)


def prepare(timeout: float = 180.0) -> Path | None:
    """Keep the migrated database of this Prefect version now, as the first server on a machine would.

    A server starts on a temporary home, its fresh database is kept the
    moment it answers (:func:`server_start`), and it is stopped: a
    one-time ~8-14 s on these machines, paid by the install rather than by
    a person's first command.  A template already kept is left alone.

    Returns
    -------
    Path or None
        The template; None where the database is not SQLite here
        (``PREFECT_API_DATABASE_CONNECTION_URL`` set) or it could not be kept.

    Raises
    ------
    flows.prefect_server.ServerStartError
        The server did not come up within ``timeout`` seconds.
    """
    import tempfile

    from .prefect_server import free_port, start_server, stop_child

    template = template_path()
    if template is None or template.is_file():
        return template
    with tempfile.TemporaryDirectory(prefix="gmm-prefect-") as tmp:
        proc = start_server(Path(tmp) / "prefect", "127.0.0.1", free_port("127.0.0.1"), timeout)
        stop_child(proc)
    return template if template.is_file() else None


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        kept = prepare()
    except Exception as exc:  # noqa: BLE001 - an install goes on: the first server keeps one instead
        logger.warning("no migrated Prefect database kept now (%s); the first gmm command will migrate one", exc)
        sys.exit(0)
    if kept is not None:
        logger.info("migrated Prefect database: %s", kept)
