"""The ``fit`` flow: checkpointed EM from an initialisation, the anomaly threshold, registration."""

import io
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from pipeline.cluster import ClusterHandle
from pipeline.data import array_bytes

from .artifacts import publish_markdown
from .cluster import flow_cluster, task_client
from .config import FitConfig, ModelConfig
from .flow_parameters import flow
from .initialize_flow import initialize_task, run_name


@task(name="fit-em", cache_policy=NO_CACHE)
def fit_task(data: str, model: ModelConfig, checkpoint_dir: str, init_dir: str | None, resume: bool,
             out_dir: str, cluster: ClusterHandle | None, progress: bool = False) -> dict:
    """EM with a checkpoint per iteration; the fitted model is saved to ``out_dir``."""
    from pipeline.training import fit_model

    logger = get_run_logger()

    def report(state):
        logger.info("EM iteration %d: mean log-likelihood %.6f (change %.3g, %.2f s)",
                    state.n_iter, state.lower_bound, state.change, state.seconds)

    params = {**model.estimator_params(), **({"verbose": 1} if progress else {})}
    t0 = time.perf_counter()
    with task_client(cluster):
        result = fit_model(data, params, checkpoint_dir=checkpoint_dir, init_dir=init_dir,
                           resume=resume, on_iteration=report)
    gm = result.model
    gm.save(out_dir, overwrite=True)
    return {
        "model_dir": out_dir,
        "n_iter": gm.n_iter_,
        "passes": gm.n_passes_,
        "seconds": time.perf_counter() - t0,
        "converged": bool(gm.converged_),
        "lower_bound": gm.lower_bound_,
        "lower_bounds": list(gm.lower_bounds_),
        "resumed_from": result.resumed_from,
    }


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(model_dir: str, data: str, models_root: str, contamination: float,
                  make_current: bool, extra: dict, cluster: ClusterHandle | None, work_dir: str,
                  reason: str) -> dict:
    """Calibrate the threshold, register the model; the training-score sample goes to ``work_dir``.

    The sample (for the report's histogram) is not written into the
    registered model's directory: a published model is never modified.
    """
    import numpy as np

    from gmm_engine import load_model
    from gmm_engine.atomic import write_bytes
    from pipeline.registry import ModelRegistry
    from pipeline.training import register_model

    model, _ = load_model(model_dir)
    with task_client(cluster):
        version, thr = register_model(model, data, ModelRegistry(models_root), contamination=contamination,
                                      make_current=make_current, extra=extra, reason=reason)
    sample_path = Path(work_dir) / f"training-scores-{version}.npy"
    buf = io.BytesIO()
    np.save(buf, np.asarray(thr.sample, dtype=np.float64), allow_pickle=False)
    write_bytes(sample_path, buf.getvalue())
    return {"version": version, "model_dir": str(Path(models_root) / version),
            "threshold": thr.to_dict(), "scores_sample": str(sample_path)}


@flow(name="fit")
def fit_flow(config: FitConfig, resume: bool = False, init_dir: str | None = None,
             report_to: str | None = None, progress: bool = False) -> dict:
    """EM from an initialisation with a checkpoint per iteration; calibrate, register, report.

    With ``resume`` the fit continues from the newest checkpoint of the
    same run (same data and parameters) and ends where an uninterrupted
    fit would.  ``progress`` shows a bar over EM iterations with the
    current mean log-likelihood.
    """
    from gmm_engine.atomic import write_json
    from pipeline.reports import fit_report, fit_summary

    logger = get_run_logger()
    ws = config.workspace.ensure()
    data = ws.resolve(config.data, ws.train)
    ckpt = ws.checkpoint_run(run_name(config))
    with flow_cluster(config.cluster, config.workdir, data_bytes=array_bytes(data)) as cluster:
        if init_dir is None:
            existing = ckpt / "init"
            if resume and (existing / "model.json").is_file():
                init_dir = str(existing)
                logger.info("resuming: reusing the initialisation in %s", existing)
            else:
                init_dir = initialize_task(data, config.model, str(existing), cluster)
        fit = fit_task(data, config.model, str(ckpt), init_dir, resume, str(ckpt / "final"), cluster, progress)
        reg = register_task(
            fit["model_dir"], data, str(ws.models), config.anomaly.contamination, config.make_current,
            {"fit": {k: fit[k] for k in ("n_iter", "passes", "converged", "lower_bound", "resumed_from")},
             "config": config.model_dump(mode="json")},
            cluster, str(ckpt), "fitted by `gmm fit`",
        )
        out = ws.run_report("fit", report_to)
        report = fit_report(reg["model_dir"], data, fit["lower_bounds"], reg["scores_sample"],
                            reg["threshold"], out, tol=config.model.tol)
    write_json(out / "summary.json", fit_summary(fit, reg, config.model.acceleration, config.model.init_size))
    publish_markdown("fit-summary", report.markdown, "EM fit and anomaly threshold")
    logger.info("model %s registered%s", reg["version"], " as current" if config.make_current else "")
    return {**fit, **reg, "plots": report.files, "report_dir": str(out), "data": data}
