"""Run reports: PNG plots in the run's report folder and Prefect artifacts.

Artifacts use stable keys so the versions of one kind of report stay
together in the Prefect UI: ``model-selection``, ``fit-summary``,
``partition-anomalies``, ``scoring-summary``.
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings
from pathlib import Path

import numpy as np
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipeline import plots


def report_dir(workdir, name: str, explicit: str | None = None) -> Path:
    """``explicit`` or ``<workdir>/report/<name>-<UTC time>``, created."""
    if explicit:
        path = Path(explicit)
    else:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = Path(workdir) / "report" / f"{name}-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fmt(x, digits=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isinf(x) or math.isnan(x):
            return str(x)
        return f"{x:,.{digits}f}"
    return str(x)


def selection_markdown(table: list[dict], selected: dict, criterion: str, trim: dict | None) -> str:
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
    lines += [
        "| K | covariance | BIC | AIC | held-out log-lik / row | parameters | iterations | status |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        mark = " **←**" if (r["n_components"], r["covariance_type"]) == (
            selected["n_components"], selected["covariance_type"]) else ""
        lines.append(
            f"| {r['n_components']} | {r['covariance_type']} | {_fmt(r.get('bic'))} | "
            f"{_fmt(r.get('aic'))} | {_fmt(r.get('heldout_loglik'), 4)} | "
            f"{_fmt(r.get('n_parameters'))} | {_fmt(r.get('n_iter'))} | "
            f"{r.get('status')}{mark} |"
        )
    return "\n".join(lines) + "\n"


def selection_report(table, selected, criterion, out: Path, trim: dict | None = None) -> dict:
    md = selection_markdown(table, selected, criterion, trim)
    (out / "model_selection.md").write_text(md)
    plot_rows = [
        {k: (r.get(k) if r.get("status") == "ok" else None) if k in ("bic", "aic", "heldout_loglik") else r[k]
         for k in ("n_components", "covariance_type", "bic", "aic", "heldout_loglik")}
        for r in table
    ]
    png = plots.plot_selection(plot_rows, out / "selection.png", criterion="bic" if criterion == "heldout" else criterion,
                               selected=(selected["n_components"], selected["covariance_type"]))
    create_markdown_artifact(key="model-selection", markdown=md,
                             description="BIC / AIC / held-out log-likelihood per candidate")
    return {"markdown": str(out / "model_selection.md"), "selection_plot": str(png)}


def fit_report(model_dir: str, data: str, lower_bounds: list, scores_sample: str | None,
               threshold: dict, out: Path, *, tol: float | None = None, max_points: int = 20_000) -> dict:
    from gmm_engine import load_model, open_zarr_array
    from gmm_engine.npy import load_npy_bytes
    from gmm_engine.scoring import score_rows

    model, _ = load_model(model_dir)
    paths = {}
    if lower_bounds:
        paths["loglik_plot"] = str(plots.plot_loglik_trace(
            lower_bounds, out / "loglik.png", tol=tol if tol else None))  # tol=0: no line to draw
    if scores_sample:
        s = load_npy_bytes(Path(scores_sample).read_bytes())
        paths["score_histogram"] = str(plots.plot_score_histogram(
            s, threshold["threshold"], out / "scores.png",
            title=f"Training log-likelihood (sample of {len(s):,} rows) and anomaly threshold"))
    # a uniform sample of training rows for the projection, read chunk by chunk
    z = open_zarr_array(data)
    n = z.shape[0]
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
    X = z.get_orthogonal_selection((idx, slice(None))).astype(np.float64)
    # The rows come from the training array itself, so its names are the model's; the numpy
    # sample has lost them, and the engine would warn that X has no feature names.
    fitted = getattr(model, "feature_names_in_", None)
    names = z.attrs.get("feature_names")
    if fitted is not None and names is not None and list(names) != list(fitted):
        raise ValueError(f"{data} has features {list(names)}, but the model {model_dir} was fitted on "
                         f"{list(fitted)}: report on the data the model was fitted on.")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
        loglik, labels, _ = score_rows(model, X)
    flagged = loglik <= threshold["threshold"]
    paths["projection_plot"] = str(plots.plot_projection(
        X, model.means_, model.covariances_, model.covariance_type, out / "projection.png",
        labels=labels, is_anomaly=flagged, weights=model.weights_, max_points=max_points))
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
        *[f"- plot: `{p}`" for p in paths.values()],
    ])
    create_markdown_artifact(key="fit-summary", markdown=md, description="EM fit and anomaly threshold")
    return paths


def scoring_report(results: list[dict], out: Path, *, model_version: str, threshold: float | None) -> dict:
    rows = [
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
    if rows:
        create_table_artifact(key="partition-anomalies", table=rows,
                              description=f"Anomalies per partition, model {model_version}")
    scored = [r for r in results if r["status"] == "scored"]
    failed = [r for r in results if r["status"] == "failed"]
    md = "\n".join([
        "# Scoring run",
        "",
        f"- model version: `{model_version}` (threshold {threshold})",
        f"- partitions scored: {len(scored)}, failed: {len(failed)}, "
        f"skipped (scored elsewhere): {sum(r['status'] == 'skipped' for r in results)}",
        f"- rows scored: {sum(r['n_rows'] for r in scored):,}, anomalies: {sum(r['n_anomalies'] for r in scored):,}",
        *(["", "## Failed partitions", ""] + [f"- `{r['partition_id']}`: {r['error']}" for r in failed] if failed else []),
    ])
    (out / "scoring.md").write_text(md + "\n")
    create_markdown_artifact(key="scoring-summary", markdown=md, description="Scoring run summary")
    return {"markdown": str(out / "scoring.md")}
