"""The command line: expected errors before anything starts, and the Prefect server kept for a work directory."""

import contextlib
import json
import os
import subprocess
import sys
import time
from unittest import mock

import httpx
import numpy as np
import pytest
from conftest import write_zarr
from typer.testing import CliRunner

from flows.cli import app

GMM = [sys.executable, "-m", "flows.cli"]


def _gmm(args, env=None, timeout=240):
    return subprocess.run([*GMM, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command, extra, message", [
    ("fit", [], r"No training data at .*data/train.zarr: ingest it first: `gmm ingest --source FILE --workdir"),
    ("select", [], r"No training data at .*data/train.zarr: ingest it first"),
    ("score", [], r"No current model under .*models: run `gmm fit` or `gmm select` first"),
    ("ingest", ["--source", "no-such.csv"], r"The source .*no-such.csv does not exist: check the path"),
])
def test_expected_errors_are_one_line_before_prefect_or_dask_start(tmp_path, command, extra, message):
    res = _gmm([command, "--workdir", str(tmp_path / "w"), *extra], timeout=60)
    assert res.returncode == 1, res.stderr
    lines = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    import re

    assert re.search(message, lines[0]), lines[0]
    # nothing started: no Prefect home or database, no server record
    assert not (tmp_path / "w" / "prefect").exists()


def test_too_many_components_and_a_missing_tls_file_are_found_early(tmp_path):
    work = tmp_path / "w"
    write_zarr(work / "data" / "train.zarr", np.arange(12.0).reshape(4, 3))
    runner = CliRunner()
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(f"workdir: {work}\nmodel:\n  n_components: 5\n")
    res = runner.invoke(app, ["fit", "--config", str(cfg)])
    assert res.exit_code == 1 and "n_components=5 but the training data" in res.output
    cfg.write_text(f"workdir: {work}\ncluster:\n  address: tls://127.0.0.1:1\n  tls:\n    ca_file: ca.pem\n"
                   "    cert_file: c.pem\n    key_file: k.pem\n")
    res = runner.invoke(app, ["fit", "--config", str(cfg)])
    assert res.exit_code == 1 and "TLS ca_file" in res.output and "does not exist" in res.output
    assert not (work / "prefect").exists()


def test_a_demo_directory_holding_other_files_is_refused_early(tmp_path):
    (tmp_path / "thesis.tex").write_text("keep me")
    res = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path)])
    assert res.exit_code == 1 and "was not made by `gmm demo`" in res.output
    assert (tmp_path / "thesis.tex").read_text() == "keep me" and not (tmp_path / "prefect").exists()


def test_the_server_kept_for_a_work_directory_is_started_once_reused_and_stopped(tmp_path):
    """The first command starts the server, the second reuses it; status and stop say so.

    The first server of a machine (here: of this test's cache) keeps its
    freshly migrated database; another work directory's server starts from
    a copy of it.
    """
    import sqlite3

    from flows.prefect_database import CACHE_VARIABLE, template_path

    work, other = tmp_path / "w", tmp_path / "w2"
    src = tmp_path / "tiny.csv"
    src.write_text("a,b,c\n1,2,3\n4,5,6\n")
    env = {"GMM_STREAM_PREFECT": "", "PREFECT_HOME": "", "PREFECT_API_URL": ""}
    env = {k: v for k, v in {**os.environ}.items() if k not in env}
    env[CACHE_VARIABLE] = str(tmp_path / "cache")

    def first_block_type(db):
        with contextlib.closing(sqlite3.connect(db)) as con:
            return con.execute("SELECT id FROM block_type ORDER BY slug LIMIT 1").fetchone()

    try:
        first = subprocess.run([*GMM, "ingest", "--source", str(src), "--workdir", str(work), "--no-progress"],
                               capture_output=True, text=True, timeout=300, env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "Started a Prefect server for" in first.stderr and "gmm server stop" in first.stderr
        assert "Warning" not in first.stderr, first.stderr[-3000:]  # start-up logs print plainly
        state = (work / "prefect" / "server.json").read_text()
        second = subprocess.run([*GMM, "ingest", "--source", str(src), "--workdir", str(work), "--overwrite",
                                 "--no-progress"], capture_output=True, text=True, timeout=300, env=env)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "Started a Prefect server" not in second.stderr
        assert (work / "prefect" / "server.json").read_text() == state  # the same server
        # the warm runner started beside the server: once it is ready, a command runs as its fork
        runner_state, runner_log = work / "prefect" / "runner.json", work / "prefect" / "runner.log"
        deadline = time.monotonic() + 180
        while not (runner_state.exists() and json.loads(runner_state.read_text())["socket"]) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        runner = json.loads(runner_state.read_text())
        assert runner["server_pid"] == json.loads(state)["pid"]
        api = f"http://127.0.0.1:{json.loads(state)['port']}/api/flow_runs/count"

        def flow_runs():
            return int(httpx.post(api, json={}, timeout=30).json())

        runs = flow_runs()
        forked = subprocess.run([*GMM, "ingest", "--source", str(src), "--workdir", str(work), "--overwrite",
                                 "--no-progress"], capture_output=True, text=True, timeout=300, env=env)
        assert forked.returncode == 0, forked.stderr[-3000:]
        assert flow_runs() == runs + 1  # recorded on the kept server, as a command run in its own process
        assert "Wrote " in forked.stdout and "2 rows x 3 features" in forked.stdout
        assert "gmm ingest --source" in runner_log.read_text() and "exited with 0" in runner_log.read_text()
        status = subprocess.run([*GMM, "server", "status", "--workdir", str(work)], capture_output=True,
                                text=True, timeout=60, env=env)
        assert status.returncode == 0 and "Running: http://127.0.0.1:" in status.stdout
        with mock.patch.dict(os.environ, {CACHE_VARIABLE: env[CACHE_VARIABLE]}):
            template = template_path()
        assert template.is_file() and first_block_type(template) is not None
        third = subprocess.run([*GMM, "ingest", "--source", str(src), "--workdir", str(other), "--no-progress"],
                               capture_output=True, text=True, timeout=300, env=env)
        assert third.returncode == 0, third.stderr[-3000:]
        # the same rows as the kept database (block types get new ids when a database is migrated afresh)
        assert first_block_type(other / "prefect" / "prefect.db") == first_block_type(template)
    finally:
        subprocess.run([*GMM, "server", "stop", "--workdir", str(other)], capture_output=True, timeout=120, env=env)
        stopped = subprocess.run([*GMM, "server", "stop", "--workdir", str(work)], capture_output=True,
                                 text=True, timeout=120, env=env)
    assert stopped.returncode == 0 and "Stopped http://127.0.0.1:" in stopped.stdout
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and subprocess.run(
            [*GMM, "server", "status", "--workdir", str(work)], capture_output=True, env=env).returncode == 0:
        time.sleep(1)
    assert not (work / "prefect" / "server.json").exists()
    # the runner stopped with it
    assert not (work / "prefect" / "runner.json").exists()
    from flows.warm_runner import process_alive

    assert not process_alive(runner["pid"])
    assert (work / "prefect" / "prefect.db").exists()  # the run history stays


def test_small_data_is_fitted_and_scored_without_starting_a_cluster(tmp_path, monkeypatch):
    """A LocalCluster costs seconds: data that fits in memory is computed in the flow's own process."""
    from flows import cluster as flow_cluster_mod
    from pipeline.demo_data import write_partition

    def refuse(*args, **kwargs):
        raise AssertionError("a Dask cluster was started for small data")

    monkeypatch.setattr(flow_cluster_mod, "cluster", refuse)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    work = tmp_path / "w"
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(500, 3)) + 6 * k for k in range(2)])
    write_zarr(work / "data" / "train.zarr", X, ["a", "b", "c"])
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(f"workdir: {work}\nmodel:\n  n_components: 2\n")
    runner = CliRunner()
    res = runner.invoke(app, ["fit", "--config", str(cfg), "--no-progress"])
    assert res.exit_code == 0, res.output
    (work / "incoming").mkdir(exist_ok=True)
    write_partition(work / "incoming", "p1", X[:100], ["a", "b", "c"], "parquet")
    res = runner.invoke(app, ["score", "--workdir", str(work), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "scored 1 partitions" in res.output


def test_missing_values_policies_are_checked_early(tmp_path):
    """Training data with gaps needs model.missing: marginalize; marginalize needs a GaussianMixture."""
    from gmm_engine import BayesianGaussianMixture
    from pipeline.ingest import ingest
    from pipeline.registry import ModelRegistry
    from pipeline.training import register_model

    work = tmp_path / "w"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    X[::7, 1] = np.nan
    np.savetxt(tmp_path / "raw.csv", X, delimiter=",", header="a,b,c", comments="")
    ingest(str(tmp_path / "raw.csv"), work / "data" / "train.zarr", bad_rows="marginalize")
    runner = CliRunner()
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(f"workdir: {work}\nmodel:\n  n_components: 2\n")
    res = runner.invoke(app, ["fit", "--config", str(cfg)])
    assert res.exit_code == 1 and "43 rows with missing values" in res.output
    assert "set model.missing: marginalize" in res.output and not (work / "prefect").exists()
    complete = write_zarr(tmp_path / "complete.zarr", X[~np.isnan(X).any(axis=1)], ["a", "b", "c"])
    register_model(BayesianGaussianMixture(n_components=2, random_state=0, max_iter=300).fit(complete), complete,
                   ModelRegistry(work / "models"), contamination=0.01)
    (work / "incoming").mkdir()
    cfg = tmp_path / "score.yaml"
    cfg.write_text(f"workdir: {work}\nbad_rows: marginalize\n")
    res = runner.invoke(app, ["score", "--config", str(cfg)])
    assert res.exit_code == 1 and "bad_rows='marginalize' needs a GaussianMixture" in res.output
    assert not (work / "prefect").exists()


def test_loading_a_model_and_the_report_helpers_imports_neither_scipy_stats_nor_matplotlib():
    """What every command's checks import stays light: scipy.stats and matplotlib cost ~1 s each at import.

    They load where p-values are computed and plots drawn; a command that
    only loads a model (the preflight of `gmm score`) or writes a text
    report (ingest, score) does not pay for them.
    """
    code = (
        "import sys; import pipeline.drift, pipeline.registry, pipeline.reports, flows.preflight; "
        "print(sorted(m for m in ('scipy.stats', 'matplotlib', 'pipeline.plots') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_kept_server_that_fails_to_start_is_one_error_and_leaves_no_api_url(tmp_path, monkeypatch):
    """The warm runner is launched beside the server's start-up; if the server dies, its log is named, no URL
    stays and the runner is stopped."""
    from flows import prefect_server, runtime
    from flows.prefect_server import ServerStartError

    for key in ("PREFECT_HOME", "PREFECT_API_URL", runtime.PREFECT_MODE_VARIABLE):
        monkeypatch.delenv(key, raising=False)
    warmed = []

    def dead_launch(home, host, port):
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    def warm(api_url):  # as _import_prefect does, without the import
        os.environ["PREFECT_API_URL"] = api_url

    monkeypatch.setattr(runtime, "_import_prefect", warm)

    def runner_launch(home, server_pid, api_url=None):  # as warm_runner.launch records it, without the process
        warmed.append(api_url)
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        warm_runner._write_state(home, sleeper.pid, server_pid, socket=None)
        return sleeper

    from flows import warm_runner

    monkeypatch.setattr(prefect_server, "launch", dead_launch)
    monkeypatch.setattr(warm_runner, "launch", runner_launch)
    with pytest.raises(ServerStartError, match=r"prefect server exited with code 3; see .*prefect/server.log"):
        runtime.configure(tmp_path / "w")
    assert len(warmed) == 1 and warmed[0].startswith("http://127.0.0.1:")
    assert not (tmp_path / "w" / "prefect" / "runner.json").exists()  # the runner beside it was stopped
    assert "PREFECT_API_URL" not in os.environ
    assert not (tmp_path / "w" / "prefect" / "server.json").exists()
