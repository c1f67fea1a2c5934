"""The ``select-model`` flow: the grid of (K, covariance type) fitted jointly, chosen by BIC, AIC or held-out fit.

One task prepares the compared rows (sample, split, trim), one runs the
search (``pipeline.selection.search``: every pass over the training rows
serves all live candidates, candidates that cannot win are dropped, the K
range extends while the criterion improves at its edge), then the winner
is registered and the run's report folder receives ``model_selection.md``,
``selection.png`` and ``summary.json`` (the candidates table and what
stopped the K range).

With ``method: variational`` the search is one Dirichlet-process mixture
(``pipeline.variational_selection``): its used components are the
selection, it is the model registered, and the report shows its weights
(``weights.png``).
"""

import time

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from pipeline.cluster import ClusterHandle
from pipeline.data import array_bytes

from .artifacts import publish_markdown
from .cluster import flow_cluster, task_client
from .config import SelectConfig
from .fit_flow import register_task
from .flow_parameters import flow


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
            seed=base.get("random_state") or 0, local_max_bytes=config.local_max_bytes,
        ).to_dict()


def _pass_bar(progress: bool):
    """``on_pass(passes, live, total)`` drawing a bar over the joint passes, and its closer; or (None, no-op)."""
    if not progress:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(desc="joint passes", unit="pass")

    def on_pass(passes, live, total):
        bar.update(passes - bar.n)
        bar.set_postfix(live=live, candidates=total)

    return on_pass, bar.close


@task(name="search-models", cache_policy=NO_CACHE)
def search_task(prep: dict, config: SelectConfig, out_dir: str, cluster: ClusterHandle | None,
                progress: bool = False) -> dict:
    """Fit the grid jointly, with early drops and an extending K range: every candidate's row."""
    from pipeline.selection import SearchSettings, search

    settings = SearchSettings(criterion=config.criterion, max_n_components=config.grid.max_n_components,
                              patience=config.grid.patience, drop_early=config.drop_early)
    on_pass, close = _pass_bar(progress)
    try:
        with task_client(cluster):
            found = search(prep["train"], prep["holdout"], config.grid.n_components, config.grid.covariance_types,
                           config.model.estimator_params(), out_dir, settings,
                           local_max_bytes=config.local_max_bytes, on_pass=on_pass)
    finally:
        close()
    return {"table": found.rows, "winner": found.winner, "k_range": found.k_range, "passes": found.passes}


@task(name="fit-variational", cache_policy=NO_CACHE)
def variational_task(prep: dict, config: SelectConfig, out_dir: str, cluster: ClusterHandle | None) -> dict:
    """One Dirichlet-process mixture on the selection rows; what it selects."""
    from pipeline.variational_selection import fit_variational

    with task_client(cluster):
        return fit_variational(prep["train"], prep["holdout"], config.variational.settings(),
                               config.model.estimator_params(), out_dir,
                               local_max_bytes=config.local_max_bytes).to_dict()


def _variational(config: SelectConfig, prep: dict, data: str, ws, cluster, report_to, t0) -> dict:
    """The rest of a variational selection: register, report; the flow's return value."""
    from gmm_engine.atomic import write_json, write_text
    from pipeline.plots import plot_weights
    from pipeline.variational_selection import VariationalResult, variational_markdown, variational_summary

    result = VariationalResult(**variational_task(prep, config, str(ws.selection / "candidates"), cluster))
    winner = result.winner()
    get_run_logger().info("selected K=%d (%s) by a variational mixture of %d components", result.n_components,
                          result.covariance_type, result.fitted_n_components)
    reg = None
    if config.make_current:
        reg = register_task(
            result.model_dir, data, str(ws.models), config.anomaly.contamination, True,
            {"selection": {"method": "variational", "winner": winner}}, cluster, str(ws.selection),
            f"selected by `gmm select` (variational: {result.n_components} of {result.fitted_n_components} used)",
        )
    out = ws.run_report("select", report_to)
    md = variational_markdown(result, prep)
    write_text(out / "model_selection.md", md)
    png = plot_weights(result.weights, out / "weights.png", floor=result.weight_floor)
    write_json(out / "summary.json", variational_summary(result, prep, time.perf_counter() - t0, reg))
    publish_markdown("model-selection", md, "the variational mixture's weights")
    return {"table": [{"n_components": i + 1, "weight": w} for i, w in enumerate(result.weights)],
            "selected": winner, "criterion": "variational", "method": "variational", "variational": result.to_dict(),
            "selection_data": prep, "registered": reg, "summary": str(out / "summary.json"), "report_dir": str(out),
            "report": {"markdown": str(out / "model_selection.md"), "weights_plot": str(png)}}


@flow(name="select-model")
def select_model_flow(config: SelectConfig, report_to: str | None = None, progress: bool = False) -> dict:
    """Fit a grid of (K, covariance type) jointly; choose by BIC, AIC or held-out log-likelihood.

    ``config.method == 'variational'``: one Dirichlet-process mixture instead,
    its used components the selection.  ``progress`` shows a bar over the
    joint passes, with the live candidates.
    """
    from gmm_engine.atomic import write_json
    from pipeline.reports import selection_report
    from pipeline.selection import selection_notes, selection_summary

    logger = get_run_logger()
    t0 = time.perf_counter()
    ws = config.workspace.ensure()
    data = ws.resolve(config.data, ws.train)
    with flow_cluster(config.cluster, config.workdir, data_bytes=array_bytes(data)) as cluster:
        prep = prepare_selection_task(data, str(ws.selection), config, cluster)
        if config.method == "variational":
            return _variational(config, prep, data, ws, cluster, report_to, t0)
        found = search_task(prep, config, str(ws.selection / "candidates"), cluster, progress)
        table, winner, k_range = found["table"], found["winner"], found["k_range"]
        # a warning that the cap stopped the range is logged by the search (pipeline.selection)
        logger.info("selected K=%d covariance_type=%s by %s after %d joint passes; the K range stopped by %s",
                    winner["n_components"], winner["covariance_type"], config.criterion, found["passes"],
                    k_range["stopped_by"])
        reg = None
        if config.make_current:
            reg = register_task(
                winner["model_dir"], data, str(ws.models), config.anomaly.contamination, True,
                {"selection": {"criterion": config.criterion, "winner": winner}}, cluster, str(ws.selection),
                f"selected by `gmm select` ({config.criterion.upper()})",
            )
        out = ws.run_report("select", report_to)
        report = selection_report(table, winner, config.criterion, out, trim=prep, notes=selection_notes(found))
        summary = selection_summary(found, prep, config.criterion, time.perf_counter() - t0, reg)
        write_json(out / "summary.json", summary)
    publish_markdown("model-selection", report.markdown, "BIC / AIC / held-out log-likelihood per candidate")
    return {"table": table, "selected": winner, "criterion": config.criterion, "k_range": k_range,
            "passes": found["passes"], "selection_data": prep, "registered": reg,
            "report": report.files, "summary": str(out / "summary.json"), "report_dir": str(out)}
