"""Starting and stopping local Prefect servers (flows.prefect_server): no server is ever left running unknown.

The server is faked by a sleeping process in a session of its own, so the
tests are about the processes started and stopped, not about Prefect.
"""

import subprocess
import sys
import time

import pytest

from flows import kept_server, prefect_database, prefect_server
from flows.prefect_server import LocalPrefectServer, ServerStartError


@pytest.fixture
def procs(tmp_path, monkeypatch):
    """Every faked server launched; each killed at the end whatever the test did."""
    monkeypatch.setenv(prefect_database.CACHE_VARIABLE, str(tmp_path / "cache"))
    started = []

    def launch(home, host, port):
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                        start_new_session=True))
        return started[-1]

    monkeypatch.setattr(prefect_server, "launch", launch)
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _ended(proc, timeout=30.0) -> bool:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_failure_after_the_server_answers_stops_it(tmp_path, procs, monkeypatch):
    """Keeping the fresh database (or Ctrl-C then) is part of the start: the server is stopped, not orphaned."""
    monkeypatch.setattr(prefect_server, "wait_healthy", lambda proc, api_url, home, timeout: None)

    def interrupted(home):
        raise KeyboardInterrupt

    monkeypatch.setattr(prefect_database, "remember", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prefect_server.start_server(tmp_path / "prefect", "127.0.0.1", 9, 5.0)
    assert len(procs) == 1 and _ended(procs[0]) and procs[0].returncode == -15


def test_a_kept_server_its_state_file_cannot_record_is_stopped(tmp_path, procs, monkeypatch):
    import gmm_engine.atomic

    monkeypatch.setattr(prefect_server, "wait_healthy", lambda proc, api_url, home, timeout: None)

    def full_disk(path, value):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gmm_engine.atomic, "write_json", full_disk)
    with pytest.raises(OSError, match="No space left"):
        kept_server.start(tmp_path / "prefect")
    assert len(procs) == 1 and _ended(procs[0])
    assert kept_server.find(tmp_path / "prefect") is None


def test_stop_during_a_restart_stops_the_server_being_started(tmp_path, procs, monkeypatch):
    """gmm serve's supervisor: Ctrl-C while it restarts a server that died must stop the new one too."""
    starts = []

    def wait_healthy(proc, api_url, home, timeout):
        starts.append(proc)
        if len(starts) == 1:
            return  # the first start answers at once
        while proc.poll() is None:  # a restart that takes its time
            time.sleep(0.05)
        raise ServerStartError(f"prefect server exited with code {proc.returncode}")

    monkeypatch.setattr(prefect_server, "wait_healthy", wait_healthy)
    monkeypatch.setattr(prefect_server, "healthy", lambda api_url, timeout=2.0: False)
    monkeypatch.setattr(prefect_server, "port_free", lambda host, port: True)
    server = LocalPrefectServer(tmp_path / "prefect", port=9).start()
    try:
        procs[0].kill()  # the server dies; the watcher restarts it
        deadline = time.monotonic() + 30
        while len(starts) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(starts) == 2 and server.restarts == 1
    finally:
        server.stop()
    assert _ended(procs[1]), "the server started by the restart was left running"
    assert not server._watcher.is_alive()
