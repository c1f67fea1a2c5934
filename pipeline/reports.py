"""What a run reports: markdown tables, plots in its report folder, rows for artifacts.

Pure functions over paths and result values; the flows publish what they
return as Prefect artifacts (``flows/artifacts.py``).  Each function
writes its files into the run's report folder (``Workspace.run_report``)
and returns the paths and texts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmm_engine.atomic import write_text


#: rows of the training data drawn for the projection plot
PROJECTION_POINTS = 20_000


def fmt_number(x, digits=1) -> str:
    """A table cell: thousands separators, ``digits`` decimals, ``-`` for missing."""
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isinf(x) or math.isnan(x):
            return str(x)
        return f"{x:,.{digits}f}"
    return str(x)


@dataclass(frozen=True)
class Report:
    """A run's report: its markdown text and the files written (name -> path)."""

    markdown: str
    files: dict


# ---------------------------------------------------------------------------
# model selection


def selection_markdown(table: list[dict], selected: dict, criterion: str, trim: dict | None,
                       notes=()) -> str:
    """The candidates table, the winner marked, with how the rows were trimmed and ``notes`` (markdown lines)."""
    rows = sorted(table, key=lambda r: (r["covariance_type"], r["n_components"]))
    lines = [
        f"# Model selection ({criterion.upper()})",
        "",
        f"Selected: **K = {selected['n_components']}, covariance_type = "
        f"{selected['covariance_type']}**.",
        "",
    ]
    if trim and trim.get("trim_threshold") is not None:
        lines += [
            f"Compared on {trim['n_train']:,} training and {trim['n_holdout']:,} held-out rows after "
            f"trimming {trim['n_trimmed_train']:,} + {trim['n_trimmed_holdout']:,} least likely rows "
            "(contamination) so that anomalies do not earn a component of their own.",
            "",
        ]
    lines += list(notes)
    lines += [
        "| K | covariance | BIC | AIC | held-out log-lik / row | parameters | iterations | status |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        mark = " **←**" if (r["n_components"], r["covariance_type"]) == (
            selected["n_components"], selected["covariance_type"]) else ""
        lines.append(
            f"| {r['n_components']} | {r['covariance_type']} | {fmt_number(r.get('bic'))} | "
            f"{fmt_number(r.get('aic'))} | {fmt_number(r.get('heldout_loglik'), 4)} | "
            f"{fmt_number(r.get('n_parameters'))} | {fmt_number(r.get('n_iter'))} | "
            f"{r.get('status')}{mark} |"
        )
    return "\n".join(lines) + "\n"


def selection_report(table, selected, criterion, out: Path, trim: dict | None = None, notes=()) -> Report:
    """``model_selection.md`` and ``selection.png`` in ``out``; ``notes`` are markdown lines above the table."""
    from . import plots

    md = selection_markdown(table, selected, criterion, trim, notes)
    write_text(out / "model_selection.md", md)
    plot_rows = [
        {k: (r.get(k) if r.get("status") == "ok" else None) if k in ("bic", "aic", "heldout_loglik") else r[k]
         for k in ("n_components", "covariance_type", "bic", "aic", "heldout_loglik")}
        for r in table
    ]
    png = plots.plot_selection(plot_rows, out / "selection.png",
                               criterion="bic" if criterion == "heldout" else criterion,
                               selected=(selected["n_components"], selected["covariance_type"]))
    return Report(md, {"markdown": str(out / "model_selection.md"), "selection_plot": str(png)})


# ---------------------------------------------------------------------------
# a fit
#
# The engine (numba, dask) and matplotlib are imported in the functions that
# need them: the other commands import this module for their text reports
# and should not pay a second or two for a fit's plots.


def training_sample(data: str, max_points: int = PROJECTION_POINTS, seed: int = 0) -> tuple[np.ndarray, int]:
    """A uniform sample of training rows (float64), read chunk by chunk, and the number of rows it is drawn from."""
    from gmm_engine import open_zarr_array

    z = open_zarr_array(data)
    n = z.shape[0]
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_points), replace=False))
    return z.get_orthogonal_selection((idx, slice(None))).astype(np.float64), n


def _check_same_features(model, data: str, model_dir: str) -> None:
    from gmm_engine import open_zarr_array

    fitted = getattr(model, "feature_names_in_", None)
    names = open_zarr_array(data).attrs.get("feature_names")
    if fitted is not None and names is not None and list(names) != list(fitted):
        raise ValueError(f"{data} has features {list(names)}, but the model {model_dir} was fitted on "
                         f"{list(fitted)}: report on the data the model was fitted on.")


def fit_report(model_dir: str, data: str, lower_bounds: list, scores_sample: str | None,
               threshold: dict, out: Path, *, tol: float | None = None,
               max_points: int = PROJECTION_POINTS) -> Report:
    """The log-likelihood trace, the training-score histogram and a 2-D projection, with a summary."""
    from gmm_engine import load_model
    from gmm_engine.npy import load_npy_bytes
    from gmm_engine.scoring import score_rows

    from . import plots

    model, _ = load_model(model_dir)
    files = {}
    if lower_bounds:
        files["loglik_plot"] = str(plots.plot_loglik_trace(
            lower_bounds, out / "loglik.png", tol=tol if tol else None))  # tol=0: no line to draw
    if scores_sample:
        s = load_npy_bytes(Path(scores_sample).read_bytes())
        files["score_histogram"] = str(plots.plot_score_histogram(
            s, threshold["threshold"], out / "scores.png",
            title=f"Training log-likelihood (sample of {len(s):,} rows) and anomaly threshold"))
    _check_same_features(model, data, model_dir)
    X, n_rows = training_sample(data, max_points)
    # The rows come from the training array itself, so its names are the model's; the numpy
    # sample has lost them, and the engine would warn that X has no feature names.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
        loglik, labels, _ = score_rows(model, X)
    files["projection_plot"] = str(plots.plot_projection(
        X, model.means_, model.covariances_, model.covariance_type, out / "projection.png",
        labels=labels, is_anomaly=loglik <= threshold["threshold"], weights=model.weights_,
        max_points=max_points, sample_of=n_rows))
    md = "\n".join([
        "# Fit summary",
        "",
        f"- model: `{model_dir}`",
        f"- K = {model.n_components}, covariance_type = {model.covariance_type}",
        f"- iterations: {model.n_iter_}, converged: {model.converged_}",
        f"- final mean log-likelihood (lower bound): {model.lower_bound_:.6f}",
        f"- anomaly threshold: {threshold['threshold']:.6f} (contamination {threshold['contamination']}, "
        f"{threshold['n_flagged']:,} of {threshold['n_rows']:,} training rows flagged)",
        "",
        *[f"- plot: `{p}`" for p in files.values()],
    ])
    return Report(md, files)


def fit_summary(fit: dict, registered: dict, acceleration, init_size=None) -> dict:
    """``summary.json`` of a fit: the work it took (every pass over the data) and where it ended.

    ``init_size`` (the rows of the sample the start was found on; None:
    every row) says how the passes were saved, beside ``acceleration``.
    """
    return {
        "version": registered["version"],
        "passes": int(fit["passes"]),
        "n_iter": int(fit["n_iter"]),
        "seconds": round(float(fit["seconds"]), 3),
        "lower_bound": fit["lower_bound"] if math.isfinite(fit["lower_bound"]) else None,
        "converged": bool(fit["converged"]),
        "acceleration": acceleration,
        "init_size": init_size,
        "resumed_from": int(fit["resumed_from"]),
        "threshold": registered["threshold"],
    }


# ---------------------------------------------------------------------------
# a scoring run


def anomaly_rows(results: list[dict]) -> list[dict]:
    """One table row per partition of a scoring run."""
    return [
        {
            "partition": r["partition_id"],
            "status": r["status"],
            "rows": r.get("n_rows", 0),
            "anomalies": r.get("n_anomalies", 0),
            "anomaly %": round(100.0 * r["n_anomalies"] / r["n_rows"], 3) if r.get("n_rows") else None,
            "mean log-lik": round(r["mean_loglik"], 4) if r.get("mean_loglik") is not None else None,
            "error": r.get("error") or "",
        }
        for r in results
    ]


def _p(drift: dict | None, test: str):
    t = (drift or {}).get(test) or {}
    return None if t.get("p_adjusted") is None else float(f"{t['p_adjusted']:.3g}")


def drift_rows(results: list[dict]) -> list[dict]:
    """One table row per scored partition: its drift tests and verdict."""
    rows = []
    for r in results:
        d = r.get("drift")
        if r["status"] != "scored" or d is None:
            continue
        seq = d.get("sequential") or {}
        rows.append({
            "partition": r["partition_id"],
            "rows": r["n_rows"],
            "anomaly %": round(100.0 * r["n_anomalies"] / r["n_rows"], 3) if r["n_rows"] else None,
            "p anomaly rate": _p(d, "anomaly_rate"),
            "p log-lik (KS)": _p(d, "loglik_ks"),
            "p occupancy (G)": _p(d, "occupancy_g"),
            "CUSUM": None if seq.get("statistic") is None else round(seq["statistic"], 3),
            "drifted": bool(d["drifted"] or d.get("sequential_alarm")),
            "why": ", ".join(d.get("reasons", [])),
        })
    return rows


def _update_lines(update: dict | None) -> list[str]:
    if update is None:
        return []
    lines = ["", "## Model update", "",
             f"- from `{update['parent']}` ({update['rule']}): {len(update['partitions'])} partitions, "
             f"{update['n_rows']:,} rows absorbed; held back: `{update['held_back']}`",
             f"- candidate: `{update['version']}`" if update["version"] else "- no candidate registered",
             f"- {update['reason']}"]
    if update.get("recommendation"):
        lines.append(f"- **{update['recommendation']}**")
    return lines


def scoring_report(results: list[dict], out: Path, *, model_version: str, threshold: float | None,
                   update: dict | None = None) -> Report:
    """``scoring.md`` in ``out``: counts of the run, drifted and failed partitions, the model update."""
    scored = [r for r in results if r["status"] == "scored"]
    failed = [r for r in results if r["status"] == "failed"]
    drifted = [row for row in drift_rows(results) if row["drifted"]]
    md = "\n".join([
        "# Scoring run",
        "",
        f"- model version: `{model_version}` (threshold {threshold})",
        f"- partitions scored: {len(scored)}, failed: {len(failed)}, "
        f"skipped (scored elsewhere): {sum(r['status'] == 'skipped' for r in results)}",
        f"- rows scored: {sum(r['n_rows'] for r in scored):,}, anomalies: {sum(r['n_anomalies'] for r in scored):,}",
        *(["", "## Drifted partitions", ""] + [f"- `{r['partition']}`: {r['why']}" for r in drifted] if drifted else []),
        *(["", "## Failed partitions", ""] + [f"- `{r['partition_id']}`: {r['error']}" for r in failed] if failed else []),
        *_update_lines(update),
    ])
    write_text(out / "scoring.md", md + "\n")
    return Report(md, {"markdown": str(out / "scoring.md")})


# ---------------------------------------------------------------------------
# an ingest


def ingest_markdown(path: str, report: dict) -> str:
    """The validation report of one ingest as a markdown table."""
    r = report
    rows = [
        ("source", f"`{r['source']}` ({r['format']})"),
        ("written", f"`{path}`"),
        ("rows read / written", f"{r['n_rows_read']:,} / {r['n_rows_written']:,}"),
        ("bad rows (NaN / inf)", f"{r['n_bad_rows']:,} ({r['n_nan_rows']:,} / {r['n_inf_rows']:,}), "
                                 f"policy `{r['bad_rows_policy']}`"),
        ("first bad rows (0-based)", ", ".join(map(str, r["bad_row_examples"])) or "none"),
        ("features", ", ".join(f"`{n}`" for n in r["feature_names"])),
        ("dtype", r["dtype"]),
        ("non-numeric columns left out", ", ".join(f"`{c}`" for c in r["non_numeric_columns"]) or "none"),
    ]
    return "# Ingest\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


# ---------------------------------------------------------------------------
# the stream and the models


def status_rows(points, limit: int | None = None) -> list[dict]:
    """The stream in arrival order, newest last: one row per partition (``gmm status``)."""
    shown = points[-limit:] if limit else points
    rows = []
    for p in shown:
        d = p.drift or {}
        seq = d.get("sequential") or {}
        rows.append({
            "#": p.position, "partition": p.partition_id, "rows": p.n_rows,
            "mean log-lik": round(p.mean_loglik, 4) if math.isfinite(p.mean_loglik) else None,
            "anomaly %": round(100 * p.anomaly_rate, 3) if p.n_rows else None,
            "p rate": _p(d, "anomaly_rate"), "p KS": _p(d, "loglik_ks"), "p G": _p(d, "occupancy_g"),
            "CUSUM": None if seq.get("statistic") is None else round(seq["statistic"], 2),
            "drifted": "yes" if (d.get("drifted") or d.get("sequential_alarm")) else ("no" if d else "-"),
            "model": p.model_version,
        })
    return rows


def model_rows(registry) -> list[dict]:
    """Every registered version with its lineage and when and why it was (last) made current."""
    current = registry.current_version()
    promotions = {}
    for event in registry.history():
        promotions[event["version"]] = event
    rows = []
    for version in registry.versions():
        meta = registry.metadata(version)
        lineage = meta.get("lineage") or {}
        made = promotions.get(version)
        rows.append({
            "version": version, "current": version == current,
            "parent": lineage.get("parent") or ("imported" if lineage.get("imported_from") else "-"),
            "partitions": len(lineage.get("partitions", [])), "rows": lineage.get("rows"),
            "rule": lineage.get("rule") or ("fit/select" if not lineage else "-"),
            "made current": made["at"] if made else "never",
            "why": made["reason"] if made else "",
        })
    return rows


def text_table(rows: list[dict]) -> str:
    """Rows as an aligned plain-text table (for the terminal)."""
    if not rows:
        return ""
    cols = list(rows[0])
    cells = [[("" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])
