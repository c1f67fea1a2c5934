"""`gmm deploy --pool`: the scoring deployment on a work pool of a Prefect server, run by a process worker."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_zarr
from flows.prefect_server import LocalPrefectServer, free_port
from gmm_engine import GaussianMixture
from pipeline.demo_data import write_partition
from pipeline.manifest import Manifest
from pipeline.registry import ModelRegistry
from pipeline.training import register_model

NAMES = ["a", "b", "c"]
BIN = Path(sys.executable).parent


def _stop(proc):
    """A Prefect worker needs two SIGTERMs to stop (the second makes it exit at once)."""
    for _ in range(2):
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        proc.kill()


@pytest.mark.slow
def test_deploy_to_a_process_work_pool_and_a_worker_runs_it(tmp_path, blobs):
    X, _ = blobs
    work = tmp_path / "work"
    (work / "incoming").mkdir(parents=True)
    data = write_zarr(work / "data" / "train.zarr", X, NAMES, chunk_rows=3000)
    gm = GaussianMixture(3, covariance_type="diag", random_state=0, max_iter=30).fit(data)
    register_model(gm, data, ModelRegistry(work / "models"), contamination=0.01)
    write_partition(work / "incoming", "w-1", X[:400], NAMES, "csv")
    server = LocalPrefectServer(tmp_path / "server-home", port=free_port("127.0.0.1", 4300)).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "GMM_STREAM_PREFECT"}
    env.update(PREFECT_API_URL=server.api_url, PREFECT_HOME=str(tmp_path / "client-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_WORKER_QUERY_SECONDS="1")
    worker = None
    try:
        cfg = tmp_path / "serve.yaml"
        cfg.write_text(f"interval_seconds: 3600\ndeployment_name: deploy-test\nscore:\n  workdir: {work}\n")
        res = subprocess.run([str(BIN / "gmm"), "deploy", "--config", str(cfg), "--pool", "gmm-test-pool"],
                             capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Deployed score-partitions/deploy-test to the process work pool 'gmm-test-pool'" in res.stdout
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "gmm-test-pool"],
                                  env=env, stdout=open(tmp_path / "worker.log", "wb"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        run = subprocess.run(
            [sys.executable, "-c", "from prefect.deployments import run_deployment; "
             "r = run_deployment('score-partitions/deploy-test', timeout=240); print(r.state.type.value)"],
            capture_output=True, text=True, timeout=300, env=env)
        assert run.stdout.strip().endswith("COMPLETED"), run.stdout + run.stderr + (tmp_path / "worker.log").read_text()[-3000:]
        assert Manifest(work / "manifest.sqlite").scored_ids() == {"w-1"}
    finally:
        if worker is not None:
            _stop(worker)
        server.stop()
