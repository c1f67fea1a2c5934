"""Anomaly score plot: a histogram of per-row log-likelihood with the threshold.

Rows with ``score <= threshold`` are flagged, the convention of
:mod:`pipeline.threshold`.  With known anomalies the two groups are drawn
as overlaid histograms on the same bins (``_draw_groups``) and the legend
gives the threshold's recall and precision (``_annotate_threshold``).
Counts are log-scaled so the sparse low-likelihood tail stays visible next
to the bulk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import style
from .checks import bool_vector, check_all_finite, check_path, finite_float, positive_int, vector


def _draw_groups(ax, s: np.ndarray, edges: np.ndarray, truth) -> None:
    """The scored rows, or normal rows and known anomalies as two histograms on ``edges``."""
    blue, vermillion = style.OKABE_ITO[0], style.OKABE_ITO[3]
    if truth is None:
        ax.hist(s, bins=edges, color=blue, alpha=0.85, label=f"scored rows (n = {s.size:,})")
        return
    normal = s[~truth]
    anom = s[truth]
    if normal.size:
        ax.hist(normal, bins=edges, color=blue, alpha=0.6, label=f"normal (n = {normal.size:,})")
    if anom.size:
        ax.hist(anom, bins=edges, color=vermillion, alpha=0.75, hatch="//",
                edgecolor=vermillion, label=f"injected anomalies (n = {anom.size:,})")


def _annotate_threshold(ax, s: np.ndarray, threshold: float, truth) -> None:
    """The threshold line; the flagged share, and recall and precision if ``truth`` is known."""
    flagged = s <= threshold
    n = s.size
    ax.axvline(
        threshold, color=style.BLACK, ls="--", lw=1.8,
        label=f"threshold = {threshold:.4g}\nflagged {100.0 * flagged.mean():.2f}% "
        f"({int(flagged.sum()):,} of {n:,} rows)",
    )
    if truth is not None:
        tp = int((flagged & truth).sum())
        recall = f"{100.0 * tp / truth.sum():.1f}%" if truth.any() else "n/a"
        precision = f"{100.0 * tp / flagged.sum():.1f}%" if flagged.any() else "n/a"
        ax.plot([], [], " ", label=f"recall {recall}, precision {precision}")


def plot_score_histogram(
    scores, threshold, path, *, is_anomaly_truth=None, bins: int = 100, title=None
) -> Path:
    """Histogram of per-row log-likelihood with the anomaly threshold.

    Parameters
    ----------
    scores : array-like of shape (n,)
        ``score_samples`` output (possibly a sample of a larger set), all
        finite.
    threshold : float
        Rows with ``score <= threshold`` are flagged as anomalies (the
        convention of :mod:`pipeline.threshold`).
    path : str or os.PathLike
        Destination ``.png``.
    is_anomaly_truth : array-like of bool, shape (n,), optional
        Known anomalies (e.g. injected in a test run): the two groups are
        drawn as separate overlaid histograms on the same bins, and the
        legend gives the recall and precision of the threshold.
    bins : int, default=100
    title : str, optional

    Returns
    -------
    pathlib.Path

    Notes
    -----
    Counts are on a log scale so the sparse low-likelihood tail, where
    anomalies live, stays visible next to the bulk.
    """
    path = check_path(path)
    s = vector(scores, "scores")
    check_all_finite(
        s, "scores", "drop or investigate those rows first (e.g. scores[np.isfinite(scores)])."
    )
    threshold = finite_float(
        threshold, "threshold", "pass the numeric log-likelihood threshold the run uses."
    )
    bins = positive_int(bins, "bins")
    truth = None
    if is_anomaly_truth is not None:
        truth = bool_vector(is_anomaly_truth, "is_anomaly_truth", s.size, "scores")

    lo, hi = float(s.min()), float(s.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    fig = style.new_figure()
    ax = fig.subplots()
    _draw_groups(ax, s, np.linspace(lo, hi, bins + 1), truth)
    _annotate_threshold(ax, s, threshold, truth)
    ax.set_yscale("log")
    pad = 0.02 * (hi - lo)
    ax.set_xlim(min(lo, threshold) - pad, max(hi, threshold) + pad)
    ax.set_xlabel("log-likelihood per row (nats; lower = more anomalous)")
    ax.set_ylabel("rows per bin (log scale)")
    ax.set_title(title or "Anomaly scores")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    return style.save_png(fig, path)
