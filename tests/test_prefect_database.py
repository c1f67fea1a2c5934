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
    for table in ("flow", "flow_run", "deployment"):  # as migrated: empty until a command writes
        con.execute(f"CREATE TABLE {table} (id TEXT)")
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


def test_a_database_with_history_or_leftovers_is_never_kept_and_a_failed_copy_is_dropped(tmp_path, cache):
    used, leftover = tmp_path / "w1" / "prefect", tmp_path / "w2" / "prefect"
    con = _database_in_wal(used / "prefect.db", ["a"])
    con.execute("INSERT INTO flow_run VALUES ('a run')")
    con.commit()
    con.close()
    prefect_database.remember(used)  # a command has written into it: not a template
    assert not prefect_database.template_path().exists()
    leftover.mkdir(parents=True)
    (leftover / "prefect.db-wal").write_bytes(b"a log SQLite would replay")
    assert not prefect_database.is_new(leftover) and prefect_database.is_new(tmp_path / "w3" / "prefect")
    fresh = tmp_path / "w3" / "prefect"
    _database_in_wal(fresh / "prefect.db", ["a"]).close()
    prefect_database.remember(fresh)
    assert prefect_database.seed(leftover) is False  # never next to another database's log
    seeded = tmp_path / "w4" / "prefect"
    assert prefect_database.seed(seeded) is True
    prefect_database.forget(seeded)  # its server did not come up: the copy and the template go
    assert not prefect_database.template_path().exists() and prefect_database.is_new(seeded)


def test_a_kept_server_keeps_only_a_database_it_created_and_drops_a_copy_it_could_not_start_from(
        tmp_path, cache, monkeypatch):
    # the server itself is faked: the test is about which database kept_server.start keeps or drops
    import subprocess
    import sys

    from flows import kept_server, prefect_server
    from flows.prefect_server import ServerStartError

    procs = []

    def started(home, host, port):  # a fresh server migrates its new database, then answers
        if prefect_database.is_new(home):
            _database_in_wal(home / "prefect.db", ["migrated"]).close()
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        return procs[-1]

    def dead(home, host, port):
        procs.append(subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))
        return procs[-1]

    def wait_healthy(proc, api_url, home, timeout):
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return  # still running: it answers
        raise ServerStartError(f"prefect server exited with code {proc.returncode}")

    monkeypatch.setattr(prefect_server, "wait_healthy", wait_healthy)
    monkeypatch.setattr(prefect_server, "terminate", lambda pid: None)
    monkeypatch.setattr(prefect_server, "launch", started)
    try:
        old = tmp_path / "old" / "prefect"
        _database_in_wal(old / "prefect.db", ["with history"]).close()
        kept_server.start(old)
        assert not prefect_database.template_path().exists()  # a database it did not create: never kept
        kept_server.start(tmp_path / "new" / "prefect")
        assert prefect_database.template_path().is_file()  # the one it migrated from nothing
        monkeypatch.setattr(prefect_server, "launch", dead)
        with pytest.raises(ServerStartError):
            kept_server.start(tmp_path / "third" / "prefect")  # seeded from the copy, and does not come up
        assert not prefect_database.template_path().exists()
        assert prefect_database.is_new(tmp_path / "third" / "prefect")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_server_start_interrupted_stops_the_server(tmp_path, cache, monkeypatch):
    """Ctrl-C while the server comes up: nothing has recorded it, so nothing could stop it later."""
    import subprocess
    import sys

    from flows import prefect_server

    procs = []

    def launched(home, host, port):
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                      start_new_session=True))
        return procs[-1]

    def interrupted(proc, api_url, home, timeout):
        raise KeyboardInterrupt

    monkeypatch.setattr(prefect_server, "launch", launched)
    monkeypatch.setattr(prefect_server, "wait_healthy", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            prefect_server.start_server(tmp_path / "prefect", "127.0.0.1", 9, 5.0)
        assert procs[0].wait(timeout=30) == -15  # SIGTERM to its process group
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_prepare_keeps_the_template_once_and_stops_its_server(tmp_path, cache, monkeypatch):
    """What make install runs: the first server on the machine, without a work directory or a command waiting."""
    import subprocess
    import sys

    from flows import prefect_server

    procs, homes = [], []

    def started(home, host, port):  # migrates its new database, then answers until stopped
        homes.append(home)
        _database_in_wal(home / "prefect.db", ["migrated"]).close()
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                      start_new_session=True))
        return procs[-1]

    monkeypatch.setattr(prefect_server, "launch", started)
    monkeypatch.setattr(prefect_server, "wait_healthy", lambda proc, api_url, home, timeout: None)
    try:
        template = prefect_database.prepare()
        assert template == prefect_database.template_path() and template.is_file()
        assert procs[0].poll() == -15  # stopped (SIGTERM to its group) and reaped
        assert not homes[0].exists()  # its temporary home is gone
        assert prefect_database.prepare() == template and len(procs) == 1  # kept already: no server
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_prepare_leaves_a_database_configured_elsewhere_alone(cache, monkeypatch):
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://team/prefect")
    assert prefect_database.prepare() is None
    assert not cache.exists()
