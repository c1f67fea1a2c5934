"""The ``demo`` flow: the whole product on generated data, end to end.

1. generate a mixture with known components plus injected anomalies as a
   raw Parquet file, and incoming partitions in several formats, into a
   fresh work directory; ``ingest`` it into an out-of-core Zarr array;
2. ``select-model`` on a uniform sample (trimmed for contamination) over
   the grid, by BIC; and (``config.variational``) by a Dirichlet-process
   mixture, whose used components are compared with the truth too;
3. ``initialize`` and ``fit`` the selected model on all the data
   (checkpointed EM, threshold calibrated, registered as current);
4. the stream: the incoming partitions arrive one scheduled tick at a
   time, and each tick runs ``score-partitions`` (drift tests, the
   sequential detector, and model updates under ``config.update``); from
   partition ``drift_at`` on, one component has moved by ``drift_shift`` of
   its standard deviations;
5. compare the selection with the truth, the drift verdicts with where the
   component moved, and the anomaly flags with the injected anomalies
   (before and after the model followed the move); write
   ``report/summary.json`` and the plots.

Everything runs on one embedded LocalCluster started here and shared by
the subflows (they receive its address).
"""

import math
import time

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from pipeline.data import array_bytes

from .artifacts import publish_markdown
from .cluster import flow_cluster, shared_config
from .config import (AnomalyConfig, DemoConfig, FitConfig, IngestConfig, ModelConfig, ScoreConfig, SelectConfig,
                     SelectionModelConfig)
from .fit_flow import fit_flow
from .flow_parameters import flow
from .ingest_flow import IO_RETRIES, ingest_flow
from .initialize_flow import initialize_flow
from .score_flow import score_partitions_flow
from .select_flow import select_model_flow


def _clean(x):
    """JSON-safe copy: non-finite floats become strings."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    return x


@task(name="generate-demo-data", cache_policy=NO_CACHE, **IO_RETRIES)
def demo_data_task(config: DemoConfig, progress: bool = False) -> dict:
    """The demo's raw training file, its truth and the incoming partitions, in a fresh work directory."""
    from pipeline.demo_data import write_demo_data

    d = write_demo_data(
        config.workspace.root, n_rows=config.n_rows, n_features=config.n_features,
        n_components=config.true_components, covariance_type=config.true_covariance_type,
        anomaly_fraction=config.anomaly_fraction, n_partitions=config.n_partitions,
        partition_rows=config.partition_rows, seed=config.seed, progress=progress,
        drift_at=config.drift_at, drift_shift=config.drift_shift,
    )
    return {"train": d.train_path, "truth": d.truth_path, "partitions": d.partitions,
            "feature_names": d.feature_names, "n_rows": d.n_rows, "n_anomalies": d.n_anomalies,
            "true_mixture": d.truth.to_dict()}


def _summary(config: DemoConfig, data, ingested, sel, fit, ids, metrics, stream, timings, dashboard) -> dict:
    winner = sel["selected"]
    return {
        "selected": {"n_components": winner["n_components"], "covariance_type": winner["covariance_type"],
                     "criterion": "bic", "bic": winner["bic"]},
        "truth": {"n_components": config.true_components,
                  "covariance_type": config.true_covariance_type,
                  "anomaly_fraction": config.anomaly_fraction,
                  "n_rows": data["n_rows"], "n_injected_anomalies": data["n_anomalies"]},
        "ingest": ingested["report"],
        "selection_matches_truth": (winner["n_components"] == config.true_components
                                    and winner["covariance_type"] == config.true_covariance_type),
        "selection_table": [
            {k: r.get(k) for k in ("n_components", "covariance_type", "bic", "aic", "heldout_loglik", "status")}
            for r in sel["table"]
        ],
        "selection_sample": sel["selection_data"],
        "model": {"version": fit["version"], "n_iter": fit["n_iter"], "passes": fit["passes"],
                  "converged": fit["converged"],
                  "lower_bound": fit["lower_bound"], "threshold": fit["threshold"]["threshold"],
                  "contamination": config.anomaly_fraction},
        "anomaly": metrics,
        "partitions_scored": len(ids),
        **stream,
        "plots": {**sel["report"], **fit["plots"], "stream_plot": stream.get("stream_plot")},
        "timings_seconds": {k: round(v, 2) for k, v in timings.items()},
        "dashboard": dashboard,
    }


def _variational_summary(config: DemoConfig, out: dict | None) -> dict | None:
    """The variational selection against the truth (None when the demo skipped it)."""
    if out is None:
        return None
    v = out["variational"]
    return {"n_components": v["n_components"], "fitted_n_components": v["fitted_n_components"],
            "weight_floor": v["weight_floor"], "weights": v["weights"], "seconds": v["seconds"],
            "matches_truth": v["n_components"] == config.true_components, "weights_plot": out["report"]["weights_plot"]}


def _variational_line(summary: dict) -> str:
    v = summary.get("variational")
    return "" if not v else f", variationally K={v['n_components']} of {v['fitted_n_components']}"


def _ticks(score_cfg: ScoreConfig, partitions, ws, progress: bool) -> list[str]:
    """The stream: each partition arrives in ``incoming/``, then one scheduled tick scores what is there."""
    from pipeline.demo_data import arrive

    logger = get_run_logger()
    scored = []
    for i, (pid, path, *_rest) in enumerate(partitions, start=1):
        arrive(ws.root, path)
        out = score_partitions_flow(score_cfg, report_to=str(ws.report), progress=False)
        scored += [r["partition_id"] for r in out["results"] if r["status"] == "scored"]
        update = out["update"]
        logger.info("tick %d/%d: %s scored by %s%s", i, len(partitions), pid, out["model_version"],
                    f"; update: {update['reason']}" if update else "")
    return scored


def _stream_summary(ws, partitions, original_version: str) -> dict:
    from pipeline.demo_data import evaluate_stream
    from pipeline.manifest import Manifest
    from pipeline.plots import plot_stream
    from pipeline.stream import history

    manifest = Manifest(ws.manifest)
    entries = manifest.entries()
    out = evaluate_stream(ws.root, partitions, entries, manifest.updates(), original_version)
    out["stream_plot"] = str(plot_stream(history(entries), ws.report / "stream.png"))
    return out


@flow(name="demo")
def demo_flow(config: DemoConfig, progress: bool = False) -> dict:
    from gmm_engine.atomic import write_json
    from pipeline.demo_data import anomaly_metrics

    logger = get_run_logger()
    ws = config.workspace.ensure()
    timings = {}
    t0 = time.perf_counter()
    data = demo_data_task(config, progress)
    timings["generate"] = time.perf_counter() - t0
    ws.ensure()
    t = time.perf_counter()
    ingested = ingest_flow(IngestConfig(workdir=ws.root, source=data["train"]), progress=progress)
    timings["ingest"] = time.perf_counter() - t
    train = ingested["path"]
    anomaly = AnomalyConfig(contamination=config.anomaly_fraction)
    base = ModelConfig(max_iter=config.max_iter, random_state=config.seed)
    candidates = SelectionModelConfig(max_iter=config.max_iter, random_state=config.seed)
    with flow_cluster(config.cluster, config.workdir, data_bytes=array_bytes(train)) as cluster:
        # the subflows reach the cluster started (or reached) here, with the same TLS files
        shared = shared_config(cluster, config.cluster, config.workdir)
        t = time.perf_counter()
        sel = select_model_flow(SelectConfig(
            workdir=ws.root, data=train, cluster=shared, grid=config.grid, criterion="bic",
            sample_rows=config.select_sample_rows, model=candidates, anomaly=anomaly, make_current=False,
        ), report_to=str(ws.report / "select"), progress=progress)  # each subflow's summary.json kept
        timings["select"] = time.perf_counter() - t
        variational = None
        if config.variational is not None:
            t = time.perf_counter()
            variational = select_model_flow(SelectConfig(
                workdir=ws.root, data=train, cluster=shared, method="variational", variational=config.variational,
                sample_rows=config.select_sample_rows, model=candidates, anomaly=anomaly, make_current=False,
            ), report_to=str(ws.report / "variational"), progress=False)
            timings["select_variational"] = time.perf_counter() - t
        winner = sel["selected"]
        fit_cfg = FitConfig(
            workdir=ws.root, data=train, cluster=shared, anomaly=anomaly, make_current=True,
            model=base.model_copy(update={"n_components": winner["n_components"],
                                          "covariance_type": winner["covariance_type"]}),
        )
        t = time.perf_counter()
        init_dir = initialize_flow(fit_cfg)
        timings["initialize"] = time.perf_counter() - t
        t = time.perf_counter()
        fit = fit_flow(fit_cfg, init_dir=init_dir, report_to=str(ws.report / "fit"), progress=progress)
        timings["fit"] = time.perf_counter() - t
        t = time.perf_counter()
        score_cfg = ScoreConfig(workdir=ws.root, cluster=shared, update=config.update)
        ids = _ticks(score_cfg, data["partitions"], ws, progress)
        timings["stream"] = time.perf_counter() - t
    metrics = anomaly_metrics(ws.root, ids)
    stream = _stream_summary(ws, data["partitions"], fit["version"])
    timings["total"] = time.perf_counter() - t0
    summary = _summary(config, data, ingested, sel, fit, ids, metrics, stream, timings,
                       cluster.dashboard_link if cluster is not None else None)
    summary["variational"] = _variational_summary(config, variational)
    write_json(ws.report / "summary.json", _clean(summary))
    publish_markdown("demo-summary", (
        f"# Demo\n\nSelected K={winner['n_components']} {winner['covariance_type']} "
        f"(truth K={config.true_components} {config.true_covariance_type}){_variational_line(summary)}; anomaly precision "
        f"{metrics['precision']:.3f}, recall {metrics['recall']:.3f} over {metrics['n_rows']:,} rows "
        f"in {len(ids)} partitions; drift truth at {stream['drift']['truth_at']}, detected at "
        f"{stream['drift']['detected_at']}, {stream['drift']['false_alarms']} false alarms.\n"))
    logger.info("demo finished in %.1f s; summary in %s", timings["total"], ws.report / "summary.json")
    return summary
