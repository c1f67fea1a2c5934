"""Scoring one partition: stage, score, write atomically, record."""

import numpy as np
import pytest

from conftest import write_zarr
from gmm_engine import GaussianMixture
from pipeline.demo_data import write_partition
from pipeline.manifest import Manifest
from pipeline.registry import ModelRegistry
from pipeline.partitions import discover_partitions
from pipeline.scores_store import read_scores
from pipeline.scoring import LOCAL_MAX_ROWS, score_partition
from pipeline.training import register_model

NAMES = ["a", "b", "c"]

# the oracle calls below score bare numpy arrays against a model fitted with names
pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names")


@pytest.fixture(scope="module")
def registered(tmp_path_factory, blobs):
    X, _ = blobs
    root = tmp_path_factory.mktemp("ws")
    data = write_zarr(root / "train.zarr", X, NAMES, chunk_rows=2500)
    gm = GaussianMixture(3, random_state=0).fit(data)
    reg = ModelRegistry(root / "models")
    register_model(gm, data, reg, contamination=0.01)
    return reg.load(), X


@pytest.fixture
def ws(tmp_path):
    for d in ("incoming", "scores", "staging"):
        (tmp_path / d).mkdir()
    return tmp_path


def _score(ws, model, partition, run="run-1", **kw):
    return score_partition(partition, model, outputs_dir=ws / "scores", staging_dir=ws / "staging",
                           manifest_path=ws / "manifest.sqlite", run_id=run, **kw)


def _only(ws):
    (p,) = discover_partitions(str(ws / "incoming")).partitions
    return p


@pytest.mark.parametrize("local_max_rows", [LOCAL_MAX_ROWS, 0], ids=["in-process", "dask"])
@pytest.mark.parametrize("fmt", ["csv", "parquet", "npy", "zarr"])
def test_scores_every_format_and_records_it(ws, registered, fmt, local_max_rows):
    model, X = registered
    part = X[:700]
    write_partition(ws / "incoming", "p-001", part, NAMES, fmt)
    res = _score(ws, model, _only(ws), local_max_rows=local_max_rows)
    assert res.status == "scored" and res.n_rows == 700
    out = read_scores(ws / "scores" / "p-001.zarr")
    np.testing.assert_allclose(out["log_likelihood"], model.model.score_samples(part), rtol=1e-10)
    np.testing.assert_array_equal(out["component"], model.model.predict(part))
    np.testing.assert_allclose(out["responsibility"], model.model.predict_proba(part).max(axis=1), rtol=1e-10)
    np.testing.assert_array_equal(out["is_anomaly"], out["log_likelihood"] <= model.threshold)
    entry = Manifest(ws / "manifest.sqlite").get("p-001")
    assert entry.n_rows == 700 and entry.n_anomalies == int(out["is_anomaly"].sum())
    assert entry.model_version == model.version and entry.threshold == model.threshold
    assert np.isclose(entry.mean_loglik, out["log_likelihood"].mean())
    assert out["attrs"]["model_version"] == model.version
    assert not any((ws / "staging").iterdir())


def test_a_scored_partition_is_skipped(ws, registered):
    model, X = registered
    write_partition(ws / "incoming", "p-002", X[:100], NAMES, "npy")
    assert _score(ws, model, _only(ws)).status == "scored"
    assert _score(ws, model, _only(ws), run="run-2").status == "skipped"


def test_a_partition_claimed_by_a_live_run_is_skipped(ws, registered):
    model, X = registered
    write_partition(ws / "incoming", "p-003", X[:100], NAMES, "npy")
    assert Manifest(ws / "manifest.sqlite").claim("p-003", "other-run")
    assert _score(ws, model, _only(ws)).status == "skipped"
    assert not (ws / "scores" / "p-003.zarr").exists()


def test_nan_rows_fail_the_partition_and_write_nothing(ws, registered):
    model, X = registered
    part = X[:200].copy()
    part[[5, 17], 1] = np.nan
    write_partition(ws / "incoming", "p-004", part, NAMES, "parquet")
    res = _score(ws, model, _only(ws))
    assert res.status == "failed"
    assert "2 of 200 rows" in res.error and "row indices 5, 17" in res.error and "bad_rows='drop'" in res.error
    assert not (ws / "scores" / "p-004.zarr").exists()
    assert Manifest(ws / "manifest.sqlite").get("p-004") is None
    assert "NaN" in Manifest(ws / "manifest.sqlite").failures("p-004")[0]["error"]
    res = _score(ws, model, _only(ws), run="run-2", bad_rows="drop")
    assert res.status == "scored" and res.n_rows == 198
    assert read_scores(ws / "scores" / "p-004.zarr")["attrs"]["rows_dropped"] == 2


def test_features_in_another_order_are_refused(ws, registered):
    model, X = registered
    write_partition(ws / "incoming", "p-005", X[:50, ::-1].copy(), NAMES[::-1], "csv")
    res = _score(ws, model, _only(ws))
    assert res.status == "failed" and "order" in res.error


def test_a_partition_with_other_features_is_refused(ws, registered):
    model, X = registered
    write_partition(ws / "incoming", "p-006", X[:50, :2].copy(), ["a", "b"], "parquet")
    res = _score(ws, model, _only(ws))
    assert res.status == "failed" and "missing ['c']" in res.error
    assert "the features the model was fitted on" in res.error


def test_large_partitions_are_scored_on_the_cluster_small_ones_in_process(ws, registered, dask_cluster, monkeypatch):
    from pipeline import scoring
    from pipeline.cluster import connect

    model, X = registered
    write_partition(ws / "incoming", "big", X[:900], NAMES, "npy")
    write_partition(ws / "incoming", "small", X[:300], NAMES, "npy")
    seen = {}
    real = scoring.score_rows

    def spy(m, data, in_memory=False, **kwargs):
        seen[data.shape[0]] = "numpy" if in_memory else "dask"
        return real(m, data, in_memory=in_memory, **kwargs)

    monkeypatch.setattr(scoring, "score_rows", spy)
    parts = {p.id: p for p in discover_partitions(str(ws / "incoming")).partitions}
    with connect(dask_cluster) as client:
        before = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
        for pid in ("big", "small"):
            assert _score(ws, model, parts[pid], local_max_rows=500).status == "scored"
        after = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    assert seen == {900: "dask", 300: "numpy"}
    assert after > before  # the large one ran on the cluster
    for pid, n in (("big", 900), ("small", 300)):
        out = read_scores(ws / "scores" / f"{pid}.zarr")
        np.testing.assert_allclose(out["log_likelihood"], model.model.score_samples(X[:n]), rtol=1e-10)


def test_a_lost_scheduler_is_not_blamed_on_the_partition(ws, registered, dask_cluster, monkeypatch):
    from distributed.comm.core import CommClosedError

    from pipeline import scoring
    from pipeline.cluster import ClusterUnavailableError, connect

    model, X = registered
    write_partition(ws / "incoming", "p-lost", X[:900], NAMES, "npy")

    def lost(*a, **k):
        raise CommClosedError("in <TCP (closed) ConnectionPool.gather local=tcp://127.0.0.1:1>: Stream is closed")

    monkeypatch.setattr(scoring, "score_rows", lost)
    with pytest.raises(ClusterUnavailableError, match="Lost the Dask scheduler.*scoring re-runs only the partitions"):
        with connect(dask_cluster):
            _score(ws, model, _only(ws), local_max_rows=0)
    m = Manifest(ws / "manifest.sqlite")
    # not recorded as the partition's failure, not left claimed, nothing written: the next run scores it
    assert m.failures("p-lost") == [] and m.claims() == [] and m.get("p-lost") is None
    assert not (ws / "scores" / "p-lost.zarr").exists()


@pytest.mark.parametrize("local_max_rows", [LOCAL_MAX_ROWS, 0], ids=["in-process", "dask"])
def test_the_scoring_pass_also_gives_the_statistics_and_the_drift_verdict(ws, registered, local_max_rows):
    """What updates and drift detection need comes from the pass that wrote the scores."""
    from gmm_engine import SufficientStatistics
    from gmm_engine.scoring import score_rows
    from pipeline.drift import DriftPolicy, PartitionCounts, test_partition
    from pipeline.scores_store import read_statistics

    model, X = registered
    part = X[:2000]
    write_partition(ws / "incoming", "p-002", part, NAMES, "zarr")
    res = _score(ws, model, _only(ws), local_max_rows=local_max_rows)
    assert res.status == "scored"
    stats = read_statistics(ws / "scores" / "p-002.zarr")
    ll, comp, _, expected = score_rows(model.model, part, with_stats=True)
    assert isinstance(stats, SufficientStatistics) and stats.n_samples == 2000
    np.testing.assert_allclose(stats.nk, expected.nk, rtol=1e-12)
    np.testing.assert_allclose(stats.scatter, expected.scatter, rtol=1e-11)
    np.testing.assert_array_equal(stats.shift, model.model.means_)
    counts = PartitionCounts.from_chunk(ll, comp, ll <= model.threshold, model.reference)
    verdict = test_partition(counts, model.reference, DriftPolicy()).to_dict()
    entry = Manifest(ws / "manifest.sqlite").get("p-002")
    assert entry.drift == res.drift
    for test in ("anomaly_rate", "loglik_ks", "occupancy_g"):
        assert entry.drift[test]["statistic"] == pytest.approx(verdict[test]["statistic"], rel=1e-9)
        assert entry.drift[test]["p_value"] == pytest.approx(verdict[test]["p_value"], rel=1e-9, abs=1e-300)
    assert entry.drift["drifted"] is False and entry.drift["sequential"] is None  # the flow adds that step


def test_drifted_rows_are_flagged_as_drift(ws, registered):
    model, X = registered
    moved = X[:3000].copy()
    moved[:, 0] += 4.0
    write_partition(ws / "incoming", "moved", moved, NAMES, "parquet")
    res = _score(ws, model, _only(ws))
    assert res.status == "scored" and res.drift["drifted"] is True
    assert "loglik_ks" in res.drift["reasons"]
