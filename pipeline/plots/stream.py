"""The stream at a glance: per partition in arrival order, how the model explains it.

Four panels share the partition axis: the mean log-likelihood (drifted
partitions marked), the anomaly rate against the model's expected rate,
the smallest Holm-adjusted p-value of the three drift tests against the
false-alarm rate (log scale), and the CUSUM statistic against its
decision interval.  A vertical line marks every change of the model
version that scored the partitions, labelled with the new version.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import style
from .checks import check_path

TESTS = ("anomaly_rate", "loglik_ks", "occupancy_g")


def _series(points):
    def get(point, test, key):
        v = ((point.drift or {}).get(test) or {}).get(key)
        return math.nan if v is None else float(v)

    x = np.arange(len(points))
    mean = np.array([p.mean_loglik for p in points], dtype=float)
    rate = np.array([p.anomaly_rate for p in points], dtype=float)
    p_min = np.array([np.nanmin([get(p, t, "p_adjusted") for t in TESTS] + [np.nan]) for p in points])
    cusum = np.array([get(p, "sequential", "statistic") for p in points])
    drifted = np.array([bool((p.drift or {}).get("drifted") or (p.drift or {}).get("sequential_alarm"))
                        for p in points])
    return x, mean, rate, p_min, cusum, drifted


def _version_changes(ax_list, points) -> None:
    previous = None
    for i, p in enumerate(points):
        if previous is not None and p.model_version != previous:
            for ax in ax_list:
                ax.axvline(i - 0.5, color=style.GREY, ls="--", lw=1)
            ax_list[0].annotate(f"model {p.model_version[-8:]}", xy=(i - 0.5, 1.0), xycoords=("data", "axes fraction"),
                                rotation=90, va="top", ha="right", fontsize="x-small", color=style.GREY)
        previous = p.model_version


def plot_stream(points, path, *, expected_rate: float | None = None, alpha: float = 0.01,
                cusum_h: float = 5.0, title: str | None = None) -> Path:
    """Draw the stream of scored partitions (``pipeline.stream.history``) to ``path``.

    Parameters
    ----------
    points : sequence of StreamPoint
        In arrival order; at least one.
    path : str or PathLike
        PNG file to write.
    expected_rate : float, optional
        The current model's expected anomaly rate (drawn as a line).
    alpha, cusum_h : float
        The drift policy's false-alarm rate and CUSUM decision interval.

    Returns
    -------
    Path
    """
    path = check_path(path)
    if not points:
        raise ValueError("no scored partitions to draw: score some first (`gmm score`)")
    x, mean, rate, p_min, cusum, drifted = _series(points)
    fig = style.new_figure(figsize=(9.0, 8.0))
    axes = fig.subplots(4, 1, sharex=True)
    blue, vermillion = style.OKABE_ITO[0], style.OKABE_ITO[3]
    axes[0].plot(x, mean, color=blue, marker="o", ms=4, lw=1.2)
    axes[0].plot(x[drifted], mean[drifted], ls="none", marker="X", ms=9, color=vermillion, label="drifted")
    axes[0].set_ylabel("mean log-lik\nper row")
    axes[0].set_title(title or f"The stream: {len(points)} partitions in arrival order")
    axes[1].plot(x, 100 * rate, color=blue, marker="o", ms=4, lw=1.2)
    if expected_rate is not None:
        axes[1].axhline(100 * expected_rate, color=style.BLACK, ls=":", lw=1, label="expected")
    axes[1].set_ylabel("anomalies (%)")
    axes[2].set_yscale("log")
    axes[2].plot(x, np.clip(p_min, 1e-20, 1.0), color=blue, marker="o", ms=4, lw=1.2)  # below 1e-20: drawn at it
    axes[2].axhline(alpha, color=vermillion, ls="--", lw=1, label=f"alpha = {alpha:g}")
    axes[2].set_ylabel("smallest drift\np-value (Holm)")
    axes[3].plot(x, cusum, color=blue, marker="o", ms=4, lw=1.2)
    axes[3].axhline(cusum_h, color=vermillion, ls="--", lw=1, label=f"h = {cusum_h:g}")
    axes[3].set_ylabel("CUSUM")
    axes[3].set_xlabel("partition (arrival order)")
    labels = [p.partition_id for p in points]
    step = max(1, len(labels) // 20)
    axes[3].set_xticks(x[::step], labels[::step], rotation=45, ha="right", fontsize="x-small")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="x-small")
    _version_changes(list(axes), points)
    return style.save_png(fig, path)
