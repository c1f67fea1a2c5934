"""Prefect tasks: thin wrappers over pure ``pipeline`` functions.

Tasks exchange paths, addresses and small dicts, never clients or arrays.
A task whose work is a Dask graph opens its own ``Client(address)`` (the
default task runner runs tasks in threads; each thread computes on its
own client).  Only tasks that do I/O retry.
"""


import contextlib
import io
import threading
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from pipeline.cluster import TLS, connect

IO_RETRIES = dict(retries=2, retry_delay_seconds=2)


@contextlib.contextmanager
def dask_client(cluster: dict | None):
    """Enter a client for ``cluster`` = {'address', 'tls', 'timeout'}; nothing when None."""
    if not cluster or not cluster.get("address"):
        yield None
        return
    tls = TLS(**cluster["tls"]) if cluster.get("tls") else None
    with connect(cluster["address"], tls=tls, timeout=cluster.get("timeout", 10.0)) as client:
        yield client


def run_bounded(submit, items, max_parallel: int, *, desc: str | None = None, unit: str = "item",
                describe=None) -> list:
    """``[submit(item).result() for item in items]`` with at most ``max_parallel`` task runs at once.

    ``submit`` returns a Prefect future.  Results come back in the order of
    ``items``.  With ``desc``, a progress bar counts finished items;
    ``describe(result)`` gives its postfix (a dict).
    """
    from prefect.futures import as_completed

    bar = None
    if desc:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=desc, unit=unit)
    results: dict[int, object] = {}
    pending = list(enumerate(items))
    running = {}
    try:
        while pending or running:
            while pending and len(running) < max_parallel:
                i, item = pending.pop(0)
                running[submit(item)] = i
            finished = next(as_completed(list(running)))
            results[running.pop(finished)] = r = finished.result()
            if bar is not None:
                bar.update(1)
                if describe is not None:
                    bar.set_postfix(describe(r))
    finally:
        if bar is not None:
            bar.close()
    return [results[i] for i in range(len(items))]


# -- data ---------------------------------------------------------------------


def _transient(task, task_run, state) -> bool:
    """Retry condition of the ingest task: I/O errors may pass, refused data will not.

    An ``IngestError`` (bad rows, wrong columns, an existing dest) or a
    missing source fails the same way on every try, so it is not retried.
    """
    from pipeline.ingest import IngestError

    exc = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(exc, (IngestError, FileNotFoundError, FileExistsError, PermissionError, ValueError))


@task(name="ingest", cache_policy=NO_CACHE, retry_condition_fn=_transient, **IO_RETRIES)
def ingest_task(source: str, dest: str, options: dict) -> dict:
    from pipeline.ingest import ingest

    options = dict(options)
    result = ingest(source, dest, progress=options.pop("progress", False), **options)
    get_run_logger().info("ingested %s -> %s: %d rows written, %d bad rows",
                          source, result.path, result.report.n_rows_written, result.report.n_bad_rows)
    return {"path": result.path, "report": result.report.to_dict()}


@task(name="generate-demo-data", cache_policy=NO_CACHE, **IO_RETRIES)
def demo_data_task(root: str, options: dict) -> dict:
    from pipeline.demo_data import write_demo_data

    d = write_demo_data(root, **options)
    return {
        "train": d.train_path,
        "truth": d.truth_path,
        "partitions": d.partitions,
        "feature_names": d.feature_names,
        "n_rows": d.n_rows,
        "n_anomalies": d.n_anomalies,
        "true_mixture": d.truth.to_dict(),
    }


# -- fitting ------------------------------------------------------------------


@task(name="initialize", cache_policy=NO_CACHE)
def initialize_task(data: str, params: dict, out_dir: str, cluster: dict | None) -> str:
    from pipeline.training import initialize_model

    with dask_client(cluster):
        return str(initialize_model(data, params, out_dir))


@task(name="fit-em", cache_policy=NO_CACHE)
def fit_task(data: str, params: dict, checkpoint_dir: str, init_dir: str | None, resume: bool,
             out_dir: str, cluster: dict | None) -> dict:
    from pipeline.training import fit_model

    logger = get_run_logger()

    def report(state):
        logger.info("EM iteration %d: mean log-likelihood %.6f (change %.3g, %.2f s)",
                    state.n_iter, state.lower_bound, state.change, state.seconds)

    with dask_client(cluster):
        result = fit_model(data, params, checkpoint_dir=checkpoint_dir, init_dir=init_dir,
                           resume=resume, on_iteration=report)
    gm = result.model
    gm.save(out_dir, overwrite=True)
    return {
        "model_dir": out_dir,
        "n_iter": gm.n_iter_,
        "converged": bool(gm.converged_),
        "lower_bound": gm.lower_bound_,
        "lower_bounds": list(gm.lower_bounds_),
        "resumed_from": result.resumed_from,
    }


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(model_dir: str, data: str, models_root: str, contamination: float,
                  make_current: bool, extra: dict, cluster: dict | None, work_dir: str) -> dict:
    """Calibrate the threshold, register the model; the training-score sample goes to ``work_dir``.

    The sample (for the report's histogram) is not written into the
    registered model's directory: a published model is never modified.
    """
    import numpy as np

    from gmm_engine import load_model
    from gmm_engine.atomic import write_bytes

    from pipeline.models import ModelRegistry
    from pipeline.training import register_model

    model, _ = load_model(model_dir)
    with dask_client(cluster):
        version, thr = register_model(model, data, ModelRegistry(models_root),
                                      contamination=contamination, make_current=make_current,
                                      extra=extra)
    sample_path = Path(work_dir) / f"training-scores-{version}.npy"
    buf = io.BytesIO()
    np.save(buf, np.asarray(thr.sample, dtype=np.float64), allow_pickle=False)
    write_bytes(sample_path, buf.getvalue())
    return {"version": version, "model_dir": str(Path(models_root) / version),
            "threshold": thr.to_dict(), "scores_sample": str(sample_path)}


@task(name="prepare-selection-data", cache_policy=NO_CACHE)
def prepare_selection_task(data: str, out_dir: str, options: dict, cluster: dict | None) -> dict:
    from pipeline.selection import prepare_selection_data

    with dask_client(cluster):
        return prepare_selection_data(data, out_dir, **options).to_dict()


@task(name="evaluate-candidate", cache_policy=NO_CACHE)
def evaluate_task(train: str, holdout: str, n_components: int, covariance_type: str,
                  base_params: dict, out_dir: str, cluster: dict | None) -> dict:
    from pipeline.selection import evaluate_candidate

    with dask_client(cluster):
        return evaluate_candidate(train, holdout, n_components, covariance_type, base_params, out_dir)


# -- scoring ------------------------------------------------------------------


@task(name="reconcile-manifest", cache_policy=NO_CACHE, **IO_RETRIES)
def reconcile_task(manifest: str, outputs: str) -> dict:
    from pipeline.manifest import Manifest

    Path(outputs).mkdir(parents=True, exist_ok=True)
    return Manifest(manifest).reconcile(outputs)


@task(name="discover-partitions", cache_policy=NO_CACHE, **IO_RETRIES)
def discover_task(incoming: str, storage_options: dict) -> dict:
    from dataclasses import asdict

    from pipeline.partitions import discover_partitions

    found = discover_partitions(incoming, storage_options or None)
    for name, reason in found.rejected:
        get_run_logger().warning("incoming entry %r rejected: %s", name, reason)
    return {"partitions": [asdict(p) for p in found.partitions], "rejected": found.rejected}


_MODELS: dict = {}
_MODELS_LOCK = threading.Lock()


def _model(models_root: str, model_spec: str):
    """The model ``model_spec`` names, loaded once per process and model directory.

    Registered model directories are never modified (see ``ModelRegistry``),
    so a directory whose ``model.json`` is unchanged holds the same model;
    its checksums were verified when it was first loaded.
    """
    from pipeline.models import LoadedModel, ModelRegistry, load_model

    # resolved once, so 'current' moving to a new version mid-call cannot pair
    # one version's key with another's arrays
    version, path = ModelRegistry(models_root).resolve(model_spec)
    st = (Path(path) / "model.json").stat()
    key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS.clear()  # one model at a time: a scoring run uses one
            model, metadata = load_model(path)
            _MODELS[key] = LoadedModel(model, metadata, version, path)
        return _MODELS[key]


@task(name="score-partition", cache_policy=NO_CACHE)
def score_partition_task(partition: dict, model_spec: str, models_root: str, paths: dict,
                         run_id: str, bad_rows: str, storage_options: dict,
                         cluster: dict | None, local_max_rows: int | None = None) -> dict:
    from pipeline.partitions import Partition
    from pipeline.scoring import LOCAL_MAX_ROWS, score_partition

    model = _model(models_root, model_spec)
    with dask_client(cluster):
        result = score_partition(
            Partition(**partition), model, outputs_dir=paths["outputs"],
            staging_dir=paths["staging"], manifest_path=paths["manifest"], run_id=run_id,
            bad_rows=bad_rows, storage_options=storage_options or None,
            local_max_rows=LOCAL_MAX_ROWS if local_max_rows is None else local_max_rows,
        )
    return result.to_dict()


@task(name="export-manifest", cache_policy=NO_CACHE, **IO_RETRIES)
def export_manifest_task(manifest: str, path: str) -> str:
    from pipeline.manifest import Manifest

    Manifest(manifest).export_json(path)
    return path
