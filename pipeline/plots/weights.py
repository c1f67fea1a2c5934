"""Variational selection plot: a Dirichlet-process mixture's component weights, largest first.

One bar per fitted component (log scale, so the pruned components, with
weights of order ``prior / n_samples``, stay visible), the floor above
which a component counts as used, and the effective number of components.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from . import style
from .checks import check_all_finite, check_path, finite_float, vector


def plot_weights(weights, path, *, floor: float, title: str | None = None) -> Path:
    """Draw the weights of a variational mixture against the effective-component floor.

    Parameters
    ----------
    weights : array-like of shape (n_components,)
        ``BayesianGaussianMixture.weights_`` (non-negative, summing to 1).
    path : str or PathLike
        Destination ``.png``.
    floor : float in [0, 1)
        Components with a weight above it count as used.
    title : str, optional

    Returns
    -------
    pathlib.Path
    """
    path = check_path(path)
    w = vector(weights, "weights")
    check_all_finite(w, "weights", "pass the fitted model's weights_.")
    if np.any(w < 0):
        raise ValueError("weights must be non-negative: pass the fitted model's weights_.")
    floor = finite_float(floor, "floor", "pass a weight in [0, 1), e.g. 0.01.")
    if not 0 <= floor < 1:
        raise ValueError(f"floor must be in [0, 1), got {floor}: pass a weight such as 0.01.")
    order = np.sort(w)[::-1]
    used = order > floor
    ranks = np.arange(1, order.size + 1)
    fig = style.new_figure()
    ax = fig.subplots()
    shown = np.maximum(order, 1e-12)  # a log axis cannot show an exact 0
    ax.bar(ranks[used], shown[used], color=style.OKABE_ITO[0], label=f"used ({int(used.sum())})")
    if (~used).any():
        ax.bar(ranks[~used], shown[~used], color=style.GREY, label=f"pruned ({int((~used).sum())})")
    if floor > 0:
        ax.axhline(floor, color=style.OKABE_ITO[3], ls="--", lw=1.2, label=f"floor {floor:g}")
    ax.set_yscale("log")
    ax.set_xlabel("component, by weight")
    ax.set_ylabel("weight (fraction of the data)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title or f"Variational mixture: {int(used.sum())} of {order.size} components used")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    return style.save_png(fig, path)
