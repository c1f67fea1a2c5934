"""Anomaly threshold: an exact order statistic of the training scores, out of core."""

import math

import dask.array as da
import numpy as np
import pytest

from gmm_engine import GaussianMixture
from pipeline import threshold as thr_mod
from pipeline.threshold import calibrate_threshold


@pytest.fixture(scope="module")
def fitted(blobs):
    X, _ = blobs
    return GaussianMixture(3, random_state=0).fit(X), X


def exact(model, X, q):
    s = np.sort(model.score_samples(X))
    k = max(1, math.ceil(q * len(s)))
    return s[k - 1], int((s <= s[k - 1]).sum())


@pytest.mark.parametrize("q", [0.001, 0.01, 0.2])
def test_small_data_reads_the_quantile_directly(fitted, q):
    model, X = fitted
    t = calibrate_threshold(model, X, q)
    value, flagged = exact(model, X, q)
    assert t.threshold == value
    assert t.n_flagged == flagged == max(1, math.ceil(q * len(X)))
    assert t.passes == 1 and t.n_rows == len(X)


@pytest.mark.parametrize("q", [0.005, 0.01, 0.05])
def test_two_pass_bracket_is_exact_on_dask(fitted, q):
    model, X = fitted
    Xd = da.from_array(X, chunks=(1234, 3))
    t = calibrate_threshold(model, Xd, q, sample_size=600, random_state=3)
    value, flagged = exact(model, X, q)
    assert t.threshold == value
    assert t.n_flagged == flagged
    assert t.passes == 2
    assert 300 < len(t.sample) < 900  # the pass-1 sample, kept for plots


def test_a_missed_bracket_is_widened_and_still_exact(fitted, monkeypatch):
    model, X = fitted
    monkeypatch.setattr(thr_mod, "BRACKET_WIDTH", 0.0)
    Xd = da.from_array(X, chunks=(1000, 3))
    t = calibrate_threshold(model, Xd, 0.013, sample_size=50, random_state=1)
    value, _ = exact(model, X, 0.013)
    assert t.threshold == value
    assert t.passes >= 2


def test_flags_the_injected_anomalies(fitted, blobs):
    model, X = fitted
    _, truth = blobs
    t = calibrate_threshold(model, X, truth.mean())
    flagged = model.score_samples(X) <= t.threshold
    assert (flagged & truth).sum() / truth.sum() > 0.95


@pytest.mark.parametrize("q", [0, 0.5, -0.1, 1.0])
def test_contamination_out_of_range(fitted, q):
    model, X = fitted
    with pytest.raises(ValueError, match=r"contamination must be in \(0, 0.5\)"):
        calibrate_threshold(model, X, q)


def test_to_dict_is_json_ready(fitted):
    import json

    model, X = fitted
    d = calibrate_threshold(model, X, 0.01).to_dict()
    assert "sample" not in d
    assert json.loads(json.dumps(d))["contamination"] == 0.01


@pytest.mark.parametrize("lazy", [False, True])
def test_the_first_pass_also_gives_the_drift_reference(fitted, lazy):
    """Mean and spread of the training scores over all rows, hard occupancy, a sorted sample: no extra pass."""
    model, X = fitted
    data = da.from_array(X, chunks=(1234, 3)) if lazy else X
    t = calibrate_threshold(model, data, 0.01, sample_size=2_000, random_state=1)
    scores, labels = model.score_samples(X), model.predict(X)
    ref = t.reference
    assert t.passes == 2  # the bracket pass; the reference came with the first
    assert ref.loglik_mean == pytest.approx(scores.mean(), rel=1e-12)
    assert ref.loglik_std == pytest.approx(scores.std(ddof=1), rel=1e-9)
    np.testing.assert_allclose(ref.occupancy, np.bincount(labels, minlength=3) / len(X), rtol=1e-12)
    assert ref.expected_rate == t.n_flagged / t.n_rows
    assert np.all(np.diff(ref.score_sample) >= 0) and 1_500 < ref.score_sample.size < 2_500
    assert np.isin(ref.score_sample, scores).all()
