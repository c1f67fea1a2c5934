"""The distribution of the two-sided Kolmogorov-Smirnov statistic ``D_n``, without ``scipy.stats``.

:func:`two_sided_sf` is ``P(D_n > d)``: the value of
``scipy.stats.kstwo.sf(d, n)``, from the same methods in the same regions
of ``(n, d)`` (Simard & L'Ecuyer, "Computing the two-sided
Kolmogorov-Smirnov distribution", J. Stat. Softw. 39(11), 2011), so the
drift test's p-value (:func:`pipeline.drift.assess`) is scipy's.  Why not
scipy's own: importing ``scipy.stats`` costs ~0.6-1 s, which every
``gmm score`` process paid for one number per partition; ``scipy.special``
(the one-sided ``smirnov`` and the functions of the other drift tests) is
loaded anyway and costs a third of that.

Methods, by region (``t = n d``):

* exact at the ends: ``t <= 1/2`` (``P = 1``), ``t <= 1`` (Ruben-Gambino:
  ``P(D_n <= d) = n! / n^n (2t - 1)^n``), ``t >= n - 1``
  (``P = 2 (1 - d)^n``), ``d >= 1/2`` (``2 P(D_n^+ > d)``, exact there);
* ``n <= 140``: the Durbin matrix (Marsaglia, Tsang & Wang 2003) up to
  ``n d^2 = 4`` (Simard & L'Ecuyer use Pomeranz's recursion above
  ``0.754693``; both are exact and the matrix is small there: the values
  agree to ~2e-11 relative, the rounding of ``1 - CDF`` near 1), then
  ``2 P(D_n^+ > d)`` (Miller's approximation);
* ``n > 140``: ``0`` from ``n d^2 >= 370``; ``2 P(D_n^+ > d)`` from
  ``n d^2 >= 2.2``; below, the Durbin matrix while ``n <= 10^5`` and
  ``n d^{3/2} <= 1.4``, else Pelz & Good's (1976) asymptotic series.
"""

from __future__ import annotations

import math

import numpy as np

#: powers of two the Durbin matrix is rescaled by, exactly, to stay inside float64's range
_SCALE_EXP = 128
_BIG = 2.0 ** _SCALE_EXP


def two_sided_sf(n: int, d: float) -> float:
    """``P(D_n > d)`` for the two-sided one-sample KS statistic of ``n`` rows; ``scipy.stats.kstwo.sf(d, n)``.

    Parameters
    ----------
    n : int
        The sample size, >= 1 (for two samples: the effective size
        ``round(n1 n2 / (n1 + n2))``, as ``scipy.stats.ks_2samp``'s
        asymptotic method uses).
    d : float
        The statistic.

    Returns
    -------
    float in [0, 1]
    """
    try:
        whole = float(n).is_integer() and n >= 1  # False for NaN and infinities, which int() would refuse
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise ValueError(f"the sample size must be a positive integer, got {n!r}")
    n = int(n)
    d = float(d)
    if math.isnan(d):
        return math.nan
    if d >= 1.0:
        return 0.0
    if d <= 0.0:
        return 1.0
    t = n * d
    if t <= 1.0:
        if t <= 0.5:
            return 1.0
        return _clip(1.0 - math.exp(_log_factorial_over_power(n) + n * math.log(2.0 * t - 1.0)))
    if t >= n - 1:
        return _clip(2.0 * (1.0 - d) ** n)
    if d >= 0.5:
        return _clip(2.0 * _smirnov(n, d))
    nd2 = t * d
    if n <= 140:
        if nd2 <= 4.0:
            return _clip(1.0 - _durbin_cdf(n, d))
        return _clip(2.0 * _smirnov(n, d))
    if nd2 >= 370.0:
        return 0.0
    if nd2 >= 2.2:
        return _clip(2.0 * _smirnov(n, d))
    if n <= 100_000 and n * d ** 1.5 <= 1.4:
        return _clip(1.0 - _durbin_cdf(n, d))
    return _clip(_pelz_good_sf(n, d))


def _clip(p: float) -> float:
    """``p`` clipped to [0, 1], as scipy clips every value it returns."""
    return min(max(p, 0.0), 1.0)


def _smirnov(n: int, d: float) -> float:
    """``P(D_n^+ > d)``, the one-sided statistic's exact survival function (scipy.special's)."""
    from scipy import special

    return float(special.smirnov(n, d))


#: B_2j / (2j (2j - 1)) for j = 8, ..., 1: Stirling's series for log Gamma
_STIRLING = (-2.955065359477124183e-2, 6.4102564102564102564e-3, -1.9175269175269175269e-3,
             8.4175084175084175084e-4, -5.952380952380952381e-4, 7.9365079365079365079e-4,
             -2.7777777777777777778e-3, 8.3333333333333333333e-2)


def _log_factorial_over_power(n: int) -> float:
    """``log(n! / n^n)``; for n > 140 by Stirling's series with ``n log n`` taken out first (no cancellation)."""
    if n <= 140:
        return float(np.sum(np.log(np.arange(1, n + 1) / n)))
    r = 1.0 / n
    series = 0.0
    for c in _STIRLING:  # a polynomial in 1/n^2, Horner's scheme
        series = series * (r * r) + c
    return 0.5 * math.log(n) - n + 0.5 * math.log(2.0 * math.pi) + r * series


def _durbin_cdf(n: int, d: float) -> float:
    """``P(D_n <= d)`` by the Durbin matrix: ``n!/n^n`` times the central entry of ``H^n`` (exact).

    With ``n d = k - h`` (k an integer, 0 <= h < 1), ``H`` is the
    ``(2k - 1)``-square matrix of Marsaglia, Tsang & Wang (2003).  Its
    entries are non-negative, so the power by squaring loses only rounding;
    the powers are rescaled by powers of two (exact) to stay in range.
    """
    nd = n * d
    k = int(math.ceil(nd))
    h = k - nd
    m = 2 * k - 1
    j = np.arange(1, m + 1)
    inv_fact = np.empty(m + 1)  # 1 / i!, i = 0..m
    inv_fact[0] = 1.0
    inv_fact[1:] = 1.0 / np.cumprod(j.astype(np.float64))
    rows = np.arange(m)[:, None]
    cols = np.arange(m)[None, :]
    lag = rows - cols + 1  # H[r, c] = 1 / (r - c + 1)! where r - c + 1 >= 0
    H = np.where(lag >= 0, inv_fact[np.clip(lag, 0, m)], 0.0)
    edge = (1.0 - h ** j) * inv_fact[1:]  # (1 - h^i) / i!, i = 1..m
    H[:, 0] = edge
    H[m - 1, :] = edge[::-1]
    H[m - 1, 0] = (1.0 - 2.0 * h ** m + max(0.0, 2.0 * h - 1.0) ** m) * inv_fact[m]

    power, power_exp = np.eye(m), 0
    base, base_exp = H, 0
    e = n
    while e:
        if e & 1:
            power = power @ base
            power_exp += base_exp
            if power[k - 1, k - 1] > _BIG:
                power /= _BIG
                power_exp += _SCALE_EXP
        e >>= 1
        if e:
            base = base @ base
            base_exp *= 2
            if base[k - 1, k - 1] > _BIG:
                base /= _BIG
                base_exp += _SCALE_EXP
    p = float(power[k - 1, k - 1])
    # times n!/n^n, factor by factor in blocks (each factor >= 1/n), rescaled exactly after each block
    factors = np.arange(1, n + 1) / n
    for start in range(0, n, 32):
        p *= float(np.prod(factors[start:start + 32]))
        p, e2 = math.frexp(p)
        power_exp += e2
    return math.ldexp(p, power_exp)


def _pelz_good_sf(n: int, d: float) -> float:
    """``P(D_n > d)`` by Pelz & Good's series ``1 - K0 - K1/sqrt(n) - K2/n - K3/n^{3/2}`` at ``z = d sqrt(n)``."""
    z = math.sqrt(n) * d
    z2 = z * z
    if -math.pi ** 2 / 8.0 / z2 < -708.0:  # every term underflows: P(D_n <= d) = 0
        return 1.0
    pi2, pi4, pi6 = math.pi ** 2, math.pi ** 4, math.pi ** 6
    kmax = int(math.ceil(16.0 * z / math.pi))
    k = np.arange(kmax, 0, -1, dtype=np.float64)  # smallest terms first
    odd = 2.0 * k - 1.0
    o2 = odd * odd
    q_odd = np.exp(-pi2 * o2 / (8.0 * z2))  # exp(-(2k-1)^2 pi^2 / (8 z^2))
    root = math.sqrt(2.0 * math.pi)
    K0 = root / z * float(np.sum(q_odd))
    K1 = root / (6.0 * z2 * z2) * float(np.sum((pi2 * o2 / 4.0 - z2) * q_odd))
    K2 = root / (72.0 * z ** 7) * float(np.sum(
        (6.0 * z ** 6 + 2.0 * z ** 4 + (2.0 * z ** 4 - 5.0 * z2) * pi2 * o2 / 4.0
         + pi4 * (1.0 - 2.0 * z2) * o2 * o2 / 16.0) * q_odd))
    K3 = root / (6480.0 * z ** 10) * float(np.sum(
        (-30.0 * z ** 6 - 90.0 * z ** 8 + pi2 * (135.0 * z ** 4 - 96.0 * z ** 6) * o2 / 4.0
         + pi4 * (-60.0 * z2 + 212.0 * z ** 4) * o2 * o2 / 16.0 + pi6 * (5.0 - 30.0 * z2) * o2 ** 3 / 64.0) * q_odd))
    k2 = k * k
    q_all = np.exp(-pi2 * k2 / (2.0 * z2))  # exp(-k^2 pi^2 / (2 z^2))
    K2 -= pi2 * root / (36.0 * z ** 3) * float(np.sum(k2 * q_all))
    K3 += pi2 * root / (216.0 * z ** 6) * float(np.sum((3.0 * z2 - pi2 * k2) * k2 * q_all))
    rn = math.sqrt(n)
    return (1.0 - K0) - K1 / rn - K2 / n - K3 / (n * rn)
