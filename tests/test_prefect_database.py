"""The migrated Prefect database a new work directory's server starts from (flows.prefect_database)."""

import sqlite3

import pytest

from flows import prefect_database


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(prefect_database.CACHE_VARIABLE, str(tmp_path / "cache"))
    for name in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache"


def _database_in_wal(path, rows):
    # as a running server leaves it: WAL mode, the latest writes still in the write-ahead log
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE alembic_version (version_num TEXT)")
    con.executemany("INSERT INTO alembic_version VALUES (?)", [(r,) for r in rows])
    con.commit()
    return con  # kept open, so the log is not checkpointed into the file


def test_a_fresh_database_is_kept_whole_and_seeds_the_next_work_directory(tmp_path, cache):
    first, second = tmp_path / "w1" / "prefect", tmp_path / "w2" / "prefect"
    assert prefect_database.seed(first) is False  # nothing kept yet
    live = _database_in_wal(first / "prefect.db", ["a", "b"])
    try:
        assert (first / "prefect.db-wal").stat().st_size > 0
        prefect_database.remember(first)
    finally:
        live.close()
    template = prefect_database.template_path()
    assert template.is_file() and template.parent.parent == cache
    assert not list(template.parent.glob("*-wal"))  # one self-contained file
    assert prefect_database.seed(second) is True
    with sqlite3.connect(second / "prefect.db") as con:
        assert sorted(r for (r,) in con.execute("SELECT version_num FROM alembic_version")) == ["a", "b"]
    assert sorted(p.name for p in second.iterdir()) == ["prefect.db"]  # no temporary left behind


def test_a_kept_template_is_never_replaced_and_an_existing_database_never_overwritten(tmp_path, cache):
    first, other = tmp_path / "w1" / "prefect", tmp_path / "w2" / "prefect"
    _database_in_wal(first / "prefect.db", ["first"]).close()
    prefect_database.remember(first)
    _database_in_wal(other / "prefect.db", ["history of w2"]).close()
    prefect_database.remember(other)  # a template exists: kept as it was
    assert prefect_database.seed(other) is False  # w2 has its own database (its run history): untouched
    with sqlite3.connect(prefect_database.template_path()) as con:
        assert [r for (r,) in con.execute("SELECT version_num FROM alembic_version")] == ["first"]
    with sqlite3.connect(other / "prefect.db") as con:
        assert [r for (r,) in con.execute("SELECT version_num FROM alembic_version")] == ["history of w2"]


def test_a_database_configured_elsewhere_or_an_unwritable_cache_changes_nothing(tmp_path, cache, monkeypatch):
    home = tmp_path / "w1" / "prefect"
    _database_in_wal(home / "prefect.db", ["a"]).close()
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://db/prefect")
    assert prefect_database.template_path() is None
    prefect_database.remember(home)
    assert not cache.exists()
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL")
    cache.parent.mkdir(exist_ok=True)
    cache.write_text("a file where the cache directory should be")
    prefect_database.remember(home)  # logged, not raised: it only costs the start-up time it saves
    assert prefect_database.seed(tmp_path / "w2" / "prefect") is False
    assert not (tmp_path / "w2" / "prefect" / "prefect.db").exists()
