"""Flows that build models: ``initialize``, ``fit`` and ``select-model``."""


import contextlib
from dataclasses import asdict
from pathlib import Path

from prefect import flow
from prefect.logging import get_run_logger

from pipeline.cluster import TLS, cluster
from pipeline.selection import choose
from pipeline.workspace import Workspace

from . import reports
from .config import ClusterConfig, FitConfig, SelectConfig
from .tasks import (
    evaluate_task,
    fit_task,
    initialize_task,
    prepare_selection_task,
    register_task,
    run_bounded,
)


@contextlib.contextmanager
def flow_cluster(cfg: ClusterConfig, workdir: Path):
    """Start or reach the cluster for a flow; yield what tasks need to connect.

    Relative TLS file paths are taken inside ``workdir``, like every path of a config.
    """
    cfg = cfg.with_tls_in(workdir)
    tls = TLS(**{k: (str(v) if v is not None and k != "require_encryption" else v)
                 for k, v in cfg.tls.model_dump().items()}) if cfg.tls else None
    with cluster(cfg.address, tls=tls, timeout=cfg.connect_timeout, n_workers=cfg.n_workers,
                 threads_per_worker=cfg.threads_per_worker, memory_limit=cfg.memory_limit,
                 dashboard_address=cfg.dashboard_address) as handle:
        get_run_logger().info("Dask scheduler %s, dashboard %s", handle.address, handle.dashboard_link)
        yield {"address": handle.address, "tls": asdict(tls) if tls else None,
               "timeout": cfg.connect_timeout, "dashboard": handle.dashboard_link}


def _run_name(config: FitConfig) -> str:
    m = config.model
    return config.run_name or f"K{m.n_components}-{m.covariance_type}"


@flow(name="initialize")
def initialize_flow(config: FitConfig) -> str:
    """Initial parameters (``init_params``, best of ``n_init``) saved under checkpoints/<run>/init."""
    ws = Workspace(config.workdir).ensure()
    data = config.resolve(config.data, "data/train.zarr")
    out = ws.checkpoints / _run_name(config) / "init"
    with flow_cluster(config.cluster, config.workdir) as cl:
        return initialize_task(data, config.model.estimator_params(), str(out), cl)


@flow(name="fit")
def fit_flow(config: FitConfig, resume: bool = False, init_dir: str | None = None,
             report_to: str | None = None, progress: bool = False) -> dict:
    """EM from an initialisation with a checkpoint per iteration; calibrate, register, report.

    With ``resume`` the fit continues from the newest checkpoint of the
    same run (same data and parameters) and ends where an uninterrupted
    fit would.  ``progress`` shows a bar over EM iterations with the
    current mean log-likelihood.
    """
    logger = get_run_logger()
    ws = Workspace(config.workdir).ensure()
    data = config.resolve(config.data, "data/train.zarr")
    params = config.model.estimator_params()
    ckpt = ws.checkpoints / _run_name(config)
    fit_params = {**params, "verbose": 1} if progress else params
    with flow_cluster(config.cluster, config.workdir) as cl:
        if init_dir is None:
            existing = ckpt / "init"
            if resume and (existing / "model.json").is_file():
                init_dir = str(existing)
                logger.info("resuming: reusing the initialisation in %s", existing)
            else:
                init_dir = initialize_task(data, params, str(existing), cl)
        fit = fit_task(data, fit_params, str(ckpt), init_dir, resume, str(ckpt / "final"), cl)
        reg = register_task(
            fit["model_dir"], data, str(ws.models), config.anomaly.contamination, config.make_current,
            {"fit": {k: fit[k] for k in ("n_iter", "converged", "lower_bound", "resumed_from")},
             "config": config.model_dump(mode="json")},
            cl, str(ckpt),
        )
        out = reports.report_dir(ws.root, "fit", report_to)
        plots = reports.fit_report(reg["model_dir"], data, fit["lower_bounds"], reg["scores_sample"],
                                   reg["threshold"], out, tol=config.model.tol)
    logger.info("model %s registered%s", reg["version"], " as current" if config.make_current else "")
    return {**fit, **reg, "plots": plots, "report_dir": str(out), "data": data}


@flow(name="select-model")
def select_model_flow(config: SelectConfig, report_to: str | None = None, progress: bool = False) -> dict:
    """Fit a grid of (K, covariance type); choose by BIC, AIC or held-out log-likelihood.

    At most ``config.max_parallel`` candidates are fitted at once; ``progress``
    shows a bar over the candidates.
    """
    logger = get_run_logger()
    ws = Workspace(config.workdir).ensure()
    data = config.resolve(config.data, "data/train.zarr")
    base = config.model.estimator_params()
    grid = [(k, ct) for ct in config.grid.covariance_types for k in sorted(set(config.grid.n_components))]
    work = ws.root / "selection"
    with flow_cluster(config.cluster, config.workdir) as cl:
        prep = prepare_selection_task(data, str(work), {
            "holdout_fraction": config.holdout_fraction,
            "sample_rows": config.sample_rows,
            "contamination": config.anomaly.contamination,
            "trim": config.trim,
            "probe_params": {**base, "n_components": max(config.grid.n_components), "covariance_type": "full"},
            "seed": base.get("random_state") or 0,
        }, cl)
        # bounded: each candidate is an EM fit on the cluster; a grid of 28 at once only thrashes it
        table = run_bounded(
            lambda kc: evaluate_task.submit(prep["train"], prep["holdout"], kc[0], kc[1], base,
                                            str(work / "candidates"), cl),
            grid, config.max_parallel, desc="candidates" if progress else None, unit="candidate",
            describe=lambda r: {"last": f"K={r['n_components']} {r['covariance_type']}", "status": r["status"]},
        )
        winner = choose(table, config.criterion)
        logger.info("selected K=%d covariance_type=%s by %s", winner["n_components"],
                    winner["covariance_type"], config.criterion)
        reg = None
        if config.make_current:
            reg = register_task(
                winner["model_dir"], data, str(ws.models), config.anomaly.contamination, True,
                {"selection": {"criterion": config.criterion, "winner": winner}}, cl, str(work),
            )
        out = reports.report_dir(ws.root, "select", report_to)
        paths = reports.selection_report(table, winner, config.criterion, out, trim=prep)
    return {"table": table, "selected": winner, "criterion": config.criterion,
            "selection_data": prep, "registered": reg, "report": paths, "report_dir": str(out)}
