"""Model selection plot: an information criterion against K, one line per covariance type.

The table rows are checked and normalised first (``_table_rows``: one row
per (n_components, covariance_type) pair, the criterion and the held-out
log-likelihood as floats with NaN for a failed fit), then the selected
model is resolved (``_selected_key``), then one or two panels are drawn
(``_draw_panel``): the criterion, and the held-out log-likelihood when any
row has one.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from gmm_engine import COVARIANCE_TYPES

from . import style
from .checks import check_covariance_type, check_path


def _optional_float(row, key):
    value = row.get(key)
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # sentinel: not a number at all


def _table_row(i: int, row, crit: str, seen: set) -> dict:
    """``table[i]`` checked: ``{n_components, covariance_type, value, held}``.

    ``seen`` holds the (n_components, covariance_type) pairs of the rows
    before it; this row's pair is added.
    """
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
    ctype = check_covariance_type(row["covariance_type"])
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
    return {"n_components": int(k), "covariance_type": ctype, "value": value, "held": held}


def _table_rows(table, crit: str) -> list[dict]:
    """Every row of ``table`` checked, each (n_components, covariance_type) pair once."""
    if isinstance(table, dict) or not hasattr(table, "__iter__"):
        raise ValueError(
            f"table must be a list of dicts (one per model), got {type(table).__name__}: "
            "e.g. [{'n_components': 2, 'covariance_type': 'full', 'bic': ..., 'aic': ...}]."
        )
    table = list(table)
    if not table:
        raise ValueError("table is empty: run model selection first; there is nothing to plot.")
    seen: set = set()
    return [_table_row(i, row, crit, seen) for i, row in enumerate(table)]


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


def _draw_panel(axis, rows, field: str, ylabel: str, key, sel_label: str) -> None:
    """One line per covariance type of ``row[field]`` against K, the selected model starred."""
    for ctype in COVARIANCE_TYPES:
        pts = sorted(
            (r["n_components"], r[field])
            for r in rows
            if r["covariance_type"] == ctype and math.isfinite(r[field])
        )
        if not pts:
            continue
        colour, marker = style.TYPE_STYLE[ctype]
        xs, ys = zip(*pts)
        axis.plot(xs, ys, color=colour, marker=marker, lw=1.8, ms=6, label=ctype)
    sel = [r[field] for r in rows if (r["n_components"], r["covariance_type"]) == key]
    if sel and math.isfinite(sel[0]):
        axis.plot(
            [key[0]], [sel[0]], linestyle="none", marker="*", ms=20, mfc="none",
            mec=style.BLACK, mew=1.8, label=sel_label, zorder=5,
        )
    axis.set_ylabel(ylabel)
    axis.grid(True, alpha=0.3)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.legend(title="covariance type", fontsize="small", title_fontsize="small", loc="best")


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
    path = check_path(path)
    crit = str(criterion).lower()
    if crit not in ("bic", "aic"):
        raise ValueError(f"criterion must be 'bic' or 'aic', got {criterion!r}: pass criterion='bic'.")
    rows = _table_rows(table, crit)
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

    fig = style.new_figure(style.FIGSIZE_TWO_PANELS if has_held else style.FIGSIZE)
    if has_held:
        ax, ax_held = fig.subplots(2, 1, sharex=True)
    else:
        ax, ax_held = fig.subplots(1, 1), None
    _draw_panel(ax, rows, "value", f"{crit.upper()} (lower is better)", key, sel_label)
    if has_held:
        _draw_panel(ax_held, rows, "held", "held-out log-likelihood\nper row, nats (higher is better)",
                    key, sel_label)
    (ax_held or ax).set_xlabel("number of components K")

    missing = len(rows) - len(finite)
    title = f"Model selection by {crit.upper()}"
    if missing:
        title += f" ({missing} model(s) without a finite {crit.upper()} not shown)"
    ax.set_title(title)
    return style.save_png(fig, path)
