"""EM convergence plot: the mean log-likelihood per iteration, and its change.

Two panels sharing the iteration axis: the lower bound itself
(``_draw_bounds``), and ``|change|`` on a log scale (``_draw_changes``).
A log axis cannot show 0, so exact zeros are drawn at a floor a decade
below the smallest positive change (or ``tol``) with their own marker;
decreases, which EM should not make beyond rounding, get theirs too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from . import style
from .checks import check_all_finite, check_path, finite_float, vector


def _draw_bounds(ax, its: np.ndarray, lb: np.ndarray, title) -> None:
    ax.plot(its, lb, color=style.OKABE_ITO[0], marker="o", ms=4, lw=1.5)
    ax.set_ylabel("mean log-likelihood\nper row (nats)")
    # the values themselves on the ticks: an offset ("-1.0263e1" above "-0.0003") has to be added up to read
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax.set_title(title or "EM convergence")
    ax.grid(True, alpha=0.3)
    ax.annotate(
        f"final: {lb[-1]:.6g} after {lb.size} iteration(s)", xy=(0.98, 0.05),
        xycoords="axes fraction", ha="right", va="bottom", fontsize="small",
    )


def _draw_changes(ax, its: np.ndarray, lb: np.ndarray, tol) -> None:
    change = np.diff(lb)
    mag = np.abs(change)
    d_its = its[1:]
    ax.set_yscale("log")
    ax.set_ylabel("|change| from previous\niteration (nats)")
    ax.set_xlabel("EM iteration")
    ax.grid(True, which="both", alpha=0.3)
    if change.size == 0:
        ax.text(
            0.5, 0.5, "a single iteration: no change to show", transform=ax.transAxes,
            ha="center", va="center", color=style.GREY,
        )
        ax.set_ylim(1e-6, 1.0)
        return
    positive = mag[mag > 0]
    floor_ref = [float(positive.min())] if positive.size else []
    if tol is not None:
        floor_ref.append(tol)
    floor = 0.1 * min(floor_ref) if floor_ref else 1e-16
    inc = change > 0
    dec = change < 0
    zero = change == 0
    blue, vermillion = style.OKABE_ITO[0], style.OKABE_ITO[3]
    ax.plot(d_its, np.where(zero, floor, mag), color=blue, lw=1.0, alpha=0.6)
    if inc.any():
        ax.plot(d_its[inc], mag[inc], ls="none", marker="o", ms=4, color=blue, label="increase")
    if dec.any():
        ax.plot(d_its[dec], mag[dec], ls="none", marker="v", ms=7, color=vermillion,
                label="decrease (rounding or a bug)")
    if zero.any():
        ax.plot(d_its[zero], np.full(int(zero.sum()), floor), ls="none", marker="x", ms=7,
                color=style.BLACK, label="exactly 0 (drawn at floor)")
    if tol is not None:
        ax.axhline(tol, color=style.OKABE_ITO[1], ls="--", lw=1.5,
                   label=f"tol = {tol:.3g} (converged when |change| < tol)")
    ax.legend(fontsize="small", loc="best")


def plot_loglik_trace(lower_bounds, path, *, tol=None, title=None) -> Path:
    """EM convergence: mean log-likelihood per iteration and its change.

    Parameters
    ----------
    lower_bounds : array-like of shape (n_iter,)
        ``GaussianMixture.lower_bounds_``: mean log-likelihood per row after
        each EM iteration, all finite.
    path : str or os.PathLike
        Destination ``.png``.
    tol : float, optional
        The fit's convergence tolerance (> 0); drawn as a horizontal line on
        the change panel (EM stops when ``|change| < tol``).
    title : str, optional
        Default ``"EM convergence"``.

    Returns
    -------
    pathlib.Path

    Notes
    -----
    The change panel is log-scaled and shows ``|change|``.  Decreases (which
    EM should not make beyond rounding) get their own marker; exact zeros
    cannot be drawn on a log axis and are placed on the panel's lower edge
    with a distinct marker.
    """
    path = check_path(path)
    lb = vector(lower_bounds, "lower_bounds")
    check_all_finite(
        lb, "lower_bounds", "pass the model's lower_bounds_ (one finite value per EM iteration)."
    )
    if tol is not None:
        tol = finite_float(tol, "tol", "pass the fit's tol (e.g. 1e-3) or None.")
        if tol <= 0:
            raise ValueError(f"tol must be > 0 to draw on a log scale, got {tol}: pass the fit's tol or None.")

    its = np.arange(1, lb.size + 1)
    fig = style.new_figure(style.FIGSIZE_TWO_PANELS)
    ax, ax_d = fig.subplots(2, 1, sharex=True)
    _draw_bounds(ax, its, lb, title)
    _draw_changes(ax_d, its, lb, tol)
    ax_d.xaxis.set_major_locator(MaxNLocator(integer=True))
    return style.save_png(fig, path)
