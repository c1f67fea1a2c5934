"""The manifest's SQLite database: schema, connections, and the "is this ours" checks.

Tables (schema version 2)
-------------------------
``meta``      application marker (:data:`APPLICATION`) and schema version.
``entries``   one row per scored partition (columns :data:`ENTRY_COLUMNS`;
              ``drift`` is the partition's drift verdict as JSON).
``claims``    one row per partition a run is scoring right now
              (columns :data:`CLAIM_COLUMNS`).
``failures``  every failed attempt, until the partition is scored
              (columns :data:`FAILURE_COLUMNS` and an autoincrement id).
``updates``   every model update attempted from scored partitions
              (columns :data:`UPDATE_COLUMNS` and an autoincrement id).

A version 1 manifest (no ``drift`` column, no ``updates``) is upgraded in
place when it is first opened, under the write lock; its entries keep
``drift`` empty.

Times a person reads (``scored_at``, ``failed_at``, ``meta.created_at``)
are ISO 8601 strings in UTC (:func:`utc_now_iso`); lease times
(``claimed_at``, ``expires_at``) are POSIX seconds, compared with the
manifest's clock.

Every call opens its own connection (:class:`Database` holds only the
path and the busy timeout, so it pickles to other processes).  Writes run
in ``BEGIN IMMEDIATE``: the write lock is taken before the first read, so
a check and the write that depends on it are one transaction.  Reads run
in a deferred transaction, so all reads of one call see one snapshot.

A file is only ever used when it is a gmm-stream manifest of a schema this
release knows: a directory, a file that is not SQLite, another
application's database or a newer schema is refused with
:class:`NotAManifestError` before anything is written (not even the WAL
switch).
"""

from __future__ import annotations

import datetime as _dt
import logging
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import ManifestError, NotAManifestError

logger = logging.getLogger(__name__)

APPLICATION = "gmm-stream.manifest"
SCHEMA_VERSION = 2

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
    run_id        TEXT NOT NULL,
    drift         TEXT
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
CREATE TABLE updates (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    parent        TEXT NOT NULL,
    version       TEXT,
    rule          TEXT NOT NULL,
    partitions    TEXT NOT NULL,
    n_rows        INTEGER NOT NULL,
    promoted      INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    run_id        TEXT NOT NULL
);
"""

#: what upgrades a version 1 manifest to version 2
_UPGRADE_1_TO_2 = ["ALTER TABLE entries ADD COLUMN drift TEXT",
                   _SCHEMA[_SCHEMA.index("CREATE TABLE updates"):]]

#: columns of ``entries``, in the order of :class:`~pipeline.manifest.ManifestEntry`'s fields
ENTRY_COLUMNS = (
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
    "drift",
)
#: columns of ``claims``, in the order of :class:`~pipeline.manifest.Claim`'s fields
CLAIM_COLUMNS = (
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
#: columns of ``failures`` a caller sees (the id only orders them)
FAILURE_COLUMNS = ("partition_id", "run_id", "error", "failed_at", "hostname")
#: columns of ``updates`` a caller sees (the id orders them)
UPDATE_COLUMNS = ("at", "parent", "version", "rule", "partitions", "n_rows", "promoted", "reason", "run_id")


def utc_now_iso() -> str:
    """Current time as an ISO 8601 string in UTC (``...+00:00``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def epoch_iso(t: float) -> str:
    """POSIX time ``t`` as an ISO 8601 string in UTC."""
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat()


class Database:
    """Connections to one manifest file (see the module docs); holds no open connection.

    Parameters
    ----------
    path : Path
        Absolute path of the database file.
    timeout : float
        Seconds to wait for another writer's lock before failing.
    """

    def __init__(self, path: Path, timeout: float):
        self.path = path
        self.timeout = timeout

    @contextmanager
    def connect(self):
        """A connection in autocommit mode with the busy timeout set; closed at the end."""
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def write(self):
        """A connection inside ``BEGIN IMMEDIATE``; commits on normal exit, rolls back on error."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self):
        """A connection inside a deferred transaction: all reads see one snapshot."""
        with self.connect() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    # -- creating or checking the schema -------------------------------------

    def init_schema(self) -> None:
        """Create the schema in an empty file, or check that the file is a manifest we can use.

        Raises
        ------
        NotAManifestError
            Not SQLite, another application's database, or a newer schema.
        ManifestError
            Any other SQLite error opening the file (permissions ...).
        """
        try:
            with self.connect() as conn:
                tables = _tables(conn)
                if tables:
                    self._check_ours(conn, tables)
                self._enable_wal(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # Re-check under the write lock: another process may have
                    # created the schema since the first look.
                    tables = _tables(conn)
                    if tables:
                        if self._check_ours(conn, tables) < SCHEMA_VERSION:
                            self._upgrade(conn)
                    else:
                        self._create(conn)
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

    def _create(self, conn) -> None:
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

    def _upgrade(self, conn) -> None:
        for stmt in _UPGRADE_1_TO_2:
            conn.execute(stmt)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        logger.info("upgraded manifest %s to schema version %d", self.path, SCHEMA_VERSION)

    def _foreign(self, what: str) -> NotAManifestError:
        return NotAManifestError(
            f"{self.path} is not a gmm-stream manifest: {what}. Nothing was changed. "
            "Pass the path of an existing manifest or of a new file, or move this file away."
        )

    def _check_ours(self, conn, tables: set[str]) -> int:
        """The schema version of a manifest this release can use; NotAManifestError otherwise."""
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
        return version

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


def _tables(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def open_database(path: Path, timeout: float) -> Database:
    """The :class:`Database` at ``path``, its schema created or checked (parent directories made).

    Raises
    ------
    NotAManifestError
        ``path`` is a directory, or a file that is not a manifest (see
        :meth:`Database.init_schema`).
    """
    if path.is_dir():
        raise NotAManifestError(
            f"Manifest path {path} is a directory; pass a file path such as {path / 'manifest.sqlite'}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    db = Database(path, timeout)
    db.init_schema()
    return db
