"""`gmm serve`: a real local Prefect server schedules score-partitions runs."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_zarr
from flows.prefect_server import LocalPrefectServer, ServerStartError, healthy, port_free
from gmm_engine import GaussianMixture
from pipeline.demo_data import write_partition
from pipeline.manifest import Manifest
from pipeline.registry import ModelRegistry
from pipeline.training import register_model

NAMES = ["a", "b", "c"]
GMM = str(Path(sys.executable).with_name("gmm"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "client-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1")
    return env


def _listening_addresses(pid) -> set:
    """IP addresses that the process ``pid`` or any descendant listens on (TCP)."""
    import psutil

    root = psutil.Process(pid)
    found = set()
    for p in [root, *root.children(recursive=True)]:
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        found |= {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}
    return found


@pytest.fixture
def workspace(tmp_path, blobs):
    X, _ = blobs
    work = tmp_path / "work"
    (work / "incoming").mkdir(parents=True)
    data = write_zarr(work / "train.zarr", X, NAMES, chunk_rows=3000)
    gm = GaussianMixture(3, covariance_type="diag", random_state=0, max_iter=30).fit(data)
    register_model(gm, data, ModelRegistry(work / "models"), contamination=0.01)
    return work, X


@pytest.mark.slow
def test_scheduled_run_scores_a_new_partition(tmp_path, workspace):
    work, X = workspace
    port = free_port()
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"interval_seconds: 5\nserver_port: {port}\nscore:\n  workdir: {work}\n"
                   "  cluster:\n    n_workers: 1\n")
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([GMM, "serve", "--config", str(cfg)], env=_env(tmp_path), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not healthy(f"http://127.0.0.1:{port}/api") and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(1)
        assert healthy(f"http://127.0.0.1:{port}/api"), "the local Prefect server never became healthy"
        # nothing of the tree listens beyond loopback: the Prefect server, and (once a run starts) Dask
        assert _listening_addresses(proc.pid) and _listening_addresses(proc.pid) <= {"127.0.0.1"}
        # the database and the server's log live under the work directory
        assert (work / "prefect" / "prefect.db").exists()
        write_partition(work / "incoming", "new-part", X[:400], NAMES, "parquet")
        manifest = work / "manifest.sqlite"
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            if manifest.exists() and "new-part" in Manifest(manifest).scored_ids():
                break
            time.sleep(2)
        else:
            pytest.fail("no scheduled run scored the partition:\n" + (tmp_path / "serve.log").read_text()[-3000:])
        entry = Manifest(manifest).get("new-part")
        assert entry.n_rows == 400 and entry.run_id.startswith("flow-run-")
        assert _listening_addresses(proc.pid) <= {"127.0.0.1"}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # the supervised server was stopped with the serve process
    deadline = time.monotonic() + 30
    while not port_free("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(1)
    assert port_free("127.0.0.1", port)


def test_local_server_refuses_a_busy_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"Port {port} on 127.0.0.1 is in use"):
            LocalPrefectServer(tmp_path, port=port).start()


def test_local_server_binds_loopback_by_default(tmp_path):
    server = LocalPrefectServer(tmp_path)
    assert server.host == "127.0.0.1" and server.api_url.startswith("http://127.0.0.1:")
