"""Drift tests of scored partitions: exactness against scipy, chunking, false alarms, power."""

import math

import numpy as np
import pytest
from scipy import stats

from gmm_engine import COVARIANCE_TYPES, GaussianMixture
from gmm_engine.scoring import score_rows
from pipeline.demo_data import make_true_mixture, sample_rows
from pipeline.drift import (
    Cusum,
    DriftPolicy,
    DriftReference,
    PartitionCounts,
    assess,
    holm,
    ks_statistic,
)


def _reference(sample, occupancy=(0.5, 0.5), rate=0.01, mean=0.0, std=1.0):
    return DriftReference(rate, mean, std, np.asarray(occupancy), sample)


def _counts(ref, ll, comp=None, flags=None, pieces=1):
    comp = np.zeros(len(ll), dtype=int) if comp is None else comp
    flags = np.zeros(len(ll), dtype=bool) if flags is None else flags
    parts = np.array_split(np.arange(len(ll)), pieces)
    out = PartitionCounts.zeros(ref)
    for idx in parts:
        out = out.merge(PartitionCounts.from_chunk(ll[idx], comp[idx], flags[idx], ref))
    return out


@pytest.mark.parametrize("rounding", [None, 1])
def test_ks_statistic_and_p_value_equal_scipy(rounding):
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.05, 0.3):
        sample = rng.normal(size=1200)
        part = rng.normal(shift, 1.1, size=7000)
        if rounding is not None:  # ties within and across the two samples
            sample, part = sample.round(rounding), part.round(rounding)
        ref = _reference(sample)
        c = _counts(ref, part, pieces=7)
        expected = stats.ks_2samp(part, sample, method="asymp")
        assert ks_statistic(c, ref) == pytest.approx(expected.statistic, abs=1e-15)
        drift, _ = assess(c, ref, DriftPolicy())
        ks = {t.name: t for t in drift.tests}["loglik_ks"]
        assert ks.p_value == pytest.approx(expected.pvalue, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("decimals", [1, None], ids=["crowded buckets", "buckets of a few values"])
def test_sample_bins_are_the_rows_placed_in_the_reference_sample(decimals):
    # rounded: ties within the sample and with the rows, buckets of many values (the binary search);
    # continuous: most buckets hold at most drift_bins.FEW values (the comparisons without a branch)
    rng = np.random.default_rng(4)
    sample = rng.normal(size=300)
    rows = rng.normal(size=5000)
    if decimals is not None:
        sample, rows = sample.round(decimals), rows.round(decimals)
    sample = np.sort(sample)
    ll = np.concatenate([rows, sample[::7], [-np.inf, np.nan, sample[0], sample[-1], 9.0]])
    c = PartitionCounts.from_chunk(ll, np.zeros(ll.size, int), np.zeros(ll.size, bool), _reference(sample))
    np.testing.assert_array_equal(c.hist_right, np.bincount(np.searchsorted(sample, ll, "right"), minlength=301))
    np.testing.assert_array_equal(c.hist_left, np.bincount(np.searchsorted(sample, ll, "left"), minlength=301))


def test_a_chunk_of_several_blocks_read_in_place_is_counted_exactly():
    # the scoring pass hands the counts strided float columns of its rows, and chunks far larger
    # than the blocks the placement works in: every count equals numpy's on the same rows
    from pipeline.drift_bins import BLOCK

    rng = np.random.default_rng(7)
    sample = np.sort(rng.normal(size=2000).round(2))  # ties within the sample and with the rows
    n = 2 * BLOCK + 123
    rows = np.empty((n, 3))
    rows[:, 0] = rng.normal(size=n).round(3)
    rows[:, 1] = rng.integers(0, 3, size=n)
    rows[:5, 0] = [-np.inf, np.nan, sample[0], sample[-1], 50.0]
    ll, comp = rows[:, 0], rows[:, 1]
    assert not ll.flags.c_contiguous
    ref = _reference(sample, occupancy=(0.2, 0.3, 0.5))
    c = PartitionCounts.from_chunk(ll, comp, ll < -1, ref)
    assert (c.n_rows, c.n_flagged) == (n, int(np.count_nonzero(ll < -1)))
    np.testing.assert_array_equal(c.occupancy, np.bincount(comp.astype(int), minlength=3))
    np.testing.assert_array_equal(c.hist_right, np.bincount(np.searchsorted(sample, ll, "right"), minlength=2001))
    np.testing.assert_array_equal(c.hist_left, np.bincount(np.searchsorted(sample, ll, "left"), minlength=2001))
    assert math.isnan(c.loglik_sum)  # a NaN row's sum, as ll.sum() gives it
    finite = PartitionCounts.from_chunk(ll[5:], comp[5:], ll[5:] < -1, ref)
    assert finite.loglik_sum == pytest.approx(ll[5:].sum(), rel=1e-12)


def test_counts_do_not_depend_on_chunking():
    rng = np.random.default_rng(1)
    ref = _reference(rng.normal(size=500), occupancy=(0.2, 0.3, 0.5))
    ll = rng.normal(size=4000)
    comp = rng.integers(0, 3, size=4000)
    flags = ll < -2
    a, b = _counts(ref, ll, comp, flags, pieces=1), _counts(ref, ll, comp, flags, pieces=13)
    assert (a.n_rows, a.n_flagged) == (b.n_rows, b.n_flagged)
    np.testing.assert_array_equal(a.occupancy, b.occupancy)
    np.testing.assert_array_equal(a.hist_left, b.hist_left)
    np.testing.assert_array_equal(a.hist_right, b.hist_right)
    assert a.loglik_sum == pytest.approx(b.loglik_sum, rel=1e-13)


def test_rate_and_occupancy_tests_equal_scipy():
    rng = np.random.default_rng(2)
    ref = _reference(rng.normal(size=300), occupancy=(0.2, 0.3, 0.5), rate=0.02)
    n = 5000
    comp = rng.choice(3, size=n, p=[0.25, 0.3, 0.45])
    flags = rng.random(n) < 0.03
    c = _counts(ref, rng.normal(size=n), comp, flags, pieces=3)
    drift, _ = assess(c, ref, DriftPolicy())
    by = {t.name: t for t in drift.tests}
    assert by["anomaly_rate"].p_value == pytest.approx(stats.binomtest(int(flags.sum()), n, 0.02).pvalue)
    g = stats.power_divergence(np.bincount(comp, minlength=3), np.array([0.2, 0.3, 0.5]) * n,
                               lambda_="log-likelihood")
    assert by["occupancy_g"].statistic == pytest.approx(g.statistic)
    assert by["occupancy_g"].p_value == pytest.approx(g.pvalue)
    tv = 0.5 * np.abs(np.bincount(comp, minlength=3) / n - np.array([0.2, 0.3, 0.5])).sum()
    assert by["occupancy_g"].effect == pytest.approx(tv)


def test_a_component_the_training_never_chose_is_drift():
    rng = np.random.default_rng(3)
    ref = _reference(rng.normal(size=300), occupancy=(0.0, 1.0))
    comp = np.r_[np.ones(990, int), np.zeros(10, int)]
    drift, _ = assess(_counts(ref, rng.normal(size=1000), comp), ref, DriftPolicy())
    occ = {t.name: t for t in drift.tests}["occupancy_g"]
    assert occ.p_value == 0.0 and occ.significant and drift.drifted


def test_holm_adjustment():
    # step-down: sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_a_significant_but_negligible_shift_is_not_drift():
    """A huge partition makes a tiny shift significant; the effect size keeps it from counting."""
    rng = np.random.default_rng(4)
    sample = rng.normal(size=200_000)
    ref = _reference(sample, occupancy=(1.0,), rate=0.01)
    ll = rng.normal(0.03, 1.0, size=2_000_000)
    flags = ll <= np.quantile(sample, 0.01)
    drift, _ = assess(_counts(ref, ll, flags=flags), ref, DriftPolicy())
    ks = {t.name: t for t in drift.tests}["loglik_ks"]
    assert ks.p_adjusted < 0.01 and ks.effect < DriftPolicy().min_ks
    assert not ks.significant and not drift.drifted


def test_cusum_accumulates_a_slow_decline_and_resets_when_in_control():
    ref = _reference(np.linspace(-3, 3, 101), mean=-5.0, std=2.0)
    policy = DriftPolicy(cusum_k=0.5, cusum_h=5.0)
    state = Cusum()
    n = 10_000
    se = 2.0 / math.sqrt(n)
    stats_seen = []
    for z in [0.0] * 5 + [-1.5] * 10:  # in control, then 1.5 standard errors down every partition
        ll = np.full(n, -5.0 + z * se)
        state, seq = state.step(n, float(ll.mean()), ref, policy)
        stats_seen.append(seq["statistic"])
    assert stats_seen[:5] == [0.0] * 5
    # each drifting partition adds 1.5 - 0.5 = 1 standard error: past h = 5 from the sixth
    assert stats_seen[5:] == pytest.approx([1.0 * i for i in range(1, 11)])
    assert not any(s > 5.0 for s in stats_seen[5:9]) and all(s > 5.0 for s in stats_seen[10:])
    assert seq["p_value"] == pytest.approx(math.exp(-2 * 0.5 * 10.0))


def test_reference_from_training_sums():
    rng = np.random.default_rng(5)
    ll = rng.normal(-7.0, 1.7, size=10_000)
    ref = DriftReference.from_training(
        n_rows=ll.size, n_flagged=int((ll < -11).sum()), loglik_sum=ll.sum(),
        loglik_sumsq=(ll**2).sum(), component_counts=[3, 1], score_sample=ll[:1000])
    assert ref.loglik_mean == pytest.approx(ll.mean())
    assert ref.loglik_std == pytest.approx(ll.std(ddof=1), rel=1e-9)
    np.testing.assert_allclose(ref.occupancy, [0.75, 0.25])
    assert np.all(np.diff(ref.score_sample) >= 0)
    with pytest.raises(ValueError, match="non-empty 1-D sample of finite training scores"):
        DriftReference(0.01, 0.0, 1.0, np.array([1.0]), np.array([np.nan]))
    with pytest.raises(ValueError, match="no rows"):
        assess(PartitionCounts.zeros(ref), ref, DriftPolicy())


# ---------------------------------------------------------------------------
# End to end on fitted models: calibration of the false-alarm rate and power.

N_TRAIN, N_PART, N_STREAM = 60_000, 5_000, 100


def _model_and_reference(ct, seed):
    rng = np.random.default_rng(seed)
    truth = make_true_mixture(3, 4, ct, rng)
    X, _, _ = sample_rows(truth, N_TRAIN, 1e-9, -np.inf, rng)
    gm = GaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
    ll, comp, _ = score_rows(gm, X)
    threshold = float(np.quantile(ll, 0.01))
    sample = rng.choice(ll, size=10_000, replace=False)
    ref = DriftReference.from_training(
        n_rows=ll.size, n_flagged=int((ll <= threshold).sum()), loglik_sum=float(ll.sum()),
        loglik_sumsq=float((ll**2).sum()), component_counts=np.bincount(comp, minlength=3),
        score_sample=sample)
    return truth, gm, ref, threshold, rng


def _assess_rows(gm, ref, threshold, X, cusum=Cusum(), policy=DriftPolicy()):
    ll, comp, _ = score_rows(gm, X)
    return assess(PartitionCounts.from_chunk(ll, comp, ll <= threshold, ref), ref, policy, cusum)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_stationary_stream_false_alarms_within_the_configured_rate(ct):
    """100 partitions from the training distribution, alpha = 0.01 per partition.

    Expected false alarms <= 1 (Holm bounds the family-wise rate by alpha); the
    test allows 4, which a correctly calibrated detector exceeds with probability
    P(Binomial(100, 0.01) >= 5) = 0.34%; the seed makes the run deterministic.
    The CUSUM's in-control run length (~930 partitions) makes an alarm in 100 a
    ~10% event; at most one is allowed.
    """
    truth, gm, ref, threshold, rng = _model_and_reference(ct, seed=10)
    cusum, drifted, alarms = Cusum(), 0, 0
    for _ in range(N_STREAM):
        X, _, _ = sample_rows(truth, N_PART, 1e-9, -np.inf, rng)
        d, cusum = _assess_rows(gm, ref, threshold, X, cusum)
        drifted += d.drifted
        alarms += d.sequential_alarm
    assert drifted <= 4, f"{drifted} false alarms in {N_STREAM} stationary partitions"
    assert alarms <= 1


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_a_component_moved_by_one_standard_deviation_is_detected(ct):
    truth, gm, ref, threshold, rng = _model_and_reference(ct, seed=11)
    X, comp, _ = sample_rows(truth, 50_000, 1e-9, -np.inf, rng)
    quiet, _ = _assess_rows(gm, ref, threshold, X)
    moved = X.copy()
    sd = math.sqrt(truth.covariances[0][0, 0])
    moved[comp == 0, 0] += sd
    loud, _ = _assess_rows(gm, ref, threshold, moved)
    assert not quiet.drifted
    assert loud.drifted, loud.to_dict()


def test_the_binomial_p_value_is_scipys():
    from pipeline.drift import binomial_p_value

    rng = np.random.default_rng(7)
    cases = [(0, 200, 0.01), (2, 200, 0.01), (3, 200, 0.01), (30, 200, 0.01), (200, 200, 0.01), (5, 10, 0.5),
             (1, 1, 0.3), (0, 1, 0.3)]
    cases += [(int(rng.integers(0, n + 1)), n, float(q))
              for n, q in zip(rng.integers(1, 5000, 200), rng.uniform(1e-4, 0.5, 200))]
    for k, n, q in cases:
        assert binomial_p_value(k, n, q) == pytest.approx(stats.binomtest(k, n, q).pvalue, rel=1e-9, abs=1e-300), (k, n, q)


def test_the_occupancy_g_test_is_scipys_power_divergence():
    from pipeline.drift import _occupancy_test

    rng = np.random.default_rng(3)
    for _ in range(50):
        k = int(rng.integers(2, 9))
        occ = rng.dirichlet(np.ones(k))
        observed = rng.multinomial(int(rng.integers(50, 5000)), rng.dirichlet(np.ones(k) * 5))
        ref = DriftReference(0.01, -3.0, 1.0, occ, np.linspace(-6, 0, 100))
        counts = PartitionCounts(n_rows=int(observed.sum()), n_flagged=0, loglik_sum=0.0, occupancy=observed,
                                 hist_right=np.zeros(101), hist_left=np.zeros(101))
        _, g, p, _, _ = _occupancy_test(counts, ref, DriftPolicy())
        want = stats.power_divergence(observed.astype(float), occ * observed.sum(), lambda_="log-likelihood")
        assert (g, p) == pytest.approx((want.statistic, want.pvalue), rel=1e-9, abs=1e-300)
