"""Partitions with gaps (bad_rows='marginalize'): scores of the observed features, per-pattern thresholds,
drift of complete rows, n_observed stored, updates, and the refusals."""

import copy
import math

import numpy as np
import pytest
from conftest import write_zarr

from gmm_engine import BayesianGaussianMixture, GaussianMixture
from pipeline.demo_data import make_true_mixture, sample_rows, write_partition
from pipeline.drift import DriftPolicy, PartitionCounts
from pipeline.manifest import Manifest
from pipeline.marginal_scoring import check_marginalizes
from pipeline.partitions import discover_partitions
from pipeline.registry import ModelRegistry
from pipeline.scores_store import read_scores, read_statistics, write_scores
from pipeline.scoring import LOCAL_MAX_ROWS, score_partition
from pipeline.threshold import PatternThresholds, calibrate_threshold, missing_patterns
from pipeline.training import check_missing_policy, register_model
from pipeline.updates import UpdatePolicy, plan_update, update_model

NAMES = ["a", "b", "c", "d"]
pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names")


def _with_gaps(X, share, rng):
    """X with about ``share`` of its rows missing one or two features (never all)."""
    X = X.copy()
    rows = np.flatnonzero(rng.random(len(X)) < share)
    for i in rows:
        X[i, rng.choice(X.shape[1], size=rng.integers(1, 3), replace=False)] = np.nan
    return X


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    rng = np.random.default_rng(11)
    truth = make_true_mixture(3, 4, "full", rng)
    X, _, _ = sample_rows(truth, 30_000, 1e-9, -np.inf, rng)
    root = tmp_path_factory.mktemp("ws")
    data = write_zarr(root / "train.zarr", X, NAMES, chunk_rows=10_000)
    reg = ModelRegistry(root / "models")
    register_model(GaussianMixture(3, random_state=0, tol=1e-6).fit(data), data, reg, contamination=0.01)
    return reg, truth


@pytest.fixture
def ws(tmp_path):
    for d in ("incoming", "scores", "staging"):
        (tmp_path / d).mkdir()
    return tmp_path


def _score(ws, model, pid, **kw):
    parts = {p.id: p for p in discover_partitions(str(ws / "incoming")).partitions}
    return score_partition(parts[pid], model, outputs_dir=ws / "scores", staging_dir=ws / "staging",
                           manifest_path=ws / "manifest.sqlite", run_id="run-1", **kw)


def test_each_pattern_flags_the_contamination_of_the_models_own_rows():
    rng = np.random.default_rng(3)
    truth = make_true_mixture(3, 4, "full", rng)
    X, _, _ = sample_rows(truth, 20_000, 1e-9, -np.inf, rng)
    gm = GaussianMixture(3, random_state=0).fit(X)
    thresholds = PatternThresholds(gm, -12.5, 0.02, random_state=1)
    masks = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0]], dtype=bool)
    values = thresholds.for_masks(masks)
    assert values[0] == -12.5  # complete rows keep the calibrated threshold
    assert values[1] > values[0] and values[3] > values[2]  # fewer features, larger log-densities
    # fresh rows from the model (another seed): every pattern flags ~2%; a 5-sigma band for
    # 20,000 rows (false alarm ~6e-7 per pattern)
    fresh, _ = copy.copy(gm).set_params(random_state=99).sample(20_000)
    scorer = copy.copy(gm).set_params(missing="marginalize")
    sd = math.sqrt(0.02 * 0.98 / 20_000)
    for mask, value in zip(masks[1:], values[1:]):
        rows = fresh.copy()
        rows[:, mask] = np.nan
        rate = float((scorer.score_samples(rows) <= value).mean())
        assert abs(rate - 0.02) < 5 * sd, (mask, rate)
    with pytest.raises(ValueError, match="every feature missing"):
        thresholds.for_masks(np.ones((1, 4), dtype=bool))


def test_missing_patterns_gives_every_rows_pattern():
    X = np.array([[1.0, np.nan, 2.0], [0.0, 1.0, 2.0], [np.nan, np.nan, 1.0], [3.0, np.nan, 0.0]])
    masks, inverse = missing_patterns(X)
    np.testing.assert_array_equal(masks[inverse], np.isnan(X))
    assert len(masks) == 3


@pytest.mark.parametrize("local_max_rows", [LOCAL_MAX_ROWS, 0], ids=["in-process", "dask"])
def test_a_partition_with_gaps_is_scored_on_its_observed_features(ws, registered, local_max_rows):
    reg, truth = registered
    model = reg.load()
    rng = np.random.default_rng(5)
    X, _, _ = sample_rows(truth, 6_000, 1e-9, -np.inf, rng)
    part = _with_gaps(X, 0.1, rng)
    write_partition(ws / "incoming", "p-gaps", part, NAMES, "csv")
    res = _score(ws, model, "p-gaps", bad_rows="marginalize", local_max_rows=local_max_rows)
    assert res.status == "scored", res.error
    assert res.n_rows == 6_000  # no row lost
    out = read_scores(ws / "scores" / "p-gaps.zarr")
    scorer = copy.copy(model.model).set_params(missing="marginalize")
    np.testing.assert_allclose(out["log_likelihood"], scorer.score_samples(part), rtol=1e-10)
    np.testing.assert_array_equal(out["component"], scorer.predict(part))
    np.testing.assert_array_equal(out["n_observed"], (~np.isnan(part)).sum(axis=1))
    complete = out["n_observed"] == 4
    # complete rows against the calibrated threshold, the others against their pattern's
    np.testing.assert_array_equal(out["is_anomaly"][complete], out["log_likelihood"][complete] <= model.threshold)
    contamination = model.metadata["anomaly"]["contamination"]
    expected = PatternThresholds(model.model, model.threshold, contamination).for_rows(part)
    np.testing.assert_array_equal(out["is_anomaly"], out["log_likelihood"] <= expected)
    attrs = out["attrs"]
    assert attrs["missing"] == "marginalize" and attrs["n_incomplete_rows"] == int((~complete).sum()) > 0
    # drift counts the complete rows only (the reference is of every feature)
    entry = Manifest(ws / "manifest.sqlite").get("p-gaps")
    assert entry.drift is not None and not entry.drift["drifted"]
    # the statistics are of every row (missing-data EM), for updates
    stats = read_statistics(ws / "scores" / "p-gaps.zarr")
    assert stats.n_samples == 6_000 and math.isclose(stats.to_arrays()[0]["nk"].sum(), 6_000, rel_tol=1e-9)


def test_drift_counts_of_a_partition_with_gaps_are_its_complete_rows(registered):
    reg, truth = registered
    model = reg.load()
    from pipeline.drift import partition_counts

    rng = np.random.default_rng(8)
    ll = rng.normal(-6, 1, size=500)
    comp = rng.integers(0, 3, size=500)
    rows = rng.random(500) < 0.7
    counts = partition_counts(ll, comp, ll < -8, model.reference, rows=rows)
    alone = PartitionCounts.from_chunk(ll[rows], comp[rows], ll[rows] < -8, model.reference)
    assert counts.n_rows == alone.n_rows == int(rows.sum())
    np.testing.assert_array_equal(counts.hist_right, alone.hist_right)


def test_without_marginalize_a_partition_with_gaps_fails_and_says_how(ws, registered):
    reg, truth = registered
    rng = np.random.default_rng(6)
    X, _, _ = sample_rows(truth, 500, 1e-9, -np.inf, rng)
    write_partition(ws / "incoming", "p-bad", _with_gaps(X, 0.1, rng), NAMES, "csv")
    res = _score(ws, reg.load(), "p-bad")
    assert res.status == "failed" and "bad_rows='drop'" in res.error
    manifest = Manifest(ws / "manifest.sqlite")
    assert manifest.get("p-bad") is None and len(manifest.failures("p-bad")) == 1
    assert not (ws / "scores" / "p-bad.zarr").exists()


def test_a_variational_model_is_refused_for_marginalize(ws, registered, tmp_path):
    reg, truth = registered
    rng = np.random.default_rng(9)
    X, _, _ = sample_rows(truth, 3_000, 1e-9, -np.inf, rng)
    data = write_zarr(tmp_path / "t.zarr", X, NAMES, chunk_rows=3_000)
    breg = ModelRegistry(tmp_path / "bmodels")
    register_model(BayesianGaussianMixture(n_components=3, random_state=0, max_iter=50).fit(data), data, breg,
                   contamination=0.01)
    with pytest.raises(ValueError, match="needs a GaussianMixture.*BayesianGaussianMixture.*bad_rows to 'error'"):
        check_marginalizes(breg.load())
    write_partition(ws / "incoming", "p-v", _with_gaps(X[:200], 0.1, rng), NAMES, "csv")
    with pytest.raises(ValueError, match="needs a GaussianMixture"):
        _score(ws, breg.load(), "p-v", bad_rows="marginalize")
    assert Manifest(ws / "manifest.sqlite").entries() == []  # refused before anything was claimed


def test_the_threshold_of_a_marginalising_model_is_of_the_complete_rows(registered):
    reg, truth = registered
    model = copy.copy(reg.load().model).set_params(missing="marginalize")
    rng = np.random.default_rng(12)
    X, _, _ = sample_rows(truth, 8_000, 1e-9, -np.inf, rng)
    gaps = _with_gaps(X, 0.2, rng)
    complete = ~np.isnan(gaps).any(axis=1)
    for sample_size in (200_000, 1_000):  # read off directly, and through the bracketing pass
        both = calibrate_threshold(model, gaps, 0.01, sample_size=sample_size)
        alone = calibrate_threshold(model, gaps[complete], 0.01, sample_size=sample_size)
        assert both.threshold == alone.threshold and both.n_rows == alone.n_rows == int(complete.sum())
        np.testing.assert_array_equal(both.reference.occupancy, alone.reference.occupancy)
        assert both.reference.loglik_mean == pytest.approx(alone.reference.loglik_mean, rel=1e-12)


def test_training_data_with_gaps_needs_model_missing_marginalize(tmp_path):
    from pipeline.ingest import ingest
    from pipeline.demo_data import write_partition as write

    rng = np.random.default_rng(2)
    X = _with_gaps(rng.normal(size=(400, 4)), 0.2, rng)
    write(tmp_path, "raw", X, NAMES, "csv")
    out = ingest(str(tmp_path / "raw.csv"), tmp_path / "train.zarr", bad_rows="marginalize")
    assert out.report.n_incomplete_rows > 0
    with pytest.raises(ValueError, match="set model.missing: marginalize"):
        check_missing_policy(out.path, {"missing": "error"})
    check_missing_policy(out.path, {"missing": "marginalize"})


def test_scores_stores_hold_n_observed_only_when_given(tmp_path):
    n = 10
    base = dict(log_likelihood=np.zeros(n), component=np.zeros(n, np.int64), responsibility=np.ones(n),
                is_anomaly=np.zeros(n, bool), attrs={})
    write_scores(tmp_path / "a.zarr", **base)
    write_scores(tmp_path / "b.zarr", **base, n_observed=np.full(n, 3))
    assert "n_observed" not in read_scores(tmp_path / "a.zarr")
    np.testing.assert_array_equal(read_scores(tmp_path / "b.zarr")["n_observed"], np.full(n, 3))
    with pytest.raises(ValueError, match="equal lengths"):
        write_scores(tmp_path / "c.zarr", **base, n_observed=np.full(n - 1, 3))


def test_an_update_absorbs_partitions_with_gaps(tmp_path):
    rng = np.random.default_rng(21)
    truth = make_true_mixture(3, 4, "full", rng)
    X, _, _ = sample_rows(truth, 30_000, 1e-9, -np.inf, rng)
    data = write_zarr(tmp_path / "train.zarr", X, NAMES, chunk_rows=10_000)
    reg = ModelRegistry(tmp_path / "models")
    register_model(GaussianMixture(3, random_state=0, tol=1e-6).fit(data), data, reg, contamination=0.01)
    for d in ("incoming", "scores", "staging"):
        (tmp_path / d).mkdir()
    current = reg.load()
    for pid in ("p0", "p1"):
        rows, comp, _ = sample_rows(truth, 6_000, 1e-9, -np.inf, rng)
        rows[comp == 0, 0] += 4.0 * math.sqrt(truth.covariances[0][0, 0])  # a moved component
        write_partition(tmp_path / "incoming", pid, _with_gaps(rows, 0.1, rng), NAMES, "parquet")
        assert _score(tmp_path, current, pid, bad_rows="marginalize").status == "scored"
    manifest = Manifest(tmp_path / "manifest.sqlite")
    policy = UpdatePolicy(mode="always", half_life=6_000.0, min_rows=1)
    plan = plan_update(manifest.entries(), current.version, policy)
    outputs = {e.partition_id: e.output_path for e in manifest.entries()}
    outcome = update_model(registry=reg, manifest=manifest, current=current, plan=plan, outputs=outputs,
                           staging=tmp_path / "staging", policy=policy, drift_policy=DriftPolicy(),
                           run_id="run-2", bad_rows="marginalize")
    assert outcome.promoted, outcome.reason
    assert np.isfinite(reg.load().threshold)
