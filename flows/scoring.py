"""The ``score-partitions`` flow: score every unscored incoming partition."""


import uuid
from pathlib import Path

from prefect import flow
from prefect.logging import get_run_logger

from pipeline.manifest import Manifest
from pipeline.models import ModelRegistry
from pipeline.workspace import Workspace

from . import reports
from .config import ScoreConfig
from .fitting import flow_cluster
from .tasks import discover_task, export_manifest_task, reconcile_task, run_bounded, score_partition_task


class PartitionScoringError(RuntimeError):
    """Some partitions failed; the others were scored and recorded."""


def _run_id() -> str:
    try:
        from prefect.runtime import flow_run

        if flow_run.id:
            return f"flow-run-{flow_run.id}"
    except Exception:  # pragma: no cover - outside a flow run
        pass
    return f"run-{uuid.uuid4().hex}"


@flow(name="score-partitions")
def score_partitions_flow(config: ScoreConfig, report_to: str | None = None, progress: bool = False) -> dict:
    """Find unscored partitions, score them in parallel on Dask, record them.

    Idempotent: partitions already in the manifest are skipped, a partition
    claimed by another live run is left to it, and a run killed midway is
    reconciled by the next one (outputs without a manifest entry and
    leftover temporary stores are removed; entries whose output is gone
    are forgotten and rescored).
    """
    logger = get_run_logger()
    ws = Workspace(config.workdir).ensure()
    incoming = config.resolve(config.incoming, "incoming")
    paths = {
        "outputs": config.resolve(config.outputs, "scores"),
        "staging": str(ws.staging),
        "manifest": config.resolve(config.manifest, "manifest.sqlite"),
    }
    registry = ModelRegistry(ws.models)
    loaded = registry.load(config.model_spec())  # fails fast: no model, or no threshold
    threshold = loaded.threshold
    logger.info("scoring with model %s (threshold %.6g)", loaded.version, threshold)

    reconciled = reconcile_task(paths["manifest"], paths["outputs"])
    found = discover_task(incoming, config.storage_options)
    done = Manifest(paths["manifest"]).scored_ids()
    todo = [p for p in found["partitions"] if p["id"] not in done]
    logger.info("%d partitions found, %d already scored, %d to score",
                len(found["partitions"]), len(found["partitions"]) - len(todo), len(todo))
    run_id = _run_id()
    results: list[dict] = []
    if todo:
        with flow_cluster(config.cluster, config.workdir) as cl:
            results = run_bounded(
                # the directory, not the version name: a model given by path is not in the registry
                lambda p: score_partition_task.submit(p, str(loaded.path), str(ws.models), paths, run_id,
                                                      config.bad_rows, config.storage_options, cl,
                                                      config.local_max_rows),
                todo, config.max_parallel, desc="partitions" if progress else None, unit="partition",
                describe=lambda r: {"last": r["partition_id"], "status": r["status"]},
            )
    results.sort(key=lambda r: r["partition_id"])
    export_manifest_task(paths["manifest"], str(Path(paths["manifest"]).with_suffix(".json")))
    out = reports.report_dir(ws.root, "score", report_to)
    report = reports.scoring_report(results, out, model_version=loaded.version, threshold=threshold)
    summary = {
        "model_version": loaded.version,
        "threshold": threshold,
        "results": results,
        "rejected": found["rejected"],
        "reconciled": reconciled,
        "already_scored": sorted(done),
        "report": report,
    }
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        raise PartitionScoringError(
            f"{len(failed)} of {len(results)} partitions failed (the others were scored): "
            + "; ".join(f"{r['partition_id']}: {r['error']}" for r in failed)
        )
    return summary
