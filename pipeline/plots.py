"""PNG plots for a run's report folder: model selection, EM convergence, anomaly
scores and a 2-D view of the fitted mixture.

Every ``plot_*`` function builds its own :class:`matplotlib.figure.Figure` on a
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg` and never touches
``pyplot``: pyplot keeps global state (the current figure, the backend) that
is not safe to share between threads, and the flows render plots from worker
threads.  Global ``rcParams`` are never modified; styling is passed explicitly.

Files are written atomically: the PNG is rendered to a hidden temporary file in
the destination directory, flushed to disk, then moved over the target with
:func:`os.replace`, so a reader (or a Prefect artifact upload) never sees a
half-written image and a failed render leaves no debris behind.

Colours come from the Okabe-Ito palette (distinguishable with the common forms
of colour-vision deficiency); where colour carries meaning a second cue
(marker shape or line style) carries it too.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import uuid
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse
from matplotlib.ticker import MaxNLocator

logger = logging.getLogger(__name__)

__all__ = [
    "COVARIANCE_TYPES",
    "ellipse_geometry",
    "expand_covariances",
    "plot_loglik_trace",
    "plot_projection",
    "plot_score_histogram",
    "plot_selection",
    "projection_axes",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# Okabe & Ito (2008), "Color Universal Design"; black is kept out of the
# categorical cycle because it is reserved for anomalies and annotations.
OKABE_ITO = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
)
_BLACK = "#000000"
_GREY = "#8C8C8C"

# Fixed per covariance type so the same type looks the same in every report.
_TYPE_STYLE = {
    "full": (OKABE_ITO[0], "o"),
    "tied": (OKABE_ITO[1], "s"),
    "diag": (OKABE_ITO[2], "^"),
    "spherical": (OKABE_ITO[3], "D"),
}

FIGSIZE = (8.0, 5.0)
FIGSIZE_TWO_PANELS = (8.0, 7.0)
DPI = 110


# ---------------------------------------------------------------------------
# figure and file plumbing


def _new_figure(figsize=FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _check_path(path) -> Path:
    try:
        path = Path(os.fspath(path))
    except TypeError:
        raise ValueError(
            f"path must be a str or os.PathLike, got {type(path).__name__}: "
            "pass the destination file name, e.g. report_dir / 'selection.png'."
        ) from None
    if path.suffix.lower() != ".png":
        raise ValueError(
            f"path {str(path)!r} does not end in '.png' but the plot is written as PNG: "
            "use a file name ending in .png."
        )
    if path.is_dir():
        raise ValueError(
            f"path {str(path)!r} is a directory: pass a file name inside it, "
            "e.g. path / 'plot.png'."
        )
    return path


def _save_atomic(fig: Figure, path: Path) -> Path:
    """Render ``fig`` to ``path`` via a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # os.open with mode 0o666 lets the umask decide the final permissions,
        # as for any ordinary file (tempfile would force 0o600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        # Drops the renderer and artists now rather than at the next GC cycle.
        fig.clear()
    logger.debug("wrote plot %s", path)
    return path


def _category_colours(n: int) -> list:
    """``n`` distinguishable colour-blind-safe colours."""
    if n <= len(OKABE_ITO):
        return list(OKABE_ITO[:n])
    from matplotlib import colormaps

    # Beyond 7 categories no qualitative palette stays distinguishable;
    # viridis at least stays ordered and readable for every form of CVD.
    return [colormaps["viridis"](v) for v in np.linspace(0.0, 0.95, n)]


# ---------------------------------------------------------------------------
# input validation


def _finite_float(value, name: str, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:
            value = float(np.asarray(value).item())
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a real number, got {value!r}: {fix}") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}: {fix}")
    return value


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}: pass an int >= 1.")
    return int(value)


def _vector(values, name: str, *, allow_empty: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a 1-D array of numbers; could not convert {type(values).__name__}: "
            "pass a list or numpy array of floats."
        ) from None
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D, got shape {arr.shape}: pass a flat array (e.g. {name}.ravel())."
        )
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: there is nothing to plot; pass at least one value.")
    return arr


def _check_all_finite(arr: np.ndarray, name: str, fix: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.flatnonzero(bad.ravel())[:5].tolist()
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf; first at flat "
            f"indices {first}): {fix}"
        )


def _bool_vector(values, name: str, n: int, n_name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{name} has shape {arr.shape} but {n_name} has {n} rows: pass one boolean per row."
        )
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            raise ValueError(
                f"{name} must be boolean (or 0/1), got dtype {arr.dtype}: pass a boolean mask "
                "with True for anomalies."
            )
        arr = arr.astype(bool)
    return arr


def _check_covariance_type(covariance_type) -> str:
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"Unknown covariance_type {covariance_type!r}: use one of {list(COVARIANCE_TYPES)} "
            "(the GaussianMixture's covariance_type)."
        )
    return covariance_type


# ---------------------------------------------------------------------------
# geometry


def expand_covariances(covariances, covariance_type, n_components, n_features) -> np.ndarray:
    """Full covariance matrices from any covariance parametrisation.

    Parameters
    ----------
    covariances : array-like
        ``GaussianMixture.covariances_``: (K, D, D) if 'full', (D, D) if
        'tied', (K, D) if 'diag', (K,) if 'spherical'.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    n_components : int
        K.
    n_features : int
        D.

    Returns
    -------
    ndarray of shape (K, D, D), float64
        A new array (never a view of ``covariances``).

    Raises
    ------
    ValueError
        Unknown type, wrong shape, non-finite values, asymmetric full/tied
        matrices or negative variances.
    """
    covariance_type = _check_covariance_type(covariance_type)
    K = _positive_int(n_components, "n_components")
    D = _positive_int(n_features, "n_features")
    try:
        cov = np.asarray(covariances, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            "covariances must be a numeric array: pass GaussianMixture.covariances_."
        ) from None
    expected = {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}[covariance_type]
    if cov.shape != expected:
        raise ValueError(
            f"covariances has shape {cov.shape} but covariance_type={covariance_type!r} with "
            f"n_components={K} and n_features={D} needs {expected}: pass the model's "
            "covariances_ together with its own covariance_type."
        )
    _check_all_finite(cov, "covariances", "the model is not usable; refit it.")
    if covariance_type in ("full", "tied"):
        scale = max(float(np.abs(cov).max()), np.finfo(np.float64).tiny)
        asym = float(np.abs(cov - np.swapaxes(cov, -1, -2)).max())
        if asym > 1e-8 * scale:
            raise ValueError(
                f"covariances are not symmetric (max |C - C^T| = {asym:.3g}): pass covariance "
                "matrices, not precision Cholesky factors."
            )
        full = np.array(np.broadcast_to(cov, (K, D, D)))
    else:
        if (cov < 0).any():
            raise ValueError(
                f"{covariance_type} covariances must be variances >= 0, got minimum "
                f"{float(cov.min()):.3g}: pass covariances_, not log-variances or precisions."
            )
        variances = cov if covariance_type == "diag" else np.repeat(cov[:, None], D, axis=1)
        full = np.zeros((K, D, D))
        idx = np.arange(D)
        full[:, idx, idx] = variances
    return full


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
    n_std = _finite_float(n_std, "n_std", "pass a positive number of standard deviations.")
    if n_std <= 0:
        raise ValueError(f"n_std must be > 0, got {n_std}: pass e.g. 1.0 or 2.0.")
    cov2 = np.asarray(cov2, dtype=np.float64)
    if cov2.shape != (2, 2):
        raise ValueError(
            f"cov2 must have shape (2, 2), got {cov2.shape}: project the covariance first "
            "(W.T @ cov @ W with W of shape (D, 2))."
        )
    _check_all_finite(cov2, "cov2", "the covariance is not usable; refit the model.")
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
# plots


def _selected_key(selected, rows) -> tuple[int, str] | None:
    if selected is None:
        return None
    if isinstance(selected, dict):
        try:
            selected = (selected["n_components"], selected["covariance_type"])
        except KeyError as exc:
            raise ValueError(
                f"selected dict lacks key {exc.args[0]!r}: pass (n_components, covariance_type) "
                "or a table row."
            ) from None
    try:
        k, ctype = selected
    except (TypeError, ValueError):
        raise ValueError(
            f"selected must be (n_components, covariance_type), got {selected!r}: "
            "e.g. selected=(4, 'full')."
        ) from None
    key = (int(k), str(ctype))
    if key not in {(r["n_components"], r["covariance_type"]) for r in rows}:
        raise ValueError(
            f"selected={key} is not a row of the table: pass one of the (n_components, "
            "covariance_type) pairs that were evaluated."
        )
    return key


def _optional_float(row, key):
    value = row.get(key)
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # sentinel: not a number at all


def plot_selection(table: list[dict], path, *, criterion: str = "bic", selected=None) -> Path:
    """Information criterion against the number of components, one line per covariance type.

    Parameters
    ----------
    table : list of dict
        One row per evaluated model with keys ``n_components`` (int),
        ``covariance_type`` (str), ``bic``, ``aic`` (float) and optionally
        ``heldout_loglik`` (float or None).  A row whose criterion is None or
        non-finite (a failed fit) is left out of the line and counted in a
        note; at least one row must have a finite value.  Each
        (n_components, covariance_type) pair may appear only once.
    path : str or os.PathLike
        Destination ``.png``; parent directories are created.
    criterion : {'bic', 'aic'}, default='bic'
    selected : (int, str) or dict, optional
        The chosen (n_components, covariance_type), marked with a star.
        Default: the row with the lowest criterion, labelled as such.

    Returns
    -------
    pathlib.Path
        ``path``.  If any row has a finite ``heldout_loglik`` the figure has a
        second panel with the mean held-out log-likelihood per row.
    """
    path = _check_path(path)
    crit = str(criterion).lower()
    if crit not in ("bic", "aic"):
        raise ValueError(f"criterion must be 'bic' or 'aic', got {criterion!r}: pass criterion='bic'.")
    if isinstance(table, dict) or not hasattr(table, "__iter__"):
        raise ValueError(
            f"table must be a list of dicts (one per model), got {type(table).__name__}: "
            "e.g. [{'n_components': 2, 'covariance_type': 'full', 'bic': ..., 'aic': ...}]."
        )
    table = list(table)
    if not table:
        raise ValueError("table is empty: run model selection first; there is nothing to plot.")

    rows = []
    seen = set()
    for i, row in enumerate(table):
        if not isinstance(row, dict):
            raise ValueError(f"table[{i}] is a {type(row).__name__}, not a dict: pass one dict per model.")
        for key in ("n_components", "covariance_type", crit):
            if key not in row:
                raise ValueError(
                    f"table[{i}] lacks key {key!r} (has {sorted(row)}): every row needs "
                    f"n_components, covariance_type and {crit}."
                )
        k = row["n_components"]
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"table[{i}]['n_components'] must be an int >= 1, got {k!r}.")
        ctype = _check_covariance_type(row["covariance_type"])
        if (int(k), ctype) in seen:
            raise ValueError(
                f"table has more than one row for n_components={int(k)}, covariance_type={ctype!r}: "
                "keep one row per pair (e.g. the best of several restarts)."
            )
        seen.add((int(k), ctype))
        value = _optional_float(row, crit)
        held = _optional_float(row, "heldout_loglik")
        for name, v in ((crit, value), ("heldout_loglik", held)):
            if v is None:
                raise ValueError(
                    f"table[{i}][{name!r}] is {row[name]!r}, not a number: pass a float (or None "
                    "for a failed fit)."
                )
        rows.append({"n_components": int(k), "covariance_type": ctype, "value": value, "held": held})

    finite = [r for r in rows if math.isfinite(r["value"])]
    if not finite:
        raise ValueError(
            f"no row has a finite {crit}: every fit failed or the table holds NaN; fix the "
            "fits (or the table) before plotting."
        )
    key = _selected_key(selected, rows)
    if key is None:
        best = min(finite, key=lambda r: r["value"])
        key = (best["n_components"], best["covariance_type"])
        sel_label = f"lowest {crit.upper()}: K={key[0]}, {key[1]}"
    else:
        sel_label = f"selected: K={key[0]}, {key[1]}"
    has_held = any(math.isfinite(r["held"]) for r in rows)

    fig = _new_figure(FIGSIZE_TWO_PANELS if has_held else FIGSIZE)
    if has_held:
        ax, ax_held = fig.subplots(2, 1, sharex=True)
    else:
        ax, ax_held = fig.subplots(1, 1), None

    panels = [(ax, "value", f"{crit.upper()} (lower is better)")]
    if has_held:
        panels.append((ax_held, "held", "held-out log-likelihood\nper row, nats (higher is better)"))
    for axis, field, ylabel in panels:
        for ctype in COVARIANCE_TYPES:
            pts = sorted(
                (r["n_components"], r[field])
                for r in rows
                if r["covariance_type"] == ctype and math.isfinite(r[field])
            )
            if not pts:
                continue
            colour, marker = _TYPE_STYLE[ctype]
            xs, ys = zip(*pts)
            axis.plot(xs, ys, color=colour, marker=marker, lw=1.8, ms=6, label=ctype)
        sel = [r[field] for r in rows if (r["n_components"], r["covariance_type"]) == key]
        if sel and math.isfinite(sel[0]):
            axis.plot(
                [key[0]], [sel[0]], linestyle="none", marker="*", ms=20, mfc="none",
                mec=_BLACK, mew=1.8, label=sel_label, zorder=5,
            )
        axis.set_ylabel(ylabel)
        axis.grid(True, alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(title="covariance type", fontsize="small", title_fontsize="small", loc="best")
    (ax_held or ax).set_xlabel("number of components K")

    missing = len(rows) - len(finite)
    title = f"Model selection by {crit.upper()}"
    if missing:
        title += f" ({missing} model(s) without a finite {crit.upper()} not shown)"
    ax.set_title(title)
    return _save_atomic(fig, path)


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
    path = _check_path(path)
    lb = _vector(lower_bounds, "lower_bounds")
    _check_all_finite(
        lb, "lower_bounds", "pass the model's lower_bounds_ (one finite value per EM iteration)."
    )
    if tol is not None:
        tol = _finite_float(tol, "tol", "pass the fit's tol (e.g. 1e-3) or None.")
        if tol <= 0:
            raise ValueError(f"tol must be > 0 to draw on a log scale, got {tol}: pass the fit's tol or None.")

    its = np.arange(1, lb.size + 1)
    fig = _new_figure(FIGSIZE_TWO_PANELS)
    ax, ax_d = fig.subplots(2, 1, sharex=True)
    ax.plot(its, lb, color=OKABE_ITO[0], marker="o", ms=4, lw=1.5)
    ax.set_ylabel("mean log-likelihood\nper row (nats)")
    ax.set_title(title or "EM convergence")
    ax.grid(True, alpha=0.3)
    ax.annotate(
        f"final: {lb[-1]:.6g} after {lb.size} iteration(s)", xy=(0.98, 0.05),
        xycoords="axes fraction", ha="right", va="bottom", fontsize="small",
    )

    change = np.diff(lb)
    mag = np.abs(change)
    d_its = its[1:]
    ax_d.set_yscale("log")
    ax_d.set_ylabel("|change| from previous\niteration (nats)")
    ax_d.set_xlabel("EM iteration")
    ax_d.grid(True, which="both", alpha=0.3)
    positive = mag[mag > 0]
    if change.size == 0:
        ax_d.text(
            0.5, 0.5, "a single iteration: no change to show", transform=ax_d.transAxes,
            ha="center", va="center", color=_GREY,
        )
        ax_d.set_ylim(1e-6, 1.0)
    else:
        floor_ref = [float(positive.min())] if positive.size else []
        if tol is not None:
            floor_ref.append(tol)
        floor = 0.1 * min(floor_ref) if floor_ref else 1e-16
        inc = change > 0
        dec = change < 0
        zero = change == 0
        ax_d.plot(d_its, np.where(zero, floor, mag), color=OKABE_ITO[0], lw=1.0, alpha=0.6)
        if inc.any():
            ax_d.plot(d_its[inc], mag[inc], ls="none", marker="o", ms=4, color=OKABE_ITO[0],
                      label="increase")
        if dec.any():
            ax_d.plot(d_its[dec], mag[dec], ls="none", marker="v", ms=7, color=OKABE_ITO[3],
                      label="decrease (rounding or a bug)")
        if zero.any():
            ax_d.plot(d_its[zero], np.full(int(zero.sum()), floor), ls="none", marker="x", ms=7,
                      color=_BLACK, label="exactly 0 (drawn at floor)")
        if tol is not None:
            ax_d.axhline(tol, color=OKABE_ITO[1], ls="--", lw=1.5,
                         label=f"tol = {tol:.3g} (converged when |change| < tol)")
        ax_d.legend(fontsize="small", loc="best")
    ax_d.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save_atomic(fig, path)


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
    path = _check_path(path)
    s = _vector(scores, "scores")
    _check_all_finite(
        s, "scores", "drop or investigate those rows first (e.g. scores[np.isfinite(scores)])."
    )
    threshold = _finite_float(
        threshold, "threshold", "pass the numeric log-likelihood threshold the run uses."
    )
    bins = _positive_int(bins, "bins")
    truth = None
    if is_anomaly_truth is not None:
        truth = _bool_vector(is_anomaly_truth, "is_anomaly_truth", s.size, "scores")

    flagged = s <= threshold
    n = s.size
    lo, hi = float(s.min()), float(s.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)

    fig = _new_figure()
    ax = fig.subplots()
    if truth is None:
        ax.hist(s, bins=edges, color=OKABE_ITO[0], alpha=0.85, label=f"all rows (n = {n:,})")
    else:
        normal = s[~truth]
        anom = s[truth]
        if normal.size:
            ax.hist(normal, bins=edges, color=OKABE_ITO[0], alpha=0.6,
                    label=f"normal (n = {normal.size:,})")
        if anom.size:
            ax.hist(anom, bins=edges, color=OKABE_ITO[3], alpha=0.75, hatch="//",
                    edgecolor=OKABE_ITO[3], label=f"injected anomalies (n = {anom.size:,})")
    ax.axvline(
        threshold, color=_BLACK, ls="--", lw=1.8,
        label=f"threshold = {threshold:.4g}\nflagged {100.0 * flagged.mean():.2f}% "
        f"({int(flagged.sum()):,} of {n:,} rows)",
    )
    if truth is not None:
        tp = int((flagged & truth).sum())
        recall = f"{100.0 * tp / truth.sum():.1f}%" if truth.any() else "n/a"
        precision = f"{100.0 * tp / flagged.sum():.1f}%" if flagged.any() else "n/a"
        ax.plot([], [], " ", label=f"recall {recall}, precision {precision}")
    ax.set_yscale("log")
    pad = 0.02 * (hi - lo)
    ax.set_xlim(min(lo, threshold) - pad, max(hi, threshold) + pad)
    ax.set_xlabel("log-likelihood per row (nats; lower = more anomalous)")
    ax.set_ylabel("rows per bin (log scale)")
    ax.set_title(title or "Anomaly scores")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    return _save_atomic(fig, path)


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
        rows = rows.compute()
    try:
        rows = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("X must hold numbers: pass a numeric array.") from None
    return rows, idx


def plot_projection(
    X,
    means,
    covariances,
    covariance_type,
    path,
    *,
    labels=None,
    is_anomaly=None,
    weights=None,
    max_points: int = 20000,
    random_state=0,
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
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
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
    path = _check_path(path)
    covariance_type = _check_covariance_type(covariance_type)
    max_points = _positive_int(max_points, "max_points")
    rng = np.random.default_rng(random_state)

    try:
        mu = np.asarray(means, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("means must be a numeric array of shape (K, D): pass means_.") from None
    if mu.ndim != 2 or 0 in mu.shape:
        raise ValueError(
            f"means must have shape (n_components, n_features), got {mu.shape}: pass means_."
        )
    K, Dm = mu.shape
    if getattr(X, "shape", None) is None:
        X = np.asarray(X)
    shape = tuple(int(v) for v in X.shape)
    if len(shape) != 2:
        raise ValueError(
            f"X must be 2-D (n_samples, n_features), got shape {shape}: "
            "reshape 1-feature data with X.reshape(-1, 1)."
        )
    n = shape[0]
    if n == 0:
        raise ValueError(f"X has shape {shape}: there is nothing to plot; pass non-empty data.")
    if shape[1] != Dm:
        raise ValueError(
            f"X has {int(shape[1])} features but means has {Dm}: pass data with the "
            "features the model was fitted on."
        )
    _check_all_finite(mu, "means", "the model is not usable; refit it.")
    cov_full = expand_covariances(covariances, covariance_type, K, Dm)
    if weights is not None:
        w = _vector(weights, "weights")
        if w.size != K:
            raise ValueError(f"weights has {w.size} entries but means has {K} components: pass weights_.")
        _check_all_finite(w, "weights", "pass the model's weights_.")
        if (w < 0).any():
            raise ValueError("weights must be >= 0: pass the model's weights_.")
    else:
        w = None

    if labels is not None:
        lab = np.asarray(labels)
        if lab.ndim != 1 or lab.shape[0] != n:
            raise ValueError(
                f"labels has shape {lab.shape} but X has {n} rows: pass one label per row of X."
            )
    if is_anomaly is not None:
        anom_all = _bool_vector(is_anomaly, "is_anomaly", n, "X")

    rows, idx = _sample_rows(X, max_points, rng)
    _check_all_finite(rows, "X", "drop or impute rows with NaN/inf before plotting.")
    W, origin, axis_labels = projection_axes(rows)
    P = (rows - origin) @ W
    mu_p = (mu - origin) @ W
    cov_p = np.einsum("di,kde,ej->kij", W, cov_full, W)

    fig = _new_figure()
    ax = fig.subplots()
    comp_colours = _category_colours(K)
    handles = []

    if labels is not None:
        lab_s = lab if idx is None else lab[idx]
        uniq = np.unique(lab_s)
        is_comp = bool(
            np.issubdtype(lab_s.dtype, np.integer) and uniq.size and uniq.min() >= 0 and uniq.max() < K
        )
        colours = comp_colours if is_comp else _category_colours(uniq.size)
        for j, u in enumerate(uniq):
            m = lab_s == u
            c = colours[int(u)] if is_comp else colours[j]
            ax.scatter(P[m, 0], P[m, 1], s=6, color=c, alpha=0.45, linewidths=0, rasterized=True)
        if uniq.size <= 12:
            handles += [
                Line2D([], [], ls="none", marker="o", ms=6, alpha=0.8,
                       color=comp_colours[int(u)] if is_comp else colours[j],
                       label=f"label {u}")
                for j, u in enumerate(uniq)
            ]
    else:
        ax.scatter(P[:, 0], P[:, 1], s=6, color=_GREY, alpha=0.4, linewidths=0, rasterized=True)
        handles.append(Line2D([], [], ls="none", marker="o", ms=6, color=_GREY, label="data"))

    if is_anomaly is not None:
        anom = anom_all if idx is None else anom_all[idx]
        if anom.any():
            ax.scatter(P[anom, 0], P[anom, 1], s=22, marker="x", color=_BLACK, linewidths=1.0,
                       zorder=4)
        handles.append(Line2D([], [], ls="none", marker="x", ms=7, color=_BLACK,
                              label=f"anomaly ({int(anom.sum()):,} shown)"))

    for k in range(K):
        c = comp_colours[k]
        for n_std, ls in ((1.0, "-"), (2.0, "--")):
            width, height, angle = ellipse_geometry(cov_p[k], n_std)
            ax.add_patch(Ellipse(tuple(mu_p[k]), width, height, angle=angle, fill=False,
                                 edgecolor=c, lw=2.0, ls=ls, zorder=5))
        ax.plot(*mu_p[k], marker="P", ms=10, color=c, mec=_BLACK, mew=0.8, zorder=6)
        text = f"{k}" if w is None else f"{k} ({w[k]:.2f})"
        ax.annotate(text, mu_p[k], xytext=(6, 6), textcoords="offset points", fontsize=9,
                    fontweight="bold", zorder=7,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=c, alpha=0.8))
    handles += [
        Line2D([], [], color=_BLACK, lw=2.0, ls="-", label="1-sigma ellipse"),
        Line2D([], [], color=_BLACK, lw=2.0, ls="--", label="2-sigma ellipse"),
        Line2D([], [], ls="none", marker="P", ms=9, color="white", mec=_BLACK,
               label="component mean: k (weight)" if w is not None else "component mean: k"),
    ]
    ax.autoscale_view()
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    if Dm == 1:
        ax.set_yticks([])  # the padding axis carries no information
    shown = P.shape[0]
    sample_note = f"all {n:,} rows" if idx is None else f"random {shown:,} of {n:,} rows"
    ax.set_title(f"{K}-component {covariance_type} mixture, D = {Dm} ({sample_note})")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize="small", loc="best", framealpha=0.85)
    return _save_atomic(fig, path)
