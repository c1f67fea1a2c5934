"""The references a scheduled run is compared to: the same rows scored without Prefect.

* :func:`direct_reference`: the score-partition task body called directly
  over the same partitions, same cluster shape and parallelism;
* :func:`single_partition_reference`: the same rows as one partition;
* :func:`read_reference`: staging (read, validate, write Zarr) every
  partition once, one after the other.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .spec import N_COMPONENTS, N_FEATURES, TRAIN_ROWS, LoadRunError, LoadSpec, feature_names


def _score_directly(work: Path, incoming: Path, dest: Path, spec: LoadSpec, limit: int | None = None) -> dict:
    """The scoring task body over ``incoming`` (the flow's batches), without Prefect; outputs under ``dest``."""
    from flows.config import ScoreConfig
    from flows.score_flow import ScoringPaths, batches, score_batch_task
    from pipeline.cluster import cluster, connect
    from pipeline.partitions import discover_partitions
    from pipeline.registry import ModelRegistry

    models = str(work / "models")
    version = ModelRegistry(models).load("current").version
    parts = discover_partitions(str(incoming)).partitions[:limit]
    paths = ScoringPaths(incoming=str(incoming), outputs=str(dest / "scores"), staging=str(dest / "staging"),
                         manifest=str(dest / "manifest.sqlite"), manifest_export=str(dest / "manifest.json"),
                         models=models)
    for d in ("scores", "staging"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    body = score_batch_task.fn
    config = ScoreConfig(workdir=work)
    with cluster(n_workers=spec.n_workers) as handle:
        t = time.perf_counter()
        with ThreadPoolExecutor(spec.max_parallel) as pool:
            done = list(pool.map(lambda b: body(b, version, paths, "reference", config, handle),
                                 batches(parts, config)))
        results = [r for batch in done for r in batch]
        seconds = time.perf_counter() - t
        # fixed costs the task body pays per partition, measured on the same cluster
        load = _median_time(lambda: ModelRegistry(models).load(version), 20)

        def connect_close():
            with connect(handle.address):
                pass

        conn = _median_time(connect_close, 20)
    bad = [r for r in results if r["status"] != "scored"]
    if bad:
        raise LoadRunError(f"reference scoring failed for {len(bad)} partitions, e.g. {bad[0]}")
    return {"partitions": len(parts), "rows": sum(r["n_rows"] for r in results), "seconds": seconds,
            "task_mean_s": statistics.fmean(r["seconds"] for r in results),
            "model_load_s": load, "client_connect_close_s": conn}


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def direct_reference(root, spec: LoadSpec, limit: int | None = None) -> dict:
    """The same partitions scored by the task body without Prefect, same cluster shape and parallelism."""
    root = Path(root)
    return _score_directly(root / "work", root / "work" / "incoming", root / "direct", spec, limit)


def single_partition_reference(root, spec: LoadSpec, seed: int = 0) -> dict:
    """The same rows as one .npy partition, scored by the task body without Prefect."""
    from benchmarks.common import mixture_spec, sample_rows

    root = Path(root)
    dest = root / "single"
    incoming = dest / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    total = sum(spec.expected().values())
    # prepare() drew the partitions as consecutive row ranges after the training rows
    X = sample_rows(mixture_spec(N_FEATURES, N_COMPONENTS, seed), TRAIN_ROWS, TRAIN_ROWS + total, seed, np.float32)
    np.save(incoming / "all.npy", X)
    del X
    return _score_directly(root / "work", incoming, dest, spec)


def read_reference(root) -> dict:
    """Seconds to stage every partition once, one after the other, with the pipeline's reader.

    ``pipeline.ingest.ingest`` is the first step of scoring a partition: read,
    validate, write a staging Zarr array.
    """
    import shutil

    from pipeline.ingest import ingest

    root = Path(root)
    incoming = root / "work" / "incoming"
    dest = root / "read"
    dest.mkdir(parents=True, exist_ok=True)
    parts = sorted(p for p in incoming.iterdir() if not p.name.startswith("."))
    t = time.perf_counter()
    rows = 0
    for p in parts:
        npy = p.suffix == ".npy"
        r = ingest(str(p), str(dest / f"{p.name}.zarr"), feature_names=feature_names() if npy else None)
        rows += r.report.n_rows_written
    seconds = time.perf_counter() - t
    shutil.rmtree(dest)
    return {"partitions": len(parts), "rows": rows, "seconds": seconds}
