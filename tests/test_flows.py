"""Prefect flows and the CLI, under one session-scoped temporary Prefect server."""

import json
import math
import re
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_zarr
from flows.config import (
    AnomalyConfig,
    ClusterConfig,
    FitConfig,
    GridConfig,
    ModelConfig,
    ScoreConfig,
    SelectConfig,
)
from pipeline.demo_data import write_partition
from pipeline.manifest import Manifest
from pipeline.registry import ModelRegistry
from pipeline.scores_store import read_scores

NAMES = ["a", "b", "c"]
pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, blobs):
    X, _ = blobs
    root = tmp_path_factory.mktemp("work")
    (root / "data").mkdir()
    write_zarr(root / "data" / "train.zarr", X.astype(np.float32), NAMES, chunk_rows=1500)
    return root


@pytest.fixture(scope="module")
def cluster_cfg(dask_cluster):
    return ClusterConfig(address=dask_cluster)


def _artifacts(key):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def _batch_runs(run_id, n_partitions, timeout=30.0):
    """The finished scoring-batch task runs of flow run ``run_id`` once they cover ``n_partitions``.

    Task-run records reach the API through the server's event pipeline, behind the flow: a bounded wait.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a folder, not a package
    from benchmarks.load.prefect_api import batch_size

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[uuid.UUID(run_id.removeprefix("flow-run-"))])))
        batches = [r for r in runs if batch_size({"name": r.name}) and r.state and r.state.is_final()]
        if sum(batch_size({"name": r.name}) for r in batches) >= n_partitions or time.monotonic() > deadline:
            return batches


def test_select_model_flow(workdir, cluster_cfg):
    from flows.select_flow import select_model_flow

    cfg = SelectConfig(workdir=workdir, cluster=cluster_cfg, grid=GridConfig(n_components=[2, 3, 4],
                       covariance_types=["full", "diag"]), anomaly=AnomalyConfig(contamination=0.01),
                       make_current=True)
    out = select_model_flow(cfg)
    assert len(out["table"]) >= 6 and all(r["status"] in ("ok", "dropped") for r in out["table"])
    assert out["selected"]["n_components"] == 3
    best = min(out["table"], key=lambda r: r["bic"])
    assert (best["n_components"], best["covariance_type"]) == (
        out["selected"]["n_components"], out["selected"]["covariance_type"])
    assert ModelRegistry(workdir / "models").current_version() == out["registered"]["version"]
    md = (workdir / "report").glob("select-*/model_selection.md")
    assert "| 3 |" in next(md).read_text()
    assert _artifacts("model-selection")


def test_fit_flow_registers_and_reports(workdir, cluster_cfg):
    from flows.fit_flow import fit_flow

    cfg = FitConfig(workdir=workdir, cluster=cluster_cfg,
                    model=ModelConfig(n_components=3, covariance_type="full", tol=1e-4))
    out = fit_flow(cfg)
    reg = ModelRegistry(workdir / "models")
    assert reg.current_version() == out["version"]
    loaded = reg.load()
    assert loaded.model.n_iter_ == out["n_iter"] > 1
    assert math.isclose(loaded.threshold, out["threshold"]["threshold"])
    assert (workdir / "checkpoints" / "K3-full" / "LATEST").is_file()
    for key in ("loglik_plot", "score_histogram", "projection_plot"):
        assert open(out["plots"][key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert _artifacts("fit-summary")
    summary = json.loads((Path(out["report_dir"]) / "summary.json").read_text())
    assert summary["version"] == out["version"] and summary["acceleration"] == "squarem"
    assert summary["passes"] > summary["n_iter"] == loaded.model.n_iter_  # initialisation passes too
    assert summary["passes"] == loaded.model.n_passes_ and summary["seconds"] > 0
    assert summary["lower_bound"] == pytest.approx(loaded.model.lower_bound_) and summary["converged"]


def test_score_flow_is_idempotent_and_isolates_failures(workdir, cluster_cfg, blobs):
    from flows.score_flow import PartitionScoringError, score_partitions_flow

    X, _ = blobs
    incoming = workdir / "incoming"
    incoming.mkdir(exist_ok=True)
    for i, fmt in enumerate(["csv", "parquet", "npy"]):
        write_partition(incoming, f"day-{i}", X[i * 500:(i + 1) * 500], NAMES, fmt)
    cfg = ScoreConfig(workdir=workdir, cluster=cluster_cfg, max_parallel=2)
    first = score_partitions_flow(cfg)
    assert [r["status"] for r in first["results"]] == ["scored"] * 3
    manifest = Manifest(workdir / "manifest.sqlite")
    assert manifest.scored_ids() == {"day-0", "day-1", "day-2"}
    # Prefect's task runs name their batches' partitions (what the load driver counts)
    (run_id,) = {e.run_id for e in manifest.entries()}
    names = sorted(r.name for r in _batch_runs(run_id, 3))
    assert names and all(re.fullmatch(r"score-partitions-batch\[(1\] day-\d|[23]\] day-\d \.\. day-\d)", n)
                         for n in names), names
    assert sum(int(re.match(r"score-partitions-batch\[(\d+)", n).group(1)) for n in names) == 3
    versions = ModelRegistry(workdir / "models").versions()
    for e in manifest.entries():
        assert read_scores(e.output_path)["n_rows"] == e.n_rows == 500
        assert e.model_version in versions  # a version models/ holds, named once
    assert json.loads((workdir / "manifest.json").read_text())
    assert _artifacts("partition-anomalies")

    again = score_partitions_flow(cfg)
    assert again["results"] == [] and set(again["already_scored"]) == {"day-0", "day-1", "day-2"}

    bad = X[:300].copy()
    bad[7, 0] = np.inf
    write_partition(incoming, "day-3", bad, NAMES, "parquet")
    write_partition(incoming, "day-4", X[:300], NAMES, "csv")
    (incoming / "..sneaky.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(PartitionScoringError, match="day-3.*infinity"):
        score_partitions_flow(cfg)
    assert manifest.scored_ids() == {"day-0", "day-1", "day-2", "day-4"}
    assert not (workdir / "scores" / "day-3.zarr").exists()


def test_cli_fit_score_and_errors(workdir, dask_cluster, monkeypatch, tmp_path):
    from flows.cli import app

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    runner = CliRunner()
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("ingest", "fit", "select", "score", "serve", "demo"):
        assert cmd in res.output
        assert runner.invoke(app, [cmd, "--help"]).exit_code == 0

    cfg = tmp_path / "fit.yaml"
    cfg.write_text(f"workdir: {workdir}\ncluster:\n  address: {dask_cluster}\nmodel:\n  n_components: 3\n"
                   "  covariance_type: diag\n  max_iter: 20\n")
    res = runner.invoke(app, ["fit", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "Model " in res.output and "threshold" in res.output

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  covariance_type: fulll\n")
    res = runner.invoke(app, ["fit", "--config", str(bad)])
    assert res.exit_code == 1 and "allowed values: 'full'" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output

    score_cfg = tmp_path / "score.yaml"
    score_cfg.write_text(f"workdir: {workdir}\ncluster:\n  address: {dask_cluster}\n")
    write_partition(workdir / "incoming", "day-9", np.zeros((10, 3)) + 1.0, NAMES, "npy")
    res = runner.invoke(app, ["score", "--config", str(score_cfg), "--no-progress"])
    # day-3 (the partition with infinity) still fails; the new one is scored
    assert res.exit_code == 1 and "day-3" in res.output
    assert "day-9" in Manifest(workdir / "manifest.sqlite").scored_ids()


def test_cli_demo_small(tmp_path, monkeypatch):
    from flows.cli import app

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    cfg = tmp_path / "demo.yaml"
    cfg.write_text("n_rows: 40000\nn_partitions: 3\npartition_rows: 4000\nselect_sample_rows: 15000\ndrift_at: null\n"
                   "grid:\n  n_components: [3, 4, 5]\n  covariance_types: [full, diag]\n")
    res = CliRunner().invoke(app, ["demo", "--config", str(cfg), "--workdir", str(tmp_path / "w"),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "w" / "report" / "summary.json").read_text())
    assert summary["selected"] == {**summary["selected"], "n_components": 4, "covariance_type": "full"}
    assert summary["truth"]["n_components"] == 4 and summary["truth"]["covariance_type"] == "full"
    assert summary["partitions_scored"] == 3
    assert summary["anomaly"]["precision"] > 0.8 and summary["anomaly"]["recall"] > 0.8
    report = tmp_path / "w" / "report"
    for folder, name in (("select", "selection.png"), ("fit", "loglik.png"), ("fit", "scores.png"),
                         ("fit", "projection.png")):
        assert (report / folder / name).is_file()
    # the subflows' own summaries are kept beside the demo's
    assert json.loads((report / "select" / "summary.json").read_text())["selected"]["n_components"] == 4
    assert "n_iter" in json.loads((report / "fit" / "summary.json").read_text())
    assert "selected: K=4 full" in res.output
    # the variational selection finds the true K as well
    assert summary["variational"]["n_components"] == 4 and summary["variational"]["matches_truth"]
    assert (report / "variational" / "weights.png").is_file() and "variational: 4 of 12 components" in res.output


def test_cli_ingest(tmp_path, monkeypatch, blobs):
    from flows.cli import app
    from gmm_engine import open_zarr_array

    X, _ = blobs
    src = tmp_path / "raw.csv"
    rows = ["a,b,c,city"] + [f"{x:.17g},{y:.17g},{z:.17g},paris" for x, y, z in X[:200]]
    rows[10] = "1,,3,rome"  # an empty numeric cell: a bad row
    src.write_text("\n".join(rows) + "\n")
    runner = CliRunner()
    w = ["--workdir", str(tmp_path / "w")]
    res = runner.invoke(app, ["ingest", "--source", str(src), *w])
    assert res.exit_code == 1 and "Non-numeric columns" in res.output and "'city'" in res.output
    cfg = tmp_path / "ingest.yaml"
    cfg.write_text(f"source: {src}\ncolumns: [a, b, c]\n")
    res = runner.invoke(app, ["ingest", "--config", str(cfg), *w])
    assert res.exit_code == 1 and "1 " in res.output and "bad_rows='drop'" in res.output
    assert not (tmp_path / "w" / "data" / "train.zarr").exists()
    res = runner.invoke(app, ["ingest", "--config", str(cfg), "--bad-rows", "drop", *w])
    assert res.exit_code == 0, res.output
    z = open_zarr_array(tmp_path / "w" / "data" / "train.zarr")
    assert z.shape == (199, 3) and z.attrs["feature_names"] == ["a", "b", "c"]
    assert "city" in res.output  # the non-numeric column left out is reported


def test_cli_ingest_takes_config_paths_in_the_workdir_and_publishes_the_report(tmp_path, blobs):
    from flows.cli import app
    from gmm_engine import open_zarr_array

    X, _ = blobs
    work = tmp_path / "w"
    (work / "raw").mkdir(parents=True)
    np.save(work / "raw" / "m.npy", X[:300])
    cfg = tmp_path / "ingest.yaml"
    # relative paths of a config file are inside its workdir, whatever the current directory
    cfg.write_text(f"workdir: {work}\nsource: raw/m.npy\ndest: data/m.zarr\nfeature_names: [a, b, c]\n")
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", "--config", str(cfg), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert open_zarr_array(work / "data" / "m.zarr").shape == (300, 3)
    # test_cli_ingest published under the same key: this run's report is one of the versions
    reports = [a.data for a in _artifacts("ingest-report") if str(work / "data" / "m.zarr") in a.data]
    assert len(reports) == 1 and "300 / 300" in reports[0] and "`a`, `b`, `c`" in reports[0]
    res = runner.invoke(app, ["ingest", "--config", str(cfg), "--no-progress"])
    assert res.exit_code == 1 and "already exists" in res.output and "gmm ingest --overwrite" in res.output
    res = runner.invoke(app, ["ingest", "--config", str(cfg), "--overwrite", "--no-progress"])
    assert res.exit_code == 0, res.output


def test_ingest_retries_io_errors_but_not_refused_data(tmp_path, monkeypatch):
    from flows.config import IngestConfig
    from flows.ingest_flow import ingest_task
    from pipeline import ingest as ingest_mod

    calls = []

    def flaky(source, dest, **kw):
        calls.append(source)
        if len(calls) == 1:
            raise OSError("connection reset by peer")
        raise ingest_mod.IngestError(f"No rows to write from {source}")

    monkeypatch.setattr(ingest_mod, "ingest", flaky)
    from prefect import flow

    @flow
    def one_ingest():
        return ingest_task.with_options(retry_delay_seconds=0)(IngestConfig(source="s.csv"), "s.csv",
                                                               str(tmp_path / "d.zarr"))

    with pytest.raises(ingest_mod.IngestError, match="No rows"):
        one_ingest()
    # the OSError was retried once; the IngestError that followed was not
    assert calls == ["s.csv", "s.csv"]


def test_run_bounded_keeps_at_most_max_parallel_running_and_the_order():
    import threading
    import time

    from prefect import flow, task

    from flows.concurrency import run_bounded

    lock, now, peak = threading.Lock(), [0], [0]

    @task
    def work(i):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.05 * (i % 3))
        with lock:
            now[0] -= 1
        return i * i

    @flow
    def bounded():
        return run_bounded(lambda i: work.submit(i), list(range(10)), 3)

    assert bounded() == [i * i for i in range(10)]
    assert peak[0] == 3


def test_cli_score_with_a_model_directory(dask_cluster, tmp_path, blobs):
    from flows.cli import app
    from gmm_engine import GaussianMixture
    from pipeline.training import register_model

    X, _ = blobs
    data = write_zarr(tmp_path / "train.zarr", X, NAMES)
    elsewhere = ModelRegistry(tmp_path / "other-models")
    version, _ = register_model(GaussianMixture(3, random_state=0).fit(data), data, elsewhere, contamination=0.01)
    work = tmp_path / "w"
    (work / "incoming").mkdir(parents=True)
    write_partition(work / "incoming", "day-0", X[:400], NAMES, "parquet")
    cfg = tmp_path / "score.yaml"
    cfg.write_text(f"workdir: {work}\ncluster:\n  address: {dask_cluster}\n")
    model_dir = tmp_path / "other-models" / version
    res = CliRunner().invoke(app, ["score", "--config", str(cfg), "--model", str(model_dir), "--no-progress"])
    assert res.exit_code == 0, res.output
    (entry,) = Manifest(work / "manifest.sqlite").entries()
    assert entry.partition_id == "day-0" and entry.n_rows == 400
    assert entry.model_version.startswith(version)
    # the outside version was imported under its own name: the entry names a version models/ holds
    assert entry.model_version == version and (work / "models" / version / "model.json").is_file()
    assert ModelRegistry(work / "models").current_version() is None


def test_cli_score_refuses_a_tampered_model(dask_cluster, tmp_path, blobs):
    from flows.cli import app
    from gmm_engine import GaussianMixture
    from pipeline.training import register_model

    X, _ = blobs
    data = write_zarr(tmp_path / "train.zarr", X, NAMES)
    reg = ModelRegistry(tmp_path / "models")
    version, _ = register_model(GaussianMixture(3, random_state=0).fit(data), data, reg, contamination=0.01)
    doc = tmp_path / "models" / version / "model.json"
    meta = json.loads(doc.read_text())
    meta["params"]["reg_covar"] = 0.5  # a valid document whose checksum no longer matches
    doc.write_text(json.dumps(meta))
    (tmp_path / "incoming").mkdir()
    write_partition(tmp_path / "incoming", "day-0", X[:100], NAMES, "csv")
    cfg = tmp_path / "score.yaml"
    cfg.write_text(f"workdir: {tmp_path}\ncluster:\n  address: {dask_cluster}\n")
    res = CliRunner().invoke(app, ["score", "--config", str(cfg), "--no-progress"])
    assert res.exit_code == 1
    assert "does not match its checksum" in res.output and "re-save the model" in res.output
    # refused before anything was touched: no manifest, no scores, the partition as it was
    assert not (tmp_path / "manifest.sqlite").exists() and not any((tmp_path / "scores").glob("*"))
    assert [p.name for p in (tmp_path / "incoming").iterdir()] == ["day-0.csv"]


def test_flows_leave_no_global_dask_scheduler_behind():
    # runs after the flows above: concurrent task clients must not leak global config
    import dask

    assert dask.config.get("scheduler", None) is None
