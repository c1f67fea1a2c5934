"""`gmm select` as a flow: the joint search, its report and summary.json, in memory and on the cluster."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import write_zarr
from flows.config import AnomalyConfig, ClusterConfig, ConfigError, GridConfig, SelectConfig, parse_config
from gmm_engine import GaussianMixture
from pipeline.demo_data import make_true_mixture, sample_rows
from pipeline.registry import ModelRegistry

pytestmark = pytest.mark.usefixtures("prefect_harness")

STATUSES = {"fitted", "dropped early", "failed"}


@pytest.fixture(scope="module")
def seven_components(tmp_path_factory):
    """A work directory whose training data has 7 full-covariance components (4-D) and 0.5% anomalies."""
    rng = np.random.default_rng(11)
    truth = make_true_mixture(7, 4, "full", rng)
    probe, _, _ = sample_rows(truth, 20_000, 0.0, 0.0, rng)
    cutoff = float(np.quantile(truth.log_density(probe), 0.001))
    X, _, _ = sample_rows(truth, 24_000, 0.005, cutoff, rng)
    root = tmp_path_factory.mktemp("select")
    (root / "data").mkdir()
    write_zarr(root / "data" / "train.zarr", X.astype(np.float32), chunk_rows=4000)
    return root


def _config(root, **kw):
    grid = GridConfig(n_components=[2, 3, 4], covariance_types=["full", "diag"], max_n_components=6)
    return SelectConfig(workdir=root, grid=grid, anomaly=AnomalyConfig(contamination=0.005), **kw)


def test_the_flow_extends_the_range_warns_at_the_cap_and_writes_the_summary(seven_components, dask_cluster):
    from flows.select_flow import select_model_flow

    out = select_model_flow(_config(seven_components, cluster=ClusterConfig(address=dask_cluster)))
    winner = out["selected"]
    assert (winner["n_components"], winner["covariance_type"]) == (6, "full")
    summary = json.loads(Path(out["summary"]).read_text())
    assert Path(out["summary"]).parent == Path(out["report_dir"])
    # the cap stopped the range: said in the summary, the report and the result
    assert summary["k_range"]["stopped_by"] == "cap" == out["k_range"]["stopped_by"]
    assert summary["warning"] and "grid.max_n_components=6" in summary["warning"]
    md = Path(out["report"]["markdown"]).read_text()
    assert "**Warning:**" in md and "grid.max_n_components=6" in md
    # only the leading type's range extends, up to the cap (and down to K - patience from whichever K
    # led at a judgement: the leaders along the way depend on the passes)
    tried = summary["k_range"]["tried"]
    assert tried["diag"] == [2, 3, 4] and tried["full"][-1] == 6 and set(range(2, 7)) <= set(tried["full"])
    # the candidates table: every candidate, its criteria, iterations, status and why
    cands = summary["candidates"]
    assert len(cands) == len(out["table"]) == sum(len(ks) for ks in tried.values())
    assert {c["status"] for c in cands} <= STATUSES and all(c["why"] for c in cands)
    fitted = [c for c in cands if c["status"] == "fitted"]
    assert fitted and all(c["bic"] is not None and c["heldout_loglik"] is not None and c["iterations"] >= 1
                          for c in fitted)
    best = min(fitted, key=lambda c: c["bic"])
    assert (best["n_components"], best["covariance_type"]) == (6, "full") == (
        summary["selected"]["n_components"], summary["selected"]["covariance_type"])
    assert summary["passes"] == out["passes"] > 0 and summary["seconds"] > 0
    # the winner is registered as the current model
    loaded = ModelRegistry(seven_components / "models").load()
    assert summary["registered"] == out["registered"]["version"] == loaded.version
    assert loaded.model.n_components == 6 and loaded.model.covariance_type == "full"


def test_out_of_core_joint_passes_on_the_cluster_choose_the_same(seven_components, dask_cluster):
    from flows.select_flow import select_model_flow

    cluster = ClusterConfig(address=dask_cluster)
    local = select_model_flow(_config(seven_components, cluster=cluster, make_current=False))
    remote = select_model_flow(_config(seven_components, cluster=cluster, make_current=False, local_max_bytes=0))
    key = lambda r: (r["n_components"], r["covariance_type"], r["status"])  # noqa: E731
    assert [key(r) for r in remote["table"]] == [key(r) for r in local["table"]]
    for a, b in zip(local["table"], remote["table"]):
        if a["status"] == "ok":  # NumPy blocks and Dask chunks: the same fit to rounding
            assert math.isclose(a["bic"], b["bic"], rel_tol=1e-9)
    assert remote["passes"] == local["passes"]
    assert GaussianMixture.load(remote["selected"]["model_dir"]).n_components == local["selected"]["n_components"]


def test_a_cap_below_the_grid_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"max_n_components \(16\) is below the grid's largest n_components "
                                          r"\(20\): raise max_n_components to at least 20"):
        parse_config(SelectConfig, {"grid": {"n_components": [2, 20]}})
    with pytest.raises(ConfigError, match="grid.patience"):
        parse_config(SelectConfig, {"grid": {"patience": 0}})
    cfg = parse_config(SelectConfig, {"grid": {"n_components": [2, 20], "max_n_components": 24}})
    assert cfg.grid.max_n_components == 24 and cfg.drop_early


def test_variational_selection_finds_the_true_k_and_registers_its_mixture(seven_components):
    """method: variational - one Dirichlet-process mixture of 12; its used components are the selection."""
    from flows.select_flow import select_model_flow
    from gmm_engine import BayesianGaussianMixture

    out = select_model_flow(_config(seven_components, method="variational"))
    assert out["method"] == "variational"
    assert (out["selected"]["n_components"], out["selected"]["covariance_type"]) == (7, "full")
    v = out["variational"]
    assert v["fitted_n_components"] == 12 and len(v["weights"]) == 12
    assert sum(w > v["weight_floor"] for w in v["weights"]) == 7 and v["warning"] is None
    assert v["weights"] == sorted(v["weights"], reverse=True) and math.isclose(sum(v["weights"]), 1.0)
    reg = ModelRegistry(seven_components / "models")
    current = reg.load()
    assert isinstance(current.model, BayesianGaussianMixture) and current.version == out["registered"]["version"]
    assert current.model.effective_n_components() == 7
    summary = json.loads(Path(out["summary"]).read_text())
    assert summary["method"] == "variational" and summary["selected"]["n_components"] == 7
    assert Path(out["report"]["weights_plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = Path(out["report"]["markdown"]).read_text()
    assert "uses **7**" in md and md.count("| yes |") == 7


def test_variational_selection_warns_when_every_component_is_used(seven_components, tmp_path):
    from pipeline.variational_selection import VariationalSettings, fit_variational

    data = str(seven_components / "data" / "train.zarr")
    res = fit_variational(data, data, VariationalSettings(n_components=3, max_iter=200), {"random_state": 0},
                          tmp_path)
    assert res.n_components == 3 and "raise variational.n_components" in res.warning


def test_the_variational_section_is_validated():
    with pytest.raises(ConfigError, match="n_components"):
        parse_config(SelectConfig, {"method": "variational", "variational": {"n_components": 1}})
    with pytest.raises(ConfigError, match="method"):
        parse_config(SelectConfig, {"method": "bayes"})
