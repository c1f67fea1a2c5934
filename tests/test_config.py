"""YAML configs: every example validates; mistakes name the field and the allowed values."""

from pathlib import Path

import pytest

from flows.config import (
    ConfigError,
    DemoConfig,
    FitConfig,
    IngestConfig,
    ScoreConfig,
    SelectConfig,
    ServeConfig,
    load_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = {"ingest": IngestConfig, "fit": FitConfig, "select": SelectConfig, "score": ScoreConfig,
          "serve": ServeConfig, "demo": DemoConfig}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_example_config_validates(name):
    cfg = load_config(MODELS[name], CONFIGS / f"{name}.yaml")
    assert isinstance(cfg, MODELS[name])


def test_each_command_has_an_example():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == set(MODELS)


def _bad(tmp_path, text, model=FitConfig):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(model, p)
    return str(err.value)


def test_typo_suggests_the_field(tmp_path):
    msg = _bad(tmp_path, "model:\n  n_component: 3\n")
    assert "model.n_component: unknown field. Did you mean 'n_components'?" in msg
    assert "Allowed fields here: n_components, covariance_type" in msg


def test_wrong_literal_lists_the_allowed_values(tmp_path):
    msg = _bad(tmp_path, "model:\n  covariance_type: fulll\n")
    assert "model.covariance_type: got 'fulll'; allowed values: 'full', 'tied', 'diag' or 'spherical'" in msg


def test_wrong_type_and_range(tmp_path):
    msg = _bad(tmp_path, "cluster:\n  threads_per_worker: two\nanomaly:\n  contamination: 0.7\n")
    assert "cluster.threads_per_worker" in msg and "valid integer" in msg
    assert "anomaly.contamination" in msg and "0.5" in msg


def test_every_problem_is_listed_at_once(tmp_path):
    msg = _bad(tmp_path, "model:\n  n_components: 0\n  init_params: best\nbogus: 1\n")
    assert msg.count("\n  - ") == 3


def test_missing_required_field(tmp_path):
    assert "source: required field is missing" in _bad(tmp_path, "dest: x.zarr\n", IngestConfig)


def test_serve_needs_exactly_one_schedule(tmp_path):
    both = _bad(tmp_path, "interval_seconds: 5\ncron: '* * * * *'\nscore: {}\n", ServeConfig)
    assert "exactly one of 'interval_seconds' or 'cron'" in both
    assert "exactly one" in _bad(tmp_path, "score: {}\n", ServeConfig)


def test_tls_address_needs_tls_settings(tmp_path):
    assert "needs the 'tls' section" in _bad(tmp_path, "cluster:\n  address: tls://h:8786\n")


def test_not_yaml_and_not_a_mapping(tmp_path):
    assert "not valid YAML" in _bad(tmp_path, "model: [unclosed\n")
    assert "expected a mapping" in _bad(tmp_path, "- a\n- b\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; see configs/"):
        load_config(FitConfig, tmp_path / "nope.yaml")


def test_overrides_and_relative_paths(tmp_path):
    cfg = load_config(FitConfig, None, {"workdir": str(tmp_path), "model.n_components": 5, "data": None})
    assert cfg.model.n_components == 5
    ws = cfg.workspace
    assert ws.resolve(cfg.data, ws.train) == str(tmp_path / "data/train.zarr")
    assert ws.resolve("s3://bucket/x.zarr", ws.train) == "s3://bucket/x.zarr"
    assert ws.resolve("/abs/x.zarr", ws.train) == "/abs/x.zarr"
    assert ws.resolve("raw/x.zarr", ws.train) == str(tmp_path / "raw/x.zarr")


def test_fit_finds_its_start_on_a_sample_and_select_on_all_rows(tmp_path):
    # gmm fit: the start on a 250,000-row sample, unless the config says otherwise
    assert FitConfig().model.init_size == 250_000
    assert load_config(FitConfig, CONFIGS / "fit.yaml").model.init_size == 250_000
    p = tmp_path / "f.yaml"
    p.write_text("model:\n  n_components: 3\n")
    assert load_config(FitConfig, p).model.init_size == 250_000
    p.write_text("model:\n  init_size: null\n")
    assert load_config(FitConfig, p).model.init_size is None
    # gmm select: candidates start on the rows they share passes over, even with a model section
    assert SelectConfig().model.init_size is None
    p.write_text("model:\n  n_components: 3\n")
    assert load_config(SelectConfig, p).model.init_size is None
    p.write_text("model:\n  init_size: 1000\n")
    assert load_config(SelectConfig, p).model.init_size == 1000
    assert "init_size" in _bad(tmp_path, "model:\n  init_size: 0\n")
