"""The warm runner: commands forked from a process that imported everything once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import warm_runner
from flows.runtime import PREFECT_DEFAULTS
from pipeline.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
GMM = str(Path(sys.executable).with_name("gmm"))
FAKE_API = "http://127.0.0.1:9/api"


def _base_env() -> dict:
    """The environment of a command typed in a shell: no Prefect settings, the kept server's mode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "GMM_STREAM_PREFECT"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _wait_ready(home: Path, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        state = warm_runner._read_state(home)
        if state is not None and state.get("socket") and Path(state["socket"]).exists():
            return state
        time.sleep(0.2)
    pytest.fail("the runner never became ready:\n" + log.read_text()[-3000:])


def _start_runner(home: Path, server_pid: int, log: Path) -> subprocess.Popen:
    """``python -m flows.warm_runner`` for ``home`` beside the 'server' ``server_pid``, as a command launches it."""
    env = {**_base_env(), **PREFECT_DEFAULTS, "PREFECT_HOME": str(home.absolute()), "PREFECT_API_URL": FAKE_API}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "flows.warm_runner", str(home), str(server_pid)],
                                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def runner(tmp_path):
    """A runner for tmp_path/work, as the kept server's would be (its 'server' is this test process)."""
    work = tmp_path / "work"
    home = Workspace(work).prefect_home
    home.mkdir(parents=True)
    log = tmp_path / "runner.log"
    proc = _start_runner(home, os.getpid(), log)
    try:
        state = _wait_ready(home, proc, log)
        yield work, home, proc, log, state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_a_command_runs_as_a_fork_with_its_streams_directory_and_exit_code(runner, tmp_path):
    work, home, proc, log, state = runner
    assert state["pid"] == proc.pid and state["server_pid"] == os.getpid()
    assert state["env"]["PREFECT_API_URL"] == FAKE_API
    assert os.stat(state["socket"]).st_mode & 0o777 == 0o600  # the user's only
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # a relative --workdir: the fork must take it in the command's own directory
    relative = os.path.relpath(work, elsewhere)
    r = subprocess.run([GMM, "fit", "--workdir", relative], cwd=elsewhere,
                       env=_base_env(), capture_output=True, text=True, timeout=120)
    # the command's expected error, on its own stderr, from the fork: one line, exit code 1
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"Error: No training data at {elsewhere / relative / 'data' / 'train.zarr'}: ingest it first: "
        f"`gmm ingest --source FILE --workdir {elsewhere / relative}`."
    ]
    assert r.stdout == ""
    text = log.read_text()
    assert f"gmm fit --workdir {relative}" in text and "exited with 1" in text
    # --help answers from the fork too (exit code 0, on stdout)
    h = subprocess.run([GMM, "score", "--workdir", str(work), "--help"], env=_base_env(),
                       capture_output=True, text=True, timeout=120)
    assert h.returncode == 0 and "Score every unscored partition" in h.stdout


def test_other_settings_or_code_run_in_the_command_s_own_process(runner, tmp_path):
    work, home, proc, log, state = runner
    # Prefect settings the runner did not import with: not forked, the runner stays
    env = {**_base_env(), "PREFECT_LOGGING_LEVEL": "DEBUG"}
    r = subprocess.run([GMM, "fit", "--workdir", str(work)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "No training data" in r.stderr
    assert "gmm fit" not in log.read_text() and proc.poll() is None
    # a runner of other code is stopped, and the command runs in its own process
    stale = {**state, "fingerprint": "0" * 64}
    warm_runner._state_path(home).write_text(json.dumps(stale))
    r = subprocess.run([GMM, "fit", "--workdir", str(work)], env=_base_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "No training data" in r.stderr
    proc.wait(timeout=30)
    assert "gmm fit" not in log.read_text()
    assert not warm_runner._state_path(home).exists()


def test_the_runner_ends_with_its_server(tmp_path):
    home = tmp_path / "prefect"
    home.mkdir()
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    log = tmp_path / "runner.log"
    proc = _start_runner(home, server.pid, log)
    try:
        state = _wait_ready(home, proc, log)
        server.kill()
        server.wait()
        assert proc.wait(timeout=30) == 0
        assert not warm_runner._state_path(home).exists() and not Path(state["socket"]).exists()
    finally:
        server.kill()
        if proc.poll() is None:
            proc.kill()


def test_a_deleted_work_directory_takes_its_server_and_runner_down(tmp_path):
    """rm -rf of a work directory while its server runs: nothing could find that server again to stop it."""
    home = tmp_path / "work" / "prefect"
    home.mkdir(parents=True)
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    log = tmp_path / "runner.log"
    proc = _start_runner(home, server.pid, log)
    try:
        state = _wait_ready(home, proc, log)
        shutil.rmtree(tmp_path / "work")
        assert proc.wait(timeout=30) == 0
        assert server.wait(timeout=30) == -signal.SIGTERM
        assert not Path(state["socket"]).exists()
        assert "was deleted: stopping its Prefect server" in log.read_text()
    finally:
        server.kill()
        server.wait()
        if proc.poll() is None:
            proc.kill()


def test_fingerprint_follows_every_module_file(tmp_path):
    for package in warm_runner.PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "a.py").write_text("x = 1\n")
    first = warm_runner.fingerprint(tmp_path)
    assert warm_runner.fingerprint(tmp_path) == first
    (tmp_path / "pipeline" / "a.py").write_text("x = 22\n")
    assert warm_runner.fingerprint(tmp_path) != first
    assert warm_runner.fingerprint() == warm_runner.fingerprint()


def test_socket_path_stays_short(tmp_path):
    assert warm_runner.socket_path(tmp_path) == str(tmp_path / "runner.sock")
    deep = tmp_path / ("d" * 120)
    path = warm_runner.socket_path(deep)
    assert len(path.encode()) < 100 and path == warm_runner.socket_path(deep)


def test_no_fork_without_the_kept_server(monkeypatch, tmp_path):
    state = {"env": {"PREFECT_API_URL": FAKE_API}}
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("GMM_STREAM_PREFECT", "ephemeral")
    assert warm_runner.command_import_env(tmp_path, state) is None
    monkeypatch.delenv("GMM_STREAM_PREFECT")
    env = warm_runner.command_import_env(tmp_path, state)
    assert env["PREFECT_HOME"] == str(tmp_path) and env["PREFECT_API_URL"] == FAKE_API
    monkeypatch.setenv("PREFECT_API_URL", "http://team:4200/api")  # a team's server: no kept server, no runner
    assert warm_runner.command_import_env(tmp_path, state) is None
    assert warm_runner.delegate(tmp_path, ["fit"]) is None  # no runner recorded at all


def test_wait_ready_waits_only_for_a_live_runner(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        warm_runner._write_state(tmp_path, sleeper.pid, os.getpid(), socket=None)  # launched, still importing
        t = time.monotonic()
        assert not warm_runner.wait_ready(tmp_path, 0.3)
        assert time.monotonic() - t >= 0.3
        warm_runner._write_state(tmp_path, sleeper.pid, os.getpid(), socket=str(tmp_path / "s"))
        assert warm_runner.wait_ready(tmp_path, 0.0)
    finally:
        sleeper.kill()
        sleeper.wait()
    t = time.monotonic()
    assert not warm_runner.wait_ready(tmp_path, 30.0)  # its process is gone: no wait
    assert time.monotonic() - t < 5
    assert not warm_runner.wait_ready(tmp_path / "none", 1.0)  # no runner recorded


def test_the_runner_predicts_the_environment_a_command_sets_up(monkeypatch, tmp_path):
    """A fork serves a command only when the settings it imported with are the command's: the two must agree."""
    from flows import kept_server, runtime

    for name in {*PREFECT_DEFAULTS, "PREFECT_HOME", "PREFECT_API_URL", "GMM_STREAM_PREFECT",
                 *(k for k in os.environ if k.startswith(warm_runner.IMPORT_ENV_PREFIXES))}:
        monkeypatch.setenv(name, "")  # recorded, so that what configure sets is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    workdir = Path("work")  # spelled relative, as a user types it
    home = Workspace(workdir).prefect_home
    server = kept_server.KeptServer(pid=os.getpid(), host="127.0.0.1", port=9, started_at="")
    monkeypatch.setattr(kept_server, "ensure", lambda home, meanwhile=None: (server, False))
    monkeypatch.setattr(warm_runner, "ensure", lambda home, pid: None)
    monkeypatch.setattr(runtime, "_refresh_prefect_settings", lambda: None)
    predicted = warm_runner.command_import_env(home, {"env": {"PREFECT_API_URL": FAKE_API}})
    runtime.configure(workdir)
    assert predicted == warm_runner.import_env()
    assert predicted["PREFECT_HOME"] == str(tmp_path / home) and predicted["PREFECT_API_URL"] == FAKE_API
    assert {k: predicted[k] for k in PREFECT_DEFAULTS if k.startswith("PREFECT_")} == {
        k: v for k, v in PREFECT_DEFAULTS.items() if k.startswith("PREFECT_")}
