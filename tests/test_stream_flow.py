"""The scheduled loop learns: drift recorded from the scoring pass, events emitted, the model updated."""

import json
import math
import time

import numpy as np
import pytest
from conftest import write_zarr

from flows.config import ScoreConfig
from gmm_engine import GaussianMixture
from pipeline.demo_data import make_true_mixture, sample_rows, write_partition
from pipeline.manifest import Manifest
from pipeline.registry import ModelRegistry
from pipeline.training import register_model

NAMES = ["a", "b", "c"]
pytestmark = [pytest.mark.usefixtures("prefect_harness"),
              pytest.mark.filterwarnings("ignore:X does not have valid feature names")]


def _events(prefix, since, expect, where=lambda event: True, timeout=30.0):
    """Events named ``prefix*`` since ``since`` for which ``where`` holds, once ``expect`` of them are visible.

    The event store persists asynchronously, and an earlier run of the same test may have emitted
    events of the same name for other resources, so the wait counts only the events asked for.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            # a new filter per poll: it fixes its end time when built
            found = client.read_events(limit=50, filter=EventFilter(event=EventNameFilter(prefix=[prefix]),
                                                          occurred=EventOccurredFilter(since=since)))
        events = [e for e in (found.events if hasattr(found, "events") else found) if where(e)]
        if len(events) >= expect or time.monotonic() > deadline:
            return events
        time.sleep(1.0)


def test_drift_is_recorded_emitted_and_followed_by_an_update(tmp_path):
    from prefect.types import DateTime

    from flows.score_flow import score_partitions_flow

    since = DateTime.now("UTC")
    rng = np.random.default_rng(3)
    truth = make_true_mixture(3, 3, "full", rng)
    X, _, _ = sample_rows(truth, 30_000, 1e-9, -np.inf, rng)
    data = write_zarr(tmp_path / "data" / "train.zarr", X, NAMES, chunk_rows=10_000)
    reg = ModelRegistry(tmp_path / "models")
    first, _ = register_model(GaussianMixture(3, random_state=0, tol=1e-6).fit(data), data, reg, contamination=0.01)
    cfg = ScoreConfig(workdir=tmp_path, update={"mode": "on_drift", "half_life": 5_000, "min_rows": 1})
    (tmp_path / "incoming").mkdir()
    steady, _, _ = sample_rows(truth, 5_000, 1e-9, -np.inf, rng)
    write_partition(tmp_path / "incoming", "t0", steady, NAMES, "parquet")
    out = score_partitions_flow(cfg)
    assert out["update"] is None and not out["results"][0]["drift"]["drifted"]
    for i in (1, 2):  # one component moves by 4 standard deviations from t1 on
        moved, comp, _ = sample_rows(truth, 5_000, 1e-9, -np.inf, rng)
        moved[comp == 0, 0] += 4 * math.sqrt(truth.covariances[0][0, 0])
        write_partition(tmp_path / "incoming", f"t{i}", moved, NAMES, "parquet")
        out = score_partitions_flow(cfg)
    entries = {e.partition_id: e for e in Manifest(tmp_path / "manifest.sqlite").entries()}
    assert entries["t1"].drift["drifted"] and entries["t2"].drift["drifted"]
    assert [entries[p].drift["sequential"]["position"] for p in ("t0", "t1", "t2")] == [0, 1, 2]
    update = out["update"]
    assert update["partitions"] == ["t0", "t1"] and update["held_back"] == "t2" and update["promoted"]
    assert reg.current_version() == update["version"] != first
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["updates"][-1]["version"] == update["version"]
    assert all("drift" in e and e["drift"]["sequential"] is not None for e in doc["entries"])
    drift_events = _events("gmm.drift.detected", since, expect=2,
                           where=lambda e: e.resource.id in {"gmm.partition.t1", "gmm.partition.t2"})
    assert {e.resource.id for e in drift_events} >= {"gmm.partition.t1", "gmm.partition.t2"}
    assert any(r.id == f"gmm.model.{first}" for e in drift_events for r in e.related)
    updated = _events("gmm.model.updated", since, expect=1,
                      where=lambda e: e.resource.id == f"gmm.model.{update['version']}")
    assert len(updated) == 1 and updated[0].payload["promoted"] is True, [e.resource.id for e in updated]


def test_the_demo_stream_drifts_is_detected_and_the_model_follows(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    cfg = tmp_path / "demo.yaml"
    cfg.write_text("n_rows: 60000\nn_partitions: 10\npartition_rows: 6000\ndrift_at: 5\ndrift_shift: 3.0\n"
                   "select_sample_rows: 20000\ngrid:\n  n_components: [3, 4, 5]\n  covariance_types: [full]\n"
                   "update:\n  mode: on_drift\n  half_life: 2000\n  min_rows: 500\n")
    res = CliRunner().invoke(app, ["demo", "--config", str(cfg), "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "w" / "report" / "summary.json").read_text())
    assert summary["drift"] == {"truth_at": 5, "detected_at": 5, "false_alarms": 0}
    assert [s["moved"] for s in summary["stream"]] == [False] * 4 + [True] * 6
    promoted = [u for u in summary["updates"] if u["promoted"]]
    assert promoted, summary["updates"]
    before, after = summary["before_update"], summary["after_update"]
    # the updated threshold is calibrated on one 6,000-row partition (~30 anomalies), hence the looser recall
    assert after["partitions"] and after["precision"] > before["precision"] and after["recall"] > 0.7
    assert (tmp_path / "w" / "report" / "stream.png").is_file()
    assert "drift detected at 5, 0 false alarms" in res.output
