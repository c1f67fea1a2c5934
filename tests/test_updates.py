"""Model updates from scored partitions: exact statistics, the plan, promotion, refusals, lineage."""

import copy
import math

import numpy as np
import pytest
from conftest import write_zarr

from gmm_engine import GaussianMixture
from gmm_engine._params import m_step
from gmm_engine.scoring import score_rows
from pipeline.demo_data import make_true_mixture, sample_rows, write_partition
from pipeline.drift import DriftPolicy
from pipeline.manifest import Manifest
from pipeline.partitions import discover_partitions
from pipeline.registry import ModelRegistry
from pipeline.scoring import score_partition
from pipeline.stream import history, sequential_steps
from pipeline.training import register_model
from pipeline.updates import UpdatePlan, UpdatePolicy, build_candidate, decayed_statistics, plan_update, update_model

NAMES = ["a", "b", "c"]
pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names")


@pytest.fixture
def stream(tmp_path):
    """A registered model of a 3-component mixture and a work directory to score partitions into."""
    rng = np.random.default_rng(7)
    truth = make_true_mixture(3, 3, "full", rng)
    X, _, _ = sample_rows(truth, 30_000, 1e-9, -np.inf, rng)
    data = write_zarr(tmp_path / "train.zarr", X, NAMES, chunk_rows=10_000)
    reg = ModelRegistry(tmp_path / "models")
    register_model(GaussianMixture(3, random_state=0, tol=1e-6).fit(data), data, reg, contamination=0.01)
    for d in ("incoming", "scores", "staging"):
        (tmp_path / d).mkdir()
    return tmp_path, reg, truth, rng


def _score_new(ws, reg, rows_by_id):
    """Write and score partitions in order; the sequential step as the flow takes it."""
    for pid, X in rows_by_id.items():
        write_partition(ws / "incoming", pid, X, NAMES, "parquet")
    model = reg.load()
    parts = {p.id: p for p in discover_partitions(str(ws / "incoming")).partitions}
    for pid in rows_by_id:
        res = score_partition(parts[pid], model, outputs_dir=ws / "scores", staging_dir=ws / "staging",
                              manifest_path=ws / "manifest.sqlite", run_id="run-1")
        assert res.status == "scored", res.error
    manifest = Manifest(ws / "manifest.sqlite")
    sequential_steps(manifest, list(rows_by_id), model.version, model.reference, DriftPolicy())
    return manifest, model


def _moved(truth, rng, n, shift=4.0):
    X, comp, _ = sample_rows(truth, n, 1e-9, -np.inf, rng)
    X[comp == 0, 0] += shift * math.sqrt(truth.covariances[0][0, 0])
    return X


def test_an_update_from_stored_statistics_equals_one_em_iteration_over_those_rows(stream):
    ws, reg, truth, rng = stream
    parts = {f"p{i}": sample_rows(truth, 4_000, 1e-9, -np.inf, rng)[0] for i in range(2)}
    manifest, current = _score_new(ws, reg, parts)
    plan = plan_update(manifest.entries(), current.version, UpdatePolicy(mode="always", half_life=1e-9, min_rows=1))
    assert [p.partition_id for p in plan.absorb] == ["p0"] and plan.held_back.partition_id == "p1"
    outputs = {e.partition_id: e.output_path for e in manifest.entries()}
    # the running state of the fit is forgotten (half-life ~0): the update is EM on p0 alone
    candidate, why = build_candidate(current, plan, outputs, UpdatePolicy(mode="always", half_life=1e-9))
    assert why == ""
    *_, stats = score_rows(current.model, parts["p0"], with_stats=True)
    expected = m_step(stats, current.model.reg_covar)
    for got, want in ((candidate.weights_, expected.weights), (candidate.means_, expected.means),
                      (candidate.covariances_, expected.covariances)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=0)


def test_older_partitions_are_forgotten_by_the_rows_after_them(stream):
    ws, reg, truth, rng = stream
    parts = {f"p{i}": sample_rows(truth, 3_000, 1e-9, -np.inf, rng)[0] for i in range(3)}
    manifest, current = _score_new(ws, reg, parts)
    plan = plan_update(manifest.entries(), current.version, UpdatePolicy(mode="always", min_rows=1))
    outputs = {e.partition_id: e.output_path for e in manifest.entries()}
    merged = decayed_statistics(plan, outputs, half_life=3_000.0)
    # p0 is 3,000 rows older than p1: it weighs 2 ** -1 = 0.5, exactly as row weights would
    weights = np.r_[np.full(3_000, 0.5), np.ones(3_000)]
    *_, s0 = score_rows(current.model, parts["p0"], with_stats=True)
    *_, s1 = score_rows(current.model, parts["p1"], with_stats=True)
    want = s0.scaled(0.5).merge(s1)
    np.testing.assert_allclose(merged.nk, want.nk, rtol=1e-12)
    np.testing.assert_allclose(merged.scatter, want.scatter, rtol=1e-12)
    assert merged.sum_weights == pytest.approx(weights.sum(), rel=1e-12)


def test_plan_needs_two_partitions_min_rows_and_for_on_drift_a_drift(stream):
    ws, reg, truth, rng = stream
    manifest, current = _score_new(ws, reg, {"p0": sample_rows(truth, 2_000, 1e-9, -np.inf, rng)[0]})
    entries = manifest.entries()
    assert plan_update(entries, current.version, UpdatePolicy(mode="always", min_rows=1)) is None  # one partition
    manifest, _ = _score_new(ws, reg, {"p1": sample_rows(truth, 2_000, 1e-9, -np.inf, rng)[0]})
    entries = manifest.entries()
    assert plan_update(entries, current.version, UpdatePolicy(mode="never")) is None
    assert plan_update(entries, current.version, UpdatePolicy(mode="always", min_rows=5_000)) is None
    assert plan_update(entries, current.version, UpdatePolicy(mode="on_drift", min_rows=1)) is None  # no drift
    assert plan_update(entries, current.version, UpdatePolicy(mode="always", min_rows=1)).rule == "always"


def test_a_moved_component_is_followed_by_a_promoted_update_with_lineage(stream):
    ws, reg, truth, rng = stream
    parts = {"p0": _moved(truth, rng, 6_000), "p1": _moved(truth, rng, 6_000)}
    manifest, current = _score_new(ws, reg, parts)
    assert all(e.drift["drifted"] for e in manifest.entries())
    policy = UpdatePolicy(mode="on_drift", half_life=6_000.0, min_rows=1)
    plan = plan_update(manifest.entries(), current.version, policy)
    assert plan.rule == "on_drift: p0, p1"
    outputs = {e.partition_id: e.output_path for e in manifest.entries()}
    outcome = update_model(registry=reg, manifest=manifest, current=current, plan=plan, outputs=outputs,
                           staging=ws / "staging", policy=policy, drift_policy=DriftPolicy(), run_id="run-2")
    assert outcome.promoted and reg.current_version() == outcome.version
    assert outcome.candidate_loglik > outcome.current_loglik
    lineage = reg.metadata(outcome.version)["lineage"]
    assert lineage["parent"] == current.version and lineage["partitions"] == ["p0"]
    assert lineage["rows"] == 6_000 and lineage["held_back"] == "p1" and lineage["rule"] == "on_drift: p0, p1"
    assert reg.history()[-1]["reason"].startswith("promoted: it explains p1 better")
    (recorded,) = manifest.updates()
    assert recorded["version"] == outcome.version and recorded["promoted"] and recorded["partitions"] == ["p0"]
    # the candidate's own threshold and drift reference come from the rows it was built from
    new = reg.load()
    assert new.reference is not None and new.threshold != current.threshold
    assert not any(list((ws / "staging").iterdir()))
    # the partitions keep the version that scored them
    assert {e.model_version for e in manifest.entries()} == {current.version}


def test_an_update_that_would_collapse_a_component_is_refused_and_the_current_model_stays(stream):
    ws, reg, truth, rng = stream
    current = reg.load()
    model = copy.deepcopy(current.model)
    model.reg_covar = 0.0
    X = np.repeat(model.means_[:1] + 0.1, 50, axis=0)  # every row on one point: a component without spread
    X = np.vstack([X, sample_rows(truth, 10, 1e-9, -np.inf, rng)[0]])
    # the current model as loaded, but without regularisation: its update cannot keep the component alive
    one = type(current)(model, current.metadata, current.version, current.path, current.reference)
    manifest, _ = _score_new(ws, reg, {"p0": X, "p1": X})
    plan = plan_update(manifest.entries(), current.version, UpdatePolicy(mode="always", half_life=1e-9, min_rows=1))
    outputs = {e.partition_id: e.output_path for e in manifest.entries()}
    outcome = update_model(registry=reg, manifest=manifest, current=one, plan=plan, outputs=outputs,
                           staging=ws / "staging", policy=UpdatePolicy(mode="always", half_life=1e-9, min_rows=1),
                           drift_policy=DriftPolicy(), run_id="run-2")
    assert outcome.version is None and not outcome.promoted
    assert "would collapse a component" in outcome.reason and "reg_covar" in outcome.reason
    assert reg.current_version() == current.version and len(reg.versions()) == 1
    assert manifest.updates()[0]["reason"] == outcome.reason


def test_the_sequential_detector_continues_across_runs_in_arrival_order(stream):
    ws, reg, truth, rng = stream
    manifest, current = _score_new(ws, reg, {"a": sample_rows(truth, 2_000, 1e-9, -np.inf, rng)[0]})
    manifest, _ = _score_new(ws, reg, {"c": sample_rows(truth, 2_000, 1e-9, -np.inf, rng)[0],
                                       "b": sample_rows(truth, 2_000, 1e-9, -np.inf, rng)[0]})
    points = history(manifest.entries())
    assert [(p.partition_id, p.position) for p in points] == [("a", 0), ("c", 1), ("b", 2)]
    assert all(p.drift["sequential"]["threshold"] == 5.0 for p in points)


def test_models_and_status_commands_show_the_stream_and_roll_back(stream):
    from typer.testing import CliRunner

    from flows.cli import app

    ws, reg, truth, rng = stream
    first = reg.current_version()
    manifest, current = _score_new(ws, reg, {"p0": _moved(truth, rng, 6_000), "p1": _moved(truth, rng, 6_000)})
    policy = UpdatePolicy(mode="on_drift", half_life=6_000.0, min_rows=1)
    plan = plan_update(manifest.entries(), current.version, policy)
    outputs = {e.partition_id: e.output_path for e in manifest.entries()}
    outcome = update_model(registry=reg, manifest=manifest, current=current, plan=plan, outputs=outputs,
                           staging=ws / "staging", policy=policy, drift_policy=DriftPolicy(), run_id="run-2")
    _score_new(ws, reg, {"p2": _moved(truth, rng, 3_000)})  # scored by the promoted version
    runner = CliRunner()
    res = runner.invoke(app, ["models", "list", "--workdir", str(ws)])
    assert res.exit_code == 0, res.output
    assert first in res.output and outcome.version in res.output and "on_drift: p0, p1" in res.output
    res = runner.invoke(app, ["status", "--workdir", str(ws)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert [ln.split()[1] for ln in lines[2:5]] == ["p0", "p1", "p2"] and "yes" in lines[2]
    assert (ws / "report" / "status.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(app, ["models", "use", first, "--workdir", str(ws)])
    assert res.exit_code == 0 and f"Current model: {first}" in res.output
    assert reg.current_version() == first and reg.history()[-1]["reason"].startswith("set by `gmm models use`")
    res = runner.invoke(app, ["models", "use", "nope", "--workdir", str(ws)])
    assert res.exit_code == 1 and "No model version 'nope'" in res.output
