"""The ``score-partitions`` flow: score every unscored incoming partition, exactly once."""

import uuid
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from pipeline.cluster import ClusterHandle
from pipeline.partitions import Discovery, Partition

from . import events
from .artifacts import publish_markdown, publish_table
from .cluster import flow_cluster, task_client
from .concurrency import run_bounded
from .config import ScoreConfig
from .flow_parameters import flow

IO_RETRIES = dict(retries=2, retry_delay_seconds=2)


class PartitionScoringError(RuntimeError):
    """Some partitions failed; the others were scored and recorded."""


@dataclass(frozen=True)
class ScoringPaths:
    """Where a scoring run reads and writes (resolved from its config and work directory)."""

    incoming: str
    outputs: str
    staging: str
    manifest: str
    manifest_export: str
    models: str


def _run_id() -> str:
    try:
        from prefect.runtime import flow_run

        if flow_run.id:
            return f"flow-run-{flow_run.id}"
    except Exception:  # pragma: no cover - outside a flow run
        pass
    return f"run-{uuid.uuid4().hex}"


@task(name="reconcile-manifest", cache_policy=NO_CACHE, **IO_RETRIES)
def reconcile_task(paths: ScoringPaths, other_dirs: list[str]) -> dict:
    """Make the manifest and the outputs agree after a crash; sweep leftovers of crashed writers."""
    from pathlib import Path

    from pipeline.manifest import Manifest

    Path(paths.outputs).mkdir(parents=True, exist_ok=True)
    return Manifest(paths.manifest).reconcile(paths.outputs, other_dirs=other_dirs)


@task(name="discover-partitions", cache_policy=NO_CACHE, **IO_RETRIES)
def discover_task(incoming: str, storage_options: dict) -> Discovery:
    from pipeline.partitions import discover_partitions

    found = discover_partitions(incoming, storage_options or None)
    for name, reason in found.rejected:
        get_run_logger().warning("incoming entry %r rejected: %s", name, reason)
    return found


#: partitions of at most this many bytes are scored several per task ...
SMALL_PARTITION_BYTES = 4 * 2**20
#: ... up to this many: a task run costs Prefect tens of milliseconds, such a partition a few
BATCH_SIZE = 64


def batches(partitions, config: ScoreConfig) -> list[list[Partition]]:
    """The partitions in task-sized batches, in order: small ones together, the others one per task."""
    from pipeline.partitions import estimated_bytes

    out, small = [], []
    for p in partitions:
        size = estimated_bytes(p, config.storage_options or None)
        if size is not None and size <= SMALL_PARTITION_BYTES:
            small.append(p)
            if len(small) == BATCH_SIZE:
                out.append(small)
                small = []
        else:
            out.append([p])
    return out + ([small] if small else [])


#: a batch's task-run name starts with this, then ``[n]`` (its partitions) and its first and last ids
BATCH_RUN_PREFIX = "score-partitions-batch"


def batch_run_name(parameters: dict) -> str:
    """The task-run name of a batch in Prefect's UI and API: how many partitions, and which."""
    ids = [str(p.id) for p in parameters["partitions"]]
    span = ids[0] if len(ids) == 1 else f"{ids[0]} .. {ids[-1]}"
    return f"{BATCH_RUN_PREFIX}[{len(ids)}] {span}"


@task(name=BATCH_RUN_PREFIX, task_run_name=batch_run_name, cache_policy=NO_CACHE)
def score_batch_task(partitions: list[Partition], model_version: str, paths: ScoringPaths, run_id: str,
                     config: ScoreConfig, cluster: ClusterHandle | None) -> list[dict]:
    """Claim, stage, score, publish and record a batch of partitions (see ``pipeline.scoring``)."""
    from pipeline.registry import ModelRegistry
    from pipeline.scoring import score_partitions

    model = ModelRegistry(paths.models).load_cached(model_version)
    with task_client(cluster):
        results = score_partitions(
            partitions, model, outputs_dir=paths.outputs, staging_dir=paths.staging,
            manifest_path=paths.manifest, run_id=run_id, bad_rows=config.bad_rows,
            storage_options=config.storage_options or None, local_max_rows=config.local_max_rows,
            drift_policy=config.drift.policy(),
        )
    return [r.to_dict() for r in results]


@task(name="sequential-drift", cache_policy=NO_CACHE, **IO_RETRIES)
def sequential_task(paths: ScoringPaths, new_ids: list[str], model_version: str, config: ScoreConfig) -> dict:
    """The sequential detector over the partitions just scored, in arrival order; their verdicts updated."""
    from pipeline.manifest import Manifest
    from pipeline.registry import ModelRegistry
    from pipeline.stream import sequential_steps

    reference = ModelRegistry(paths.models).load_cached(model_version).reference
    if reference is None:
        return {}
    return sequential_steps(Manifest(paths.manifest), new_ids, model_version, reference, config.drift.policy())


@task(name="update-model", cache_policy=NO_CACHE)
def update_task(paths: ScoringPaths, model_version: str, run_id: str, config: ScoreConfig,
                cluster: ClusterHandle | None) -> dict | None:
    """Learn from the partitions the current model scored, as ``config.update`` says (see ``pipeline.updates``)."""
    from pipeline.manifest import Manifest
    from pipeline.registry import ModelRegistry
    from pipeline.updates import plan_update, update_model

    manifest = Manifest(paths.manifest)
    entries = manifest.entries()
    plan = plan_update(entries, model_version, config.update.policy())
    if plan is None:
        return None
    registry = ModelRegistry(paths.models)
    outputs = {e.partition_id: e.output_path for e in entries}
    with task_client(cluster):
        outcome = update_model(
            registry=registry, manifest=manifest, current=registry.load(model_version), plan=plan,
            outputs=outputs, staging=Path(paths.staging), policy=config.update.policy(),
            drift_policy=config.drift.policy(), run_id=run_id, bad_rows=config.bad_rows,
            storage_options=config.storage_options or None,
        )
    return outcome.to_dict()


@task(name="export-manifest", cache_policy=NO_CACHE, **IO_RETRIES)
def export_manifest_task(paths: ScoringPaths) -> str:
    from pipeline.manifest import Manifest

    Manifest(paths.manifest).export_json(paths.manifest_export)
    return paths.manifest_export


def _largest(partitions, config: ScoreConfig) -> int | None:
    """The in-memory size of the largest partition from metadata, or None if one cannot be told."""
    from pipeline.partitions import estimated_bytes

    sizes = [estimated_bytes(p, config.storage_options or None) for p in partitions]
    return None if any(s is None for s in sizes) else max(sizes, default=0)


@flow(name="score-partitions")
def score_partitions_flow(config: ScoreConfig, report_to: str | None = None, progress: bool = False) -> dict:
    """Find unscored partitions, score them in parallel on Dask, record them.

    Idempotent: partitions already in the manifest are skipped, a partition
    claimed by another live run is left to it, and a run killed midway is
    reconciled by the next one (outputs without a manifest entry and
    leftover temporary stores are removed; entries whose output is gone
    are forgotten and rescored).  Every entry names a version the registry
    holds: a model given by directory is imported into it first.
    """
    from pipeline.manifest import Manifest
    from pipeline.registry import ModelRegistry
    from pipeline.reports import anomaly_rows, drift_rows, scoring_report

    logger = get_run_logger()
    ws = config.workspace.ensure()
    paths = ScoringPaths(
        incoming=ws.resolve(config.incoming, ws.incoming), outputs=ws.resolve(config.outputs, ws.scores),
        staging=str(ws.staging), manifest=ws.resolve(config.manifest, ws.manifest),
        manifest_export=str(ws.manifest_export), models=str(ws.models),
    )
    # fails fast (no model, a damaged one, no threshold); an outside directory becomes a version
    loaded = ModelRegistry(ws.models).load_or_import(config.model_spec())
    threshold = loaded.threshold
    logger.info("scoring with model %s (threshold %.6g)", loaded.version, threshold)

    reconciled = reconcile_task(paths, [str(d) for d in ws.publishing_dirs()])
    found = discover_task(paths.incoming, config.storage_options)
    done = Manifest(paths.manifest).scored_ids()
    todo = [p for p in found.partitions if p.id not in done]
    logger.info("%d partitions found, %d already scored, %d to score",
                len(found.partitions), len(found.partitions) - len(todo), len(todo))
    run_id = _run_id()
    results: list[dict] = []
    if todo:
        with flow_cluster(config.cluster, config.workdir, data_bytes=_largest(todo, config)) as cluster:
            per_batch = run_bounded(
                lambda batch: score_batch_task.submit(batch, loaded.version, paths, run_id, config, cluster),
                batches(todo, config), config.max_parallel, desc="batches" if progress else None, unit="batch",
                describe=lambda rs: {"last": rs[-1]["partition_id"], "scored": sum(r["status"] == "scored" for r in rs)},
            )
            results = [r for batch in per_batch for r in batch]
    arrival = {p.id: (p.modified or 0.0, p.id) for p in todo}
    scored = sorted((r["partition_id"] for r in results if r["status"] == "scored"), key=arrival.get)
    drift = sequential_task(paths, scored, loaded.version, config) if scored else {}
    for pid in scored:
        verdict = drift.get(pid)
        if verdict and (verdict["drifted"] or verdict["sequential_alarm"]):
            logger.warning("partition %s drifted (%s)", pid, ", ".join(verdict["reasons"]))
            events.drift_detected(pid, loaded.version, verdict)
    update = None
    if scored and config.update.mode != "never":
        update = update_task(paths, loaded.version, run_id, config, None)
        if update is not None:
            logger.info("model update: %s", update["reason"])
            events.model_updated(update)
    results.sort(key=lambda r: r["partition_id"])
    for r in results:
        r["drift"] = drift.get(r["partition_id"], r.get("drift"))
    export_manifest_task(paths)
    out = ws.run_report("score", report_to)
    report = scoring_report(results, out, model_version=loaded.version, threshold=threshold, update=update)
    publish_table("partition-anomalies", anomaly_rows(results), f"Anomalies per partition, model {loaded.version}")
    publish_table("partition-drift", drift_rows(results), f"Drift per partition, model {loaded.version}")
    publish_markdown("scoring-summary", report.markdown, "Scoring run summary")
    summary = {
        "model_version": loaded.version,
        "threshold": threshold,
        "results": results,
        "rejected": found.rejected,
        "reconciled": reconciled,
        "already_scored": sorted(done),
        "report": report.files,
        "scored_in_order": scored,
        "update": update,
    }
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        raise PartitionScoringError(
            f"{len(failed)} of {len(results)} partitions failed (the others were scored): "
            + "; ".join(f"{r['partition_id']}: {r['error']}" for r in failed)
        )
    return summary

