"""The scoring task's per-process model cache: one load per model version, a new
version (or a re-registered 'current') picked up at once."""

import numpy as np
import pytest
from conftest import write_zarr

from flows import tasks
from gmm_engine import GaussianMixture
from pipeline import models
from pipeline.models import ModelRegistry
from pipeline.training import register_model

NAMES = ["a", "b", "c"]


@pytest.fixture
def registry(tmp_path, blobs, monkeypatch):
    monkeypatch.setattr(tasks, "_MODELS", {})
    X, _ = blobs
    data = write_zarr(tmp_path / "train.zarr", X, NAMES)
    reg = ModelRegistry(tmp_path / "models")
    register_model(GaussianMixture(3, random_state=0).fit(data), data, reg, contamination=0.01)
    return reg, data


def test_model_is_loaded_once_per_version(registry, monkeypatch):
    reg, _ = registry
    loads = []
    original = models.load_model

    def counting(path):
        loads.append(str(path))
        return original(path)

    monkeypatch.setattr(models, "load_model", counting)
    first = tasks._model(str(reg.root), "current")
    again = tasks._model(str(reg.root), "current")
    by_version = tasks._model(str(reg.root), first.version)
    assert first is again is by_version
    assert loads == [str(reg.root / first.version)]
    assert first.version == reg.current_version()


def test_new_current_version_is_loaded(registry):
    reg, data = registry
    first = tasks._model(str(reg.root), "current")
    gm = GaussianMixture(4, random_state=1).fit(data)
    register_model(gm, data, reg, contamination=0.01)
    second = tasks._model(str(reg.root), "current")
    assert second.version != first.version
    assert second.version == reg.current_version()
    assert second.model.n_components == 4
    np.testing.assert_array_equal(second.model.means_, gm.means_)
