"""Faults survived: killed workers, drivers and scoring runs; lost schedulers; races.

The multi-process tests start a real ``dask scheduler`` and ``dask worker``
processes on 127.0.0.1 (and ``gmm`` commands as subprocesses) and kill
them with SIGKILL.  They take minutes, so they are marked ``slow``
(``make test-slow``); the quick ones run in ``make test``.
"""

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_zarr
from gmm_engine import GaussianMixture
from pipeline.cluster import ClusterUnavailableError, connect
from pipeline.demo_data import make_true_mixture, sample_rows, write_partition
from pipeline.manifest import Manifest
from pipeline.registry import ModelRegistry
from pipeline.scores_store import read_scores
from pipeline.training import register_model

BIN = Path(sys.executable).parent
ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
NAMES = ["f0", "f1", "f2", "f3"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", DASK_LOGGING__DISTRIBUTED="warning")
    return env


class ExternalCluster:
    """``dask scheduler`` + ``dask worker`` processes, each in its own process group."""

    def __init__(self, n_workers=2, port=None):
        self.port = port or free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.n_workers = n_workers
        self.scheduler = None
        self.workers = []

    def _spawn(self, *args):
        return subprocess.Popen([str(BIN / "dask"), *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "DASK_LOGGING__DISTRIBUTED": "warning"})

    def start(self):
        self.scheduler = self._spawn("scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                     "--no-dashboard")
        for _ in range(self.n_workers):
            self.add_worker()
        from distributed import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(self.address, timeout="5s") as c:
                    c.wait_for_workers(self.n_workers, timeout=30)
                return self
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise

    def add_worker(self):
        self.workers.append(self._spawn("worker", self.address, "--nthreads", "1", "--no-dashboard",
                                        "--host", "127.0.0.1", "--death-timeout", "30"))

    @staticmethod
    def kill(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop(self):
        for p in self.workers + ([self.scheduler] if self.scheduler else []):
            self.kill(p)


@pytest.fixture
def external_cluster():
    cl = ExternalCluster().start()
    yield cl
    cl.stop()


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    """200,000 rows of a 3-component full mixture in 4-D, in 20 Zarr chunks."""
    rng = np.random.default_rng(11)
    truth = make_true_mixture(3, 4, "full", rng)
    X, _, _ = sample_rows(truth, 200_000, 0.0, 0.0, rng)
    root = tmp_path_factory.mktemp("faults")
    return write_zarr(root / "train.zarr", X, NAMES, chunk_rows=10_000), X


def _assert_same(a, b, rtol=1e-10):
    assert a.n_iter_ == b.n_iter_
    for attr in ARRAYS:
        np.testing.assert_allclose(getattr(a, attr), getattr(b, attr), rtol=rtol, atol=0)


# ---------------------------------------------------------------------------
# quick


def test_unreachable_scheduler_fails_fast_with_a_clear_error():
    t0 = time.monotonic()
    with pytest.raises(ClusterUnavailableError, match=r"Cannot reach the Dask scheduler at tcp://127.0.0.1:\d+ within 2 s"):
        with connect(f"tcp://127.0.0.1:{free_port()}", timeout=2):
            pass
    assert time.monotonic() - t0 < 30


@pytest.mark.slow
def test_gmm_fit_against_an_unreachable_scheduler_exits_quickly_and_registers_nothing(tmp_path, train):
    path, _ = train
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(f"workdir: {tmp_path / 'w'}\ndata: {path}\ncluster:\n  address: tcp://127.0.0.1:{free_port()}\n"
                   "  connect_timeout: 3\nmodel:\n  n_components: 3\n")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    t0 = time.monotonic()
    res = subprocess.run([str(Path(sys.executable).with_name("gmm")), "fit", "--config", str(cfg), "--no-progress"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert re.search(r"Error: Cannot reach the Dask scheduler at tcp://127\.0\.0\.1:\d+ within 3 s", res.stderr)
    assert "leave cluster.address empty to use the embedded LocalCluster" in res.stderr
    assert time.monotonic() - t0 < 120  # Prefect's start-up plus the 3 s bound, not a hang
    assert not (tmp_path / "w" / "models").exists() or not any((tmp_path / "w" / "models").iterdir())


def test_missing_tls_files_are_named(tmp_path):
    from pipeline.cluster import TLS

    with pytest.raises(FileNotFoundError, match="TLS ca_file .* does not exist: fix cluster.tls.ca_file"):
        TLS(ca_file=str(tmp_path / "ca.pem")).security()


def test_tls_cluster_round_trip(tmp_path, train):
    """A tls:// scheduler reached with the CA, certificate and key from config."""
    pytest.importorskip("cryptography")
    from distributed import LocalCluster
    from distributed.security import Security

    from pipeline.cluster import TLS

    sec = Security.temporary()
    paths = {}
    for name, pem in (("ca", sec.tls_ca_file), ("cert", sec.tls_client_cert), ("key", sec.tls_client_key)):
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_text(pem)
    path, X = train
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://",
                      security=sec, dashboard_address=None) as lc:
        assert lc.scheduler_address.startswith("tls://")
        tls = TLS(str(paths["ca"]), str(paths["cert"]), str(paths["key"]))
        with connect(lc.scheduler_address, tls=tls, timeout=10) as client:
            before = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
            gm = GaussianMixture(3, max_iter=3, tol=0, random_state=0).fit(path)
            after = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    assert gm.n_iter_ == 3
    assert after - before > 3 * 4  # the passes ran on the tls:// scheduler, not on local threads


# ---------------------------------------------------------------------------
# slow: real processes killed


@pytest.mark.slow
def test_worker_killed_mid_fit_gives_the_same_fit(external_cluster, train):
    path, _ = train
    params = dict(n_components=3, tol=0, max_iter=12, init_params="random_from_data", random_state=0)
    reference = GaussianMixture(**params).fit(path)  # threaded scheduler, same chunking
    victim = external_cluster.workers[0]
    killed = threading.Event()

    def kill_soon(state):
        if state.n_iter == 3 and not killed.is_set():
            killed.set()
            threading.Timer(0.05, ExternalCluster.kill, args=(victim,)).start()

    with connect(external_cluster.address, timeout=10) as client:
        gm = GaussianMixture(**params).fit(path, on_iteration=kill_soon)
        assert killed.is_set() and victim.poll() is not None
        assert len(client.scheduler_info()["workers"]) == 1
    _assert_same(gm, reference)


def _gmm(args, home, log, **kw):
    return subprocess.Popen([str(BIN / "gmm"), *args], env=_env(home), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, **kw)


def _latest_iter(ckpt: Path) -> int:
    try:
        return int(re.search(r"iter-(\d+)", (ckpt / "LATEST").read_text()).group(1))
    except (FileNotFoundError, AttributeError):
        return 0


def _fit_config(tmp_path, work, data, address, run_name, max_iter=40):
    cfg = tmp_path / f"{run_name}.yaml"
    cfg.write_text(
        f"workdir: {work}\ndata: {data}\nrun_name: {run_name}\ncluster:\n  address: {address}\n"
        f"  connect_timeout: 5\nmodel:\n  n_components: 3\n  tol: 0\n  max_iter: {max_iter}\n"
        "  init_params: random_from_data\n  random_state: 0\n"
    )
    return cfg


def _wait(pred, timeout, proc=None, log=None, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited ({proc.returncode}) before {what}:\n"
                        + (log.read_text()[-3000:] if log else ""))
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n" + (log.read_text()[-3000:] if log else ""))


def _final(work, version_file=None):
    return ModelRegistry(work / "models").load()


@pytest.mark.slow
def test_driver_killed_mid_fit_resumes_to_the_same_parameters(tmp_path, external_cluster, train):
    path, _ = train
    work, home = tmp_path / "work", tmp_path / "prefect"
    ref_cfg = _fit_config(tmp_path, work, path, external_cluster.address, "reference")
    with open(tmp_path / "ref.log", "wb") as log:
        assert _gmm(["fit", "--config", str(ref_cfg)], home, log).wait(600) == 0, \
            (tmp_path / "ref.log").read_text()[-3000:]
    reference = _final(work).model

    cfg = _fit_config(tmp_path, work, path, external_cluster.address, "killed")
    ckpt = work / "checkpoints" / "killed"
    logp = tmp_path / "killed.log"
    with open(logp, "wb") as log:
        proc = _gmm(["fit", "--config", str(cfg)], home, log)
        _wait(lambda: _latest_iter(ckpt) >= 4, 600, proc, logp, "iteration 4's checkpoint")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stopped_at = _latest_iter(ckpt)
    assert 4 <= stopped_at < 40
    with open(tmp_path / "resume.log", "wb") as log:
        proc = _gmm(["fit", "--config", str(cfg), "--resume"], home, log)
        assert proc.wait(600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    out = (tmp_path / "resume.log").read_text()
    assert f"resumed from iteration {stopped_at}" in out
    _assert_same(_final(work).model, reference)


@pytest.mark.slow
def test_scheduler_lost_mid_fit_errors_in_bounded_time_then_resumes(tmp_path, train):
    path, _ = train
    cl = ExternalCluster().start()
    work, home = tmp_path / "work", tmp_path / "prefect"
    try:
        ref_cfg = _fit_config(tmp_path, work, path, cl.address, "reference", max_iter=25)
        with open(tmp_path / "ref.log", "wb") as log:
            assert _gmm(["fit", "--config", str(ref_cfg)], home, log).wait(600) == 0, \
                (tmp_path / "ref.log").read_text()[-3000:]
        reference = _final(work).model

        cfg = _fit_config(tmp_path, work, path, cl.address, "lost", max_iter=25)
        ckpt = work / "checkpoints" / "lost"
        logp = tmp_path / "lost.log"
        with open(logp, "wb") as log:
            proc = _gmm(["fit", "--config", str(cfg)], home, log)
            _wait(lambda: _latest_iter(ckpt) >= 3, 600, proc, logp, "iteration 3's checkpoint")
            t_kill = time.monotonic()
            ExternalCluster.kill(cl.scheduler)
            rc = proc.wait(120)
            elapsed = time.monotonic() - t_kill
        assert rc == 1
        assert elapsed < 60, f"the fit took {elapsed:.0f} s to give up"
        text = logp.read_text()
        assert "Lost the Dask scheduler" in text and "--resume" in text
    finally:
        cl.stop()
    cl = ExternalCluster(port=cl.port).start()  # the scheduler is back at the same address
    try:
        with open(tmp_path / "resume.log", "wb") as log:
            proc = _gmm(["fit", "--config", str(cfg), "--resume"], home, log)
            assert proc.wait(600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
        _assert_same(_final(work).model, reference)
    finally:
        cl.stop()


# ---------------------------------------------------------------------------
# slow: scoring runs killed and racing


@pytest.fixture
def scoring_workspace(tmp_path, train):
    path, X = train
    work = tmp_path / "work"
    (work / "incoming").mkdir(parents=True)
    gm = GaussianMixture(3, random_state=0, max_iter=20).fit(path)
    register_model(gm, path, ModelRegistry(work / "models"), contamination=0.01)
    rng = np.random.default_rng(5)
    ids = [f"batch-{i:02d}" for i in range(8)]
    for i, pid in enumerate(ids):
        rows = rng.choice(len(X), size=150_000, replace=True)
        write_partition(work / "incoming", pid, X[rows], NAMES, ("parquet", "csv")[i % 2])
    cfg = tmp_path / "score.yaml"
    cfg.write_text(f"workdir: {work}\nmax_parallel: 1\ncluster:\n  n_workers: 1\n")
    return work, ids, cfg


def _visible_stores(work):
    return sorted(p.name[:-5] for p in (work / "scores").glob("*.zarr") if not p.name.startswith("."))


def _scored_ids(work):
    db = work / "manifest.sqlite"
    if not db.exists():
        return set()
    try:
        return Manifest(db).scored_ids()
    except sqlite3.Error:
        return set()


@pytest.mark.slow
def test_scoring_run_killed_mid_partition(tmp_path, scoring_workspace):
    work, ids, cfg = scoring_workspace
    home = tmp_path / "prefect"
    logp = tmp_path / "first.log"
    with open(logp, "wb") as log:
        proc = _gmm(["score", "--config", str(cfg), "--no-progress"], home, log)
        _wait(lambda: len(_scored_ids(work)) >= 2, 900, proc, logp, "two scored partitions")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = _scored_ids(work)
    assert 2 <= len(first) < len(ids), "the kill should land mid-run"
    # no partial output is visible: every visible store is complete
    for pid in _visible_stores(work):
        assert read_scores(work / "scores" / f"{pid}.zarr")["n_rows"] == 150_000
    with open(tmp_path / "second.log", "wb") as log:
        proc = _gmm(["score", "--config", str(cfg), "--no-progress"], home, log)
        assert proc.wait(900) == 0, (tmp_path / "second.log").read_text()[-3000:]
    entries = {e.partition_id: e for e in Manifest(work / "manifest.sqlite").entries()}
    assert set(entries) == set(ids)
    second_runs = {e.run_id for pid, e in entries.items() if pid not in first}
    assert len(second_runs) == 1, "the next run scores exactly the missing partitions"
    assert all(entries[pid].run_id not in second_runs for pid in first)
    assert _visible_stores(work) == sorted(ids)
    assert not [p for p in (work / "scores").iterdir() if p.name.startswith(".")]
    for pid, e in entries.items():
        assert read_scores(e.output_path)["n_rows"] == e.n_rows == 150_000


@pytest.mark.slow
def test_two_concurrent_scoring_runs_score_each_partition_once(tmp_path, scoring_workspace):
    work, ids, cfg = scoring_workspace
    procs, logs = [], []
    for i in range(2):
        # separate Prefect homes: each run's temporary server has its own SQLite database
        home = tmp_path / f"prefect{i}"
        subprocess.run([str(BIN / "python"), "-c", "from prefect import flow\n@flow\ndef f(): pass\nf()"],
                       env=_env(home), capture_output=True, check=True)
        logs.append(tmp_path / f"run{i}.log")
    for i in range(2):
        procs.append(_gmm(["score", "--config", str(cfg), "--no-progress"], tmp_path / f"prefect{i}",
                          open(logs[i], "wb")))
    for p, lp in zip(procs, logs):
        assert p.wait(900) == 0, lp.read_text()[-3000:]
    counts = [int(re.search(r"scored (\d+) partitions", lp.read_text()).group(1)) for lp in logs]
    assert sum(counts) == len(ids), counts
    entries = Manifest(work / "manifest.sqlite").entries()
    assert sorted(e.partition_id for e in entries) == sorted(ids)
    assert _visible_stores(work) == sorted(ids)
