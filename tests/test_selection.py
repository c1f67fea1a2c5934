"""Model selection: sampling, contamination trimming, candidates, choice."""

import math
import warnings

import numpy as np
import pytest

from conftest import write_zarr
from gmm_engine import ConvergenceWarning, GaussianMixture
from gmm_engine import open_zarr_array
from pipeline.demo_data import make_true_mixture, sample_rows
from pipeline.selection import choose, evaluate_candidate, prepare_selection_data

BASE = dict(max_iter=100, random_state=0)


@pytest.fixture(scope="module")
def contaminated(tmp_path_factory):
    """3 full-covariance components in 4-D with 1% injected anomalies."""
    rng = np.random.default_rng(7)
    truth = make_true_mixture(3, 4, "full", rng)
    probe, _, _ = sample_rows(truth, 50_000, 0.0, 0.0, rng)
    cutoff = float(np.quantile(truth.log_density(probe), 0.001))
    X, _, anom = sample_rows(truth, 24_000, 0.01, cutoff, rng)
    path = write_zarr(tmp_path_factory.mktemp("sel") / "data.zarr", X.astype(np.float32),
                      chunk_rows=3000)
    return path, anom


def _grid(train, holdout, out):
    rows = []
    for ct in ("full", "diag"):
        for k in (2, 3, 4):
            rows.append(evaluate_candidate(train, holdout, k, ct, BASE, out))
    return rows


def test_sample_split_sizes_and_disjointness(tmp_path, contaminated):
    path, _ = contaminated
    sd = prepare_selection_data(path, tmp_path, holdout_fraction=0.2, sample_rows=8000, trim=False, seed=1)
    assert sd.n_trimmed_train == sd.n_trimmed_holdout == 0
    assert 7000 < sd.n_train < 9000 and 1500 < sd.n_holdout < 2600
    tr = open_zarr_array(sd.train)[:]
    ho = open_zarr_array(sd.holdout)[:]
    assert tr.shape == (sd.n_train, 4) and ho.shape == (sd.n_holdout, 4)
    rows = {r.tobytes() for r in tr}
    assert not any(r.tobytes() in rows for r in ho)
    assert open_zarr_array(sd.train).attrs["feature_names"] == ["f0", "f1", "f2", "f3"]


def test_trimming_removes_the_injected_anomalies_and_recovers_k(tmp_path, contaminated):
    path, anom = contaminated
    sd = prepare_selection_data(path, tmp_path, holdout_fraction=0.2, contamination=0.01, trim=True,
                                probe_params={**BASE, "n_components": 4, "covariance_type": "full"})
    removed = sd.n_trimmed_train + sd.n_trimmed_holdout
    assert abs(removed - 0.01 * 24_000) < 40
    assert sd.trim_threshold is not None
    rows = _grid(sd.train, sd.holdout, tmp_path / "cand")
    best = choose(rows, "bic")
    assert (best["n_components"], best["covariance_type"]) == (3, "full")
    assert choose(rows, "heldout")["covariance_type"] == "full"


def test_without_trimming_anomalies_earn_a_component(tmp_path, contaminated):
    # the reason trimming exists: plain BIC adds a broad background component
    path, _ = contaminated
    sd = prepare_selection_data(path, tmp_path, holdout_fraction=0.2, trim=False)
    best = choose(_grid(sd.train, sd.holdout, tmp_path / "cand"), "bic")
    assert best["n_components"] == 4


def test_candidate_row_contents(tmp_path, contaminated):
    path, _ = contaminated
    sd = prepare_selection_data(path, tmp_path, sample_rows=3000, trim=False)
    row = evaluate_candidate(sd.train, sd.holdout, 3, "diag", BASE, tmp_path / "c")
    gm = GaussianMixture.load(row["model_dir"])
    X = open_zarr_array(sd.train)
    n = X.shape[0]
    p = 3 * 4 + 3 * 4 + 2
    assert row["n_parameters"] == p
    assert math.isclose(row["bic"], gm.bic(X), rel_tol=1e-9)
    assert math.isclose(row["aic"], gm.aic(X), rel_tol=1e-9)
    assert math.isclose(row["heldout_loglik"], gm.score(open_zarr_array(sd.holdout)), rel_tol=1e-9)
    assert row["status"] == "ok" and row["n_iter"] == gm.n_iter_ and n == sd.n_train


def test_failed_candidates_are_reported_not_chosen(tmp_path):
    X = np.repeat(np.arange(4.0)[:, None], 50, axis=0) @ np.ones((1, 2))
    path = write_zarr(tmp_path / "dup.zarr", X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bad = evaluate_candidate(path, path, 3, "full", {**BASE, "reg_covar": 0.0}, tmp_path / "c")
        good = evaluate_candidate(path, path, 2, "spherical", {**BASE, "reg_covar": 1e-3}, tmp_path / "c")
    assert bad["status"] == "failed" and "reg_covar" in bad["error"]
    assert choose([bad, good], "aic") is good
    with pytest.raises(ValueError, match="Every candidate failed"):
        choose([bad], "bic")
    with pytest.raises(ValueError, match="criterion must be"):
        choose([good], "likelihood")
