"""The two-sided KS distribution of :mod:`pipeline.kolmogorov` against ``scipy.stats.kstwo``."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from pipeline.kolmogorov import two_sided_sf

SIZES = [1, 2, 3, 7, 20, 64, 139, 140, 141, 198, 1024, 5000, 19_999, 100_000, 100_001]


def _statistics(n, rng):
    """Values over the whole support, most where the p-value is neither 0 nor 1, and every region's edges.

    Fewer for large n: there scipy's one-sided ``smirnov`` (both sides use it) costs ~25 ms a value.
    """
    borders = [0.5 / n, 1.0 / n, (n - 1.0) / n, 0.5]
    borders += [np.sqrt(c / n) for c in (0.754693, 2.2, 4.0, 18.0, 370.0)]  # n d^2 at the methods' borders
    borders += [(1.4 / n) ** (2 / 3)]  # n d^{3/2} = 1.4
    # each border and the floats on either side of it: rounding puts the border itself on one unknown side
    edges = [x for b in borders for x in (np.nextafter(b, 0.0), b, np.nextafter(b, 1.0))] + [1.5 / n]
    many = 120 if n <= 20_000 else 12
    d = np.concatenate([rng.uniform(0.0, 1.0, many // 2), rng.uniform(0.0, 4.0 / np.sqrt(n), many), edges])
    return d[(d > 0) & (d < 1)]


@pytest.mark.parametrize("n", SIZES)
def test_equals_scipy_kstwo_sf(n):
    """scipy's value to 1e-12 relative wherever both compute the same thing.

    The exception, 1e-10: n <= 140 with 0.754693 < n d^2 <= 4, where scipy
    uses Pomeranz's recursion and this module the Durbin matrix (both exact);
    there the survival function is 1 - CDF with the CDF near 1 (down to
    ~7e-4 below it), so the two CDFs' roundings differ by up to ~2e-11 of
    the result (the largest seen over these values and a review's).
    """
    rng = np.random.default_rng(n)
    for d in _statistics(n, rng):
        ours, scipy_value = two_sided_sf(n, d), float(stats.kstwo.sf(d, n))
        rel = 1e-10 if n <= 140 and 0.754693 < n * d * d <= 4 else 1e-12
        assert ours == pytest.approx(scipy_value, rel=rel, abs=1e-300), (n, d)
        assert 0.0 <= ours <= 1.0


def test_the_ends_of_the_support():
    assert two_sided_sf(10, 0.0) == 1.0 and two_sided_sf(10, -0.5) == 1.0
    assert two_sided_sf(10, 1.0) == 0.0 and two_sided_sf(10, 3.0) == 0.0
    assert two_sided_sf(10, 0.04) == 1.0  # n d <= 1/2: D_n is never that small
    assert two_sided_sf(10, 0.95) == pytest.approx(2 * 0.05 ** 10, rel=1e-14)  # Ruben-Gambino, exact
    assert two_sided_sf(5000, 0.3) == 0.0  # n d^2 >= 370
    assert np.isnan(two_sided_sf(10, float("nan")))


def test_a_size_that_is_not_a_positive_integer_is_refused():
    for n in (0, -3, 2.5, float("nan"), float("inf"), "ten", None):
        with pytest.raises(ValueError, match="the sample size must be a positive integer"):
            two_sided_sf(n, 0.1)


def test_monotone_in_the_statistic():
    for n in (30, 500, 5000):
        d = np.linspace(0.0, 1.0, 1001) ** 2  # denser where the p-value moves
        sf = np.array([two_sided_sf(n, x) for x in d])
        assert np.all(np.diff(sf) <= 1e-15)


def test_the_drift_tests_do_not_import_scipy_stats():
    """Every `gmm score` process computed one KS p-value with scipy.stats, ~0.6-1 s of import; no longer."""
    code = (
        "import sys, numpy as np\n"
        "from pipeline.drift import DriftPolicy, DriftReference, PartitionCounts, assess\n"
        "rng = np.random.default_rng(0)\n"
        "ref = DriftReference(0.01, 0.0, 1.0, np.array([0.5, 0.5]), rng.normal(size=2000))\n"
        "ll = rng.normal(0.2, 1.0, size=5000)\n"
        "c = PartitionCounts.from_chunk(ll, rng.integers(0, 2, 5000), ll < -2.3, ref)\n"
        "drift, _ = assess(c, ref, DriftPolicy())\n"
        "assert {t.name for t in drift.tests} >= {'loglik_ks'}, drift.tests\n"
        "print('scipy.stats' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
