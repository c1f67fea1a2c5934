"""The model registry: versions, the current one and its history, imports, the per-process cache."""

import json

import numpy as np
import pytest
from conftest import write_zarr

from gmm_engine import GaussianMixture, ModelFormatError, load_model, open_zarr_array
from pipeline import registry as registry_mod
from pipeline.registry import ModelRegistry, is_version_name
from pipeline.training import register_model

NAMES = ["a", "b", "c"]


@pytest.fixture
def registry(tmp_path, blobs, monkeypatch):
    monkeypatch.setattr(registry_mod, "_CACHE", {})
    X, _ = blobs
    data = write_zarr(tmp_path / "train.zarr", X, NAMES)
    reg = ModelRegistry(tmp_path / "models")
    register_model(GaussianMixture(3, random_state=0).fit(data), data, reg, contamination=0.01)
    return reg, data


def test_model_is_loaded_once_per_version(registry, monkeypatch):
    reg, _ = registry
    loads = []
    original = registry_mod.load_model

    def counting(path):
        loads.append(str(path))
        return original(path)

    monkeypatch.setattr(registry_mod, "load_model", counting)
    first = reg.load_cached("current")
    again = reg.load_cached("current")
    by_version = reg.load_cached(first.version)
    assert first is again is by_version
    assert loads == [str(reg.root / first.version)]
    assert first.version == reg.current_version()


def test_new_current_version_is_loaded(registry):
    reg, data = registry
    first = reg.load_cached("current")
    gm = GaussianMixture(4, random_state=1).fit(data)
    register_model(gm, data, reg, contamination=0.01)
    second = reg.load_cached("current")
    assert second.version != first.version
    assert second.version == reg.current_version()
    assert second.model.n_components == 4
    np.testing.assert_array_equal(second.model.means_, gm.means_)


def test_a_version_directory_resolves_to_its_own_name(registry):
    """A version is named once: resolving its directory does not append the checksum again."""
    reg, _ = registry
    version = reg.current_version()
    assert is_version_name(version)
    assert reg.resolve(str(reg.root / version)) == (version, reg.root / version)
    assert reg.resolve(version)[0] == reg.resolve("current")[0] == version
    assert reg.load(str(reg.root / version)).version == version


def test_an_outside_model_directory_is_imported_before_use(registry, tmp_path):
    reg, data = registry
    outside = GaussianMixture(2, random_state=0).fit(data).save(tmp_path / "elsewhere" / "my-model")
    with pytest.raises(ModelFormatError, match="import an outside model directory"):
        reg.resolve(str(outside))
    version = reg.import_model(outside)
    assert version in reg.versions() and reg.current_version() != version
    assert reg.metadata(version)["lineage"]["imported_from"] == str(outside.absolute())
    # a registered version directory from another registry keeps its name, once
    other = ModelRegistry(tmp_path / "other-models")
    v_other = other.register(GaussianMixture(2, random_state=1).fit(data), {})
    assert reg.import_model(other.root / v_other) == v_other == reg.import_model(other.root / v_other)
    np.testing.assert_array_equal(reg.load(v_other).model.means_, other.load(v_other).model.means_)


def test_current_changes_are_recorded_with_their_reason(registry):
    reg, data = registry
    first = reg.current_version()
    second = reg.register(GaussianMixture(2, random_state=0).fit(data), {}, make_current=False)
    reg.set_current(second, reason="rolled forward by the user")
    reg.set_current(first, reason="rolled back by the user")
    events = reg.history()
    assert [e["version"] for e in events] == [first, second, first]
    assert [e["previous"] for e in events] == [None, first, second]
    assert events[-1]["reason"] == "rolled back by the user"
    assert json.loads((reg.root / "history.json").read_text()) == events
    with pytest.raises(ModelFormatError, match="No model version 'nope'.*gmm models list"):
        reg.set_current("nope")
    assert reg.current_version() == first


def test_the_drift_reference_is_registered_with_the_model_and_verified(registry):
    reg, data = registry
    version = reg.current_version()
    ref = reg.drift_reference(version)
    model = reg.load(version).model
    X = np.asarray(open_zarr_array(data)[:])
    scores = model.score_samples(X)
    assert ref.loglik_mean == pytest.approx(scores.mean(), rel=1e-12)
    assert np.isin(ref.score_sample, scores).all() and ref.n_components == 3
    sample = reg.path_of(version) / "attachments" / "drift_score_sample.npy"
    raw = bytearray(sample.read_bytes())
    raw[-1] ^= 1
    sample.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match="attachment attachments/drift_score_sample.npy does not match its checksum"):
        reg.drift_reference(version)
    with pytest.raises(ModelFormatError, match="does not match its checksum"):
        reg.load(version)  # a version with a damaged reference is not used for scoring
    assert load_model(reg.path_of(version))[0].n_components == 3  # the model itself is untouched
