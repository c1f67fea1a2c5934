"""The ``select-model`` flow: a grid of (K, covariance type), chosen by BIC, AIC or held-out fit."""

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from pipeline.cluster import ClusterHandle
from pipeline.data import array_bytes

from .artifacts import publish_markdown
from .cluster import flow_cluster, task_client
from .concurrency import run_bounded
from .config import ModelConfig, SelectConfig
from .fit_flow import register_task


@task(name="prepare-selection-data", cache_policy=NO_CACHE)
def prepare_selection_task(data: str, out_dir: str, config: SelectConfig, cluster: ClusterHandle | None) -> dict:
    """The sample, split and trimmed rows the grid is compared on (see ``pipeline.selection``)."""
    from pipeline.selection import prepare_selection_data

    base = config.model.estimator_params()
    with task_client(cluster):
        return prepare_selection_data(
            data, out_dir, holdout_fraction=config.holdout_fraction, sample_rows=config.sample_rows,
            contamination=config.anomaly.contamination, trim=config.trim,
            probe_params={**base, "n_components": max(config.grid.n_components), "covariance_type": "full"},
            seed=base.get("random_state") or 0,
        ).to_dict()


@task(name="evaluate-candidate", cache_policy=NO_CACHE)
def evaluate_task(train: str, holdout: str, n_components: int, covariance_type: str,
                  model: ModelConfig, out_dir: str, cluster: ClusterHandle | None) -> dict:
    """Fit one candidate and score it: one row of the selection table."""
    from pipeline.selection import evaluate_candidate

    with task_client(cluster):
        return evaluate_candidate(train, holdout, n_components, covariance_type, model.estimator_params(), out_dir)


@flow(name="select-model")
def select_model_flow(config: SelectConfig, report_to: str | None = None, progress: bool = False) -> dict:
    """Fit a grid of (K, covariance type); choose by BIC, AIC or held-out log-likelihood.

    At most ``config.max_parallel`` candidates are fitted at once; ``progress``
    shows a bar over the candidates.
    """
    from pipeline.reports import selection_report
    from pipeline.selection import choose

    logger = get_run_logger()
    ws = config.workspace.ensure()
    data = ws.resolve(config.data, ws.train)
    grid = [(k, ct) for ct in config.grid.covariance_types for k in sorted(set(config.grid.n_components))]
    with flow_cluster(config.cluster, config.workdir, data_bytes=array_bytes(data)) as cluster:
        prep = prepare_selection_task(data, str(ws.selection), config, cluster)
        # bounded: each candidate is an EM fit on the cluster; a grid of 28 at once only thrashes it
        table = run_bounded(
            lambda kc: evaluate_task.submit(prep["train"], prep["holdout"], kc[0], kc[1], config.model,
                                            str(ws.selection / "candidates"), cluster),
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
                {"selection": {"criterion": config.criterion, "winner": winner}}, cluster, str(ws.selection),
                f"selected by `gmm select` ({config.criterion.upper()})",
            )
        out = ws.run_report("select", report_to)
        report = selection_report(table, winner, config.criterion, out, trim=prep)
    publish_markdown("model-selection", report.markdown, "BIC / AIC / held-out log-likelihood per candidate")
    return {"table": table, "selected": winner, "criterion": config.criterion,
            "selection_data": prep, "registered": reg, "report": report.files, "report_dir": str(out)}
