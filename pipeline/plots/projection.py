"""2-D view of a fitted mixture: data points and component ellipses.

Geometry first: :func:`projection_axes` picks the plane (the data's own
axes for D <= 2, the first two principal axes of the drawn rows for
D > 2) and :func:`ellipse_geometry` turns a 2x2 covariance into the width,
height and angle matplotlib's :class:`~matplotlib.patches.Ellipse` takes.
With ``W`` of shape (D, 2), component ``k`` is drawn at
``W^T (mu_k - origin)`` with the 1- and 2-sigma ellipses of
``W^T Sigma_k W``: the exact marginal ellipses of the projected Gaussian.
Any covariance type is expanded to (K, D, D) matrices by
:func:`gmm_engine.full_covariances`.

:func:`plot_projection` checks its arguments, reads at most ``max_points``
random rows (numpy, dask or Zarr; sorted indices so each chunk is read
once, in order), projects them, then draws the points, the anomalies and
the components in that order (later layers on top).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse

from gmm_engine import full_covariances

from . import style
from .checks import (
    bool_vector,
    check_all_finite,
    check_covariance_type,
    check_path,
    finite_float,
    positive_int,
    vector,
)

# ---------------------------------------------------------------------------
# geometry


def ellipse_geometry(cov2, n_std: float = 1.0) -> tuple[float, float, float]:
    """Width, height and angle of the ``n_std``-sigma ellipse of a 2x2 covariance.

    The ellipse is ``{x : x^T cov2^{-1} x = n_std^2}``, whose semi-axes are
    ``n_std * sqrt(lambda_i)`` along the eigenvectors of ``cov2``.

    Parameters
    ----------
    cov2 : array-like of shape (2, 2)
        Symmetric positive semi-definite.  A singular matrix gives a
        degenerate (flat) ellipse, e.g. for one-feature data padded to 2-D.
    n_std : float, default=1.0
        Number of standard deviations, > 0.

    Returns
    -------
    width : float
        Full length of the major axis, ``2 * n_std * sqrt(lambda_max)``.
    height : float
        Full length of the minor axis, ``2 * n_std * sqrt(lambda_min)``.
    angle : float
        Counter-clockwise angle of the major axis from the first axis, in
        degrees, in (-90, 90] (an axis has no direction).  This is what
        :class:`matplotlib.patches.Ellipse` expects.
    """
    n_std = finite_float(n_std, "n_std", "pass a positive number of standard deviations.")
    if n_std <= 0:
        raise ValueError(f"n_std must be > 0, got {n_std}: pass e.g. 1.0 or 2.0.")
    cov2 = np.asarray(cov2, dtype=np.float64)
    if cov2.shape != (2, 2):
        raise ValueError(
            f"cov2 must have shape (2, 2), got {cov2.shape}: project the covariance first "
            "(W.T @ cov @ W with W of shape (D, 2))."
        )
    check_all_finite(cov2, "cov2", "the covariance is not usable; refit the model.")
    sym = 0.5 * (cov2 + cov2.T)
    evals, evecs = np.linalg.eigh(sym)  # ascending
    scale = max(float(np.abs(evals).max()), np.finfo(np.float64).tiny)
    if evals[0] < -1e-9 * scale:
        raise ValueError(
            f"cov2 is not positive semi-definite (eigenvalues {evals.tolist()}): pass a "
            "covariance matrix."
        )
    evals = np.clip(evals, 0.0, None)
    major = evecs[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    if angle <= -90.0:
        angle += 180.0
    elif angle > 90.0:
        angle -= 180.0
    width = 2.0 * n_std * math.sqrt(evals[1])
    height = 2.0 * n_std * math.sqrt(evals[0])
    return width, height, angle


def projection_axes(X) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two projection axes for a 2-D view of ``X``.

    Parameters
    ----------
    X : ndarray of shape (n, D)
        Finite; for D > 2 at least 2 rows.

    Returns
    -------
    W : ndarray of shape (D, 2)
        Orthonormal columns: the first two principal axes of the centred
        ``X`` if D > 2 (sign fixed so each axis' largest loading is
        positive), the identity if D == 2, ``[[1, 0]]`` if D == 1 (a zero
        axis padded so the view is still 2-D).
    origin : ndarray of shape (D,)
        Subtracted before projecting: the mean of ``X`` for PCA, zeros
        otherwise (the plot is then in the data's own units).
    axis_labels : list of 2 str
    """
    X = np.asarray(X, dtype=np.float64)
    n, D = X.shape
    if D == 1:
        return np.array([[1.0, 0.0]]), np.zeros(1), ["feature 0", "(padding axis, always 0)"]
    if D == 2:
        return np.eye(2), np.zeros(2), ["feature 0", "feature 1"]
    if n < 2:
        raise ValueError(
            f"X has {n} row(s) and {D} features; principal axes need at least 2 rows: pass more data."
        )
    origin = X.mean(axis=0)
    _, s, vt = np.linalg.svd(X - origin, full_matrices=False)
    W = vt[:2].T.copy()
    # SVD signs are arbitrary; fixing them keeps the picture stable across runs.
    for j in range(2):
        if W[np.argmax(np.abs(W[:, j])), j] < 0:
            W[:, j] = -W[:, j]
    var = s**2
    total = float(var.sum())
    if total > 0:
        labels = [f"PC{j + 1} ({100.0 * var[j] / total:.1f}% of variance)" for j in range(2)]
    else:
        labels = ["PC1 (data has no variance)", "PC2"]
    return W, origin, labels


# ---------------------------------------------------------------------------
# data preparation


def _means(means) -> np.ndarray:
    try:
        mu = np.asarray(means, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("means must be a numeric array of shape (K, D): pass means_.") from None
    if mu.ndim != 2 or 0 in mu.shape:
        raise ValueError(
            f"means must have shape (n_components, n_features), got {mu.shape}: pass means_."
        )
    return mu


def _data(X, n_features: int):
    """``X`` (anything with a ``shape``, else converted) and its row count, checked against the model."""
    if getattr(X, "shape", None) is None:
        X = np.asarray(X)
    shape = tuple(int(v) for v in X.shape)
    if len(shape) != 2:
        raise ValueError(
            f"X must be 2-D (n_samples, n_features), got shape {shape}: "
            "reshape 1-feature data with X.reshape(-1, 1)."
        )
    if shape[0] == 0:
        raise ValueError(f"X has shape {shape}: there is nothing to plot; pass non-empty data.")
    if shape[1] != n_features:
        raise ValueError(
            f"X has {int(shape[1])} features but means has {n_features}: pass data with the "
            "features the model was fitted on."
        )
    return X, shape[0]


def _weights(weights, K: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = vector(weights, "weights")
    if w.size != K:
        raise ValueError(f"weights has {w.size} entries but means has {K} components: pass weights_.")
    check_all_finite(w, "weights", "pass the model's weights_.")
    if (w < 0).any():
        raise ValueError("weights must be >= 0: pass the model's weights_.")
    return w


def _labels(labels, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(
            f"labels has shape {lab.shape} but X has {n} rows: pass one label per row of X."
        )
    return lab


def _sample_rows(X, max_points: int, rng) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of 2-D ``X`` (numpy, dask or Zarr) as float64, at most ``max_points`` of them.

    Returns the rows and the sorted row indices taken (None when all rows are).
    """
    n = int(X.shape[0])
    idx = None
    if n > max_points:
        # Sorted so dask/Zarr read each chunk once, in order.
        idx = np.sort(rng.choice(n, size=max_points, replace=False))
        rows = X[idx]
    else:
        rows = X if isinstance(X, np.ndarray) else X[:]
    if hasattr(rows, "compute"):
        from gmm_engine import compute

        (rows,) = compute(rows)
    try:
        rows = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("X must hold numbers: pass a numeric array.") from None
    return rows, idx


def _project(rows: np.ndarray, mu: np.ndarray, cov_full: np.ndarray):
    """Rows, means and (K, D, D) covariances in the plane of :func:`projection_axes`.

    Returns ``P`` (n, 2), ``mu_p`` (K, 2), ``cov_p`` (K, 2, 2) and the two axis labels.
    """
    W, origin, axis_labels = projection_axes(rows)
    cov_p = np.einsum("di,kde,ej->kij", W, cov_full, W)
    return (rows - origin) @ W, (mu - origin) @ W, cov_p, axis_labels


def _taken(values, idx):
    """The drawn subset of a per-row array (all of it when ``idx`` is None)."""
    return values if idx is None else values[idx]


# ---------------------------------------------------------------------------
# layers, bottom to top; each returns its legend handles


def _draw_points(ax, P: np.ndarray, lab_s, comp_colours: list) -> list:
    """The points, coloured by label (component colours when labels are 0..K-1), else grey."""
    if lab_s is None:
        ax.scatter(P[:, 0], P[:, 1], s=6, color=style.GREY, alpha=0.4, linewidths=0, rasterized=True)
        return [Line2D([], [], ls="none", marker="o", ms=6, color=style.GREY, label="data")]
    K = len(comp_colours)
    uniq = np.unique(lab_s)
    is_comp = bool(
        np.issubdtype(lab_s.dtype, np.integer) and uniq.size and uniq.min() >= 0 and uniq.max() < K
    )
    colours = comp_colours if is_comp else style.category_colours(uniq.size)
    for j, u in enumerate(uniq):
        m = lab_s == u
        c = colours[int(u)] if is_comp else colours[j]
        ax.scatter(P[m, 0], P[m, 1], s=6, color=c, alpha=0.45, linewidths=0, rasterized=True)
    if uniq.size > 12:
        return []
    return [
        Line2D([], [], ls="none", marker="o", ms=6, alpha=0.8,
               color=comp_colours[int(u)] if is_comp else colours[j], label=f"label {u}")
        for j, u in enumerate(uniq)
    ]


def _draw_anomalies(ax, P: np.ndarray, anom: np.ndarray) -> list:
    if anom.any():
        ax.scatter(P[anom, 0], P[anom, 1], s=22, marker="x", color=style.BLACK, linewidths=1.0,
                   zorder=4)
    return [Line2D([], [], ls="none", marker="x", ms=7, color=style.BLACK,
                   label=f"anomaly ({int(anom.sum()):,} shown)")]


def _draw_components(ax, mu_p: np.ndarray, cov_p: np.ndarray, w, comp_colours: list) -> list:
    """1- and 2-sigma ellipses and the mean of every component, labelled ``k (weight)``."""
    for k, c in enumerate(comp_colours):
        for n_std, ls in ((1.0, "-"), (2.0, "--")):
            width, height, angle = ellipse_geometry(cov_p[k], n_std)
            # a white halo: the ellipse crosses its own component's points, drawn in the same colour
            ax.add_patch(Ellipse(tuple(mu_p[k]), width, height, angle=angle, fill=False,
                                 edgecolor=c, lw=2.0, ls=ls, zorder=5,
                                 path_effects=[patheffects.withStroke(linewidth=4.0, foreground="white")]))
        ax.plot(*mu_p[k], marker="P", ms=10, color=c, mec=style.BLACK, mew=0.8, zorder=6)
        text = f"{k}" if w is None else f"{k} ({w[k]:.2f})"
        ax.annotate(text, mu_p[k], xytext=(6, 6), textcoords="offset points", fontsize=9,
                    fontweight="bold", zorder=7,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=c, alpha=0.8))
    return [
        Line2D([], [], color=style.BLACK, lw=2.0, ls="-", label="1-sigma ellipse"),
        Line2D([], [], color=style.BLACK, lw=2.0, ls="--", label="2-sigma ellipse"),
        Line2D([], [], ls="none", marker="P", ms=9, color="white", mec=style.BLACK,
               label="component mean: k (weight)" if w is not None else "component mean: k"),
    ]


# ---------------------------------------------------------------------------
# the plot


def plot_projection(
    X, means, covariances, covariance_type, path, *, labels=None, is_anomaly=None, weights=None,
    max_points: int = 20000, random_state=0, sample_of: int | None = None,
) -> Path:
    """Data and component ellipses in a 2-D projection.

    Parameters
    ----------
    X : array-like of shape (n, D)
        numpy, dask or Zarr; at most ``max_points`` random rows are read and
        drawn, and for D > 2 the principal axes are computed from them.
    means : array-like of shape (K, D)
    covariances : array-like
        ``covariances_`` in the layout of ``covariance_type``.
    covariance_type : str
        One of :data:`gmm_engine.COVARIANCE_TYPES`.
    path : str or os.PathLike
        Destination ``.png``.
    labels : array-like of int, shape (n,), optional
        Colours the points (e.g. ``predict`` output; labels 0..K-1 share the
        colour of their component's ellipse).
    is_anomaly : array-like of bool, shape (n,), optional
        Drawn on top as black crosses.
    weights : array-like of shape (K,), optional
        Printed next to each component's mean.
    max_points : int, default=20000
    random_state : int or numpy Generator, default=0
        Seeds the subsample.
    sample_of : int, optional
        When ``X`` is itself a random sample, the number of rows it was
        drawn from (>= n): the title then says how many of them are shown.

    Returns
    -------
    pathlib.Path

    Notes
    -----
    Projection axes come from :func:`projection_axes`.  Component ``k`` is
    drawn at ``W^T (mu_k - origin)`` with 1- and 2-sigma ellipses of
    ``W^T Sigma_k W``, which are the exact marginal ellipses of the projected
    Gaussian.
    """
    path = check_path(path)
    covariance_type = check_covariance_type(covariance_type)
    max_points = positive_int(max_points, "max_points")
    rng = np.random.default_rng(random_state)
    mu = _means(means)
    K, D = mu.shape
    X, n = _data(X, D)
    check_all_finite(mu, "means", "the model is not usable; refit it.")
    cov_full = full_covariances(covariances, covariance_type, K, D)
    w = _weights(weights, K)
    lab = _labels(labels, n)
    anom_all = None if is_anomaly is None else bool_vector(is_anomaly, "is_anomaly", n, "X")

    if sample_of is not None:
        sample_of = positive_int(sample_of, "sample_of")
        if sample_of < n:
            raise ValueError(f"sample_of={sample_of} is smaller than the {n} rows of X: pass the number of rows "
                             "X was drawn from, or None when X is all of them.")
    rows, idx = _sample_rows(X, max_points, rng)
    check_all_finite(rows, "X", "drop or impute rows with NaN/inf before plotting.")
    P, mu_p, cov_p, axis_labels = _project(rows, mu, cov_full)

    fig = style.new_figure()
    ax = fig.subplots()
    comp_colours = style.category_colours(K)
    handles = _draw_points(ax, P, None if lab is None else _taken(lab, idx), comp_colours)
    if anom_all is not None:
        handles += _draw_anomalies(ax, P, _taken(anom_all, idx))
    handles += _draw_components(ax, mu_p, cov_p, w, comp_colours)

    ax.autoscale_view()
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    if D == 1:
        ax.set_yticks([])  # the padding axis carries no information
    total = n if sample_of is None else sample_of
    sample_note = f"all {n:,} rows" if idx is None and total == n else f"random {P.shape[0]:,} of {total:,} rows"
    ax.set_title(f"{K}-component {covariance_type} mixture, D = {D} ({sample_note})")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize="small", loc="best", framealpha=0.85)
    return style.save_png(fig, path)
