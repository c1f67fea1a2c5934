"""Initialise, fit with checkpoints, resume, calibrate and register."""

import json

import numpy as np
import pytest

from conftest import write_zarr
from gmm_engine import GaussianMixture, ModelFormatError, load_model
from gmm_engine.checkpoint import load_checkpoint
from pipeline.data import data_fingerprint
from pipeline.registry import ModelRegistry
from pipeline.training import (
    ResumeMismatchError,
    fit_model,
    initialize_model,
    register_model,
)

PARAMS = dict(n_components=3, covariance_type="full", tol=1e-6, max_iter=12, random_state=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory, blobs):
    X, _ = blobs
    return write_zarr(tmp_path_factory.mktemp("train") / "train.zarr", X.astype(np.float32),
                      ["a", "b", "c"], chunk_rows=2000)


class Killed(Exception):
    pass


def test_initialize_saves_iteration_zero(tmp_path, data):
    path = initialize_model(data, PARAMS, tmp_path / "init")
    model, meta = load_model(path)
    assert model.n_iter_ == 0 and model.lower_bounds_ == [] and model.lower_bound_ == -np.inf
    assert list(model.feature_names_in_) == ["a", "b", "c"]
    assert meta["initialization"]["init_params"] == "kmeans"
    assert meta["data"]["digest"] == data_fingerprint(data)["digest"]


def test_best_of_n_init_has_the_highest_initial_likelihood(tmp_path, data):
    path = initialize_model(data, {**PARAMS, "init_params": "random"}, tmp_path / "init", n_init=4)
    model, meta = load_model(path)
    best = meta["initialization"]["initial_loglik"]
    assert np.isclose(model.score(data), best)
    rs = np.random.RandomState(0)
    others = [GaussianMixture(**{**PARAMS, "init_params": "random", "max_iter": 0,
                                 "random_state": rs}).fit(data).score(data) for _ in range(4)]
    assert np.isclose(best, max(others))


def test_fit_from_init_checkpoints_every_iteration(tmp_path, data):
    init = initialize_model(data, PARAMS, tmp_path / "init")
    seen = []
    res = fit_model(data, PARAMS, checkpoint_dir=tmp_path / "ckpt", init_dir=init,
                    on_iteration=lambda s: seen.append(s.n_iter))
    assert seen == list(range(1, res.model.n_iter_ + 1))
    state, params, meta = load_checkpoint(tmp_path / "ckpt")
    assert state.n_iter == res.model.n_iter_
    np.testing.assert_array_equal(state.params.means, res.model.means_)
    assert meta["data"]["digest"] == data_fingerprint(data)["digest"]
    kept = sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.name.startswith("iter-"))
    assert len(kept) <= 2  # older iterations pruned


def test_resume_after_a_kill_ends_with_the_same_parameters(tmp_path, data):
    init = initialize_model(data, PARAMS, tmp_path / "init")
    full = fit_model(data, PARAMS, checkpoint_dir=tmp_path / "full", init_dir=init).model

    def kill_at_5(state):
        if state.n_iter == 5:
            raise Killed

    with pytest.raises(Killed):
        fit_model(data, PARAMS, checkpoint_dir=tmp_path / "ckpt", init_dir=init, on_iteration=kill_at_5)
    res = fit_model(data, PARAMS, checkpoint_dir=tmp_path / "ckpt", init_dir=init, resume=True)
    assert res.resumed_from == 5
    gm = res.model
    assert gm.n_iter_ == full.n_iter_
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(gm, attr), getattr(full, attr), rtol=1e-12, atol=0)
    np.testing.assert_allclose(gm.lower_bounds_, full.lower_bounds_, rtol=1e-12)
    assert gm.converged_ == full.converged_


def test_resume_without_a_checkpoint_starts_afresh(tmp_path, data):
    init = initialize_model(data, PARAMS, tmp_path / "init")
    res = fit_model(data, PARAMS, checkpoint_dir=tmp_path / "none", init_dir=init, resume=True)
    assert res.resumed_from == 0 and res.model.n_iter_ > 0


def test_resume_refuses_other_parameters_or_data(tmp_path, data, blobs):
    init = initialize_model(data, PARAMS, tmp_path / "init")
    fit_model(data, {**PARAMS, "max_iter": 2}, checkpoint_dir=tmp_path / "ckpt", init_dir=init)
    with pytest.raises(ResumeMismatchError, match="other model parameters"):
        fit_model(data, {**PARAMS, "reg_covar": 1e-3, "max_iter": 2}, checkpoint_dir=tmp_path / "ckpt",
                  resume=True)
    X, _ = blobs
    other = write_zarr(tmp_path / "other.zarr", X[:5000].astype(np.float32), ["a", "b", "c"])
    with pytest.raises(ResumeMismatchError, match="other training data"):
        fit_model(other, {**PARAMS, "max_iter": 2}, checkpoint_dir=tmp_path / "ckpt", resume=True)


def test_register_calibrates_and_makes_current(tmp_path, data):
    gm = GaussianMixture(**PARAMS).fit(data)
    reg = ModelRegistry(tmp_path / "models")
    with pytest.raises(ModelFormatError, match="No current model"):
        reg.load()
    v1, thr = register_model(gm, data, reg, contamination=0.01)
    loaded = reg.load()
    assert loaded.version == v1 == reg.current_version()
    assert loaded.threshold == thr.threshold
    assert loaded.metadata["anomaly"]["n_flagged"] >= 0.01 * 9090
    assert loaded.metadata["feature_names"] == ["a", "b", "c"]
    np.testing.assert_array_equal(loaded.model.means_, gm.means_)
    v2, _ = register_model(gm, data, reg, contamination=0.02, make_current=False)
    assert reg.current_version() == v1 and reg.versions() == sorted([v1, v2])
    reg.set_current(v2)
    assert reg.load().metadata["anomaly"]["contamination"] == 0.02
    assert reg.load(v1).version == v1
    by_path = reg.load(str(tmp_path / "models" / v1))
    np.testing.assert_array_equal(by_path.model.means_, gm.means_)
    assert json.loads((tmp_path / "models" / v1 / "model.json").read_text())["metadata"]["anomaly"]


def test_a_model_without_threshold_cannot_score(tmp_path, data):
    gm = GaussianMixture(**PARAMS).fit(data)
    reg = ModelRegistry(tmp_path / "models")
    version = reg.register(gm, {"note": "no threshold"})
    with pytest.raises(ModelFormatError, match="no anomaly threshold"):
        reg.load(version).threshold


def test_prune_keeps_the_current_version(tmp_path, data):
    gm = GaussianMixture(**{**PARAMS, "max_iter": 2}).fit(data)
    reg = ModelRegistry(tmp_path / "models")
    versions = [reg.register(gm, {}, make_current=(i == 0)) for i in range(4)]
    removed = reg.prune(keep=2)
    assert versions[0] not in removed and reg.current_version() == versions[0]
    assert len(reg.versions()) == 2


@pytest.mark.parametrize("step", ["initialize", "fit"])
def test_more_components_than_rows_names_the_setting_to_change(tmp_path, step):
    few = write_zarr(tmp_path / "few.zarr", np.arange(12.0).reshape(4, 3), ["a", "b", "c"])
    params = {**PARAMS, "n_components": 5}
    with pytest.raises(ValueError, match=r"n_components=5 but the training data .*few.zarr has only 4 "
                                         r"rows: .* Lower model.n_components"):
        if step == "initialize":
            initialize_model(few, params, tmp_path / "init")
        else:
            fit_model(few, params, checkpoint_dir=tmp_path / "ckpt")
    assert not (tmp_path / "init").exists() and not (tmp_path / "ckpt").exists()
