"""Section ``load``: one scheduled ``gmm serve`` run over many partitions, large and small.

The driver is :mod:`benchmarks.load` (shared with ``tests/test_load.py``);
this module runs it on two scenarios, checks the outputs, measures the
references without Prefect and turns it all into the section's figures.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from benchmarks.load import (
    GIB,
    LARGE,
    PEAK_GROWTH_BOUND,
    PEAK_RSS_BOUND,
    QUICK,
    SMALL,
    LoadSpec,
    check_outputs,
    direct_reference,
    prepare,
    read_reference,
    run_scheduled,
    single_partition_reference,
)
from benchmarks.load.spec import N_COMPONENTS, N_FEATURES, label

logger = logging.getLogger(__name__)


def measure(root, spec: LoadSpec, direct_limit: int | None = None) -> dict:
    """Prepare ``root``, run the scheduled scoring, check it, and measure the references."""
    prepare(root, spec)
    run = run_scheduled(root, spec)
    problems = check_outputs(Path(root) / "work", spec.expected())
    if run.run_ids != [f"flow-run-{run.flow_run['id']}"] or not run.flow_run["auto_scheduled"]:
        problems.append(f"not one scheduled run: runs {run.run_ids}, auto_scheduled {run.flow_run['auto_scheduled']}")
    logger.info("%s: scheduled run %.1f s, peak RSS %.2f GiB, %d problems", label(spec),
                run.flow_run["wall_s"], run.peak_rss / GIB, len(problems))
    direct = direct_reference(root, spec, direct_limit)
    single = single_partition_reference(root, spec)
    read = read_reference(root)
    summary = asdict(run)
    summary.pop("progress")  # one row per partition: too long for BENCHMARKS.md
    summary["manifest_window_s"] = _manifest_window(Path(root) / "work")
    return {"run": summary, "problems": problems, "direct": direct, "single": single, "read": read,
            "rows": sum(spec.expected().values())}


def _manifest_window(work: Path) -> float:
    """Seconds from the first partition recorded in the manifest to the last.

    Prefect's task-run timestamps come through its event pipeline, which
    falls behind when the local server is busy; the manifest's own
    ``scored_at`` times are written by the runs themselves.
    """
    from pipeline.manifest import Manifest

    times = sorted(_dt.datetime.fromisoformat(e.scored_at).timestamp() for e in Manifest(work / "manifest.sqlite").entries())
    return times[-1] - times[0] if len(times) > 1 else 0.0


def _figures(spec: LoadSpec, m: dict) -> list:
    run, direct, single, read = m["run"], m["direct"], m["single"], m["read"]
    n, rows = spec.n_partitions, m["rows"]
    wall = run["flow_run"]["wall_s"]
    tasks = run["task_runs"]
    window = run["manifest_window_s"]
    direct_per = direct["seconds"] / direct["partitions"]
    p = label(spec) + ": "
    return [
        (p + "wall time of the scheduled run (Prefect start to end), s", wall),
        (p + "partitions/s", n / wall),
        (p + "rows/s", rows / wall),
        (p + "run started after its scheduled time by, s", run["flow_run"]["late_s"]),
        (p + "first to last partition recorded in the manifest, s", window),
        (p + "scoring batches (task runs) reported by the Prefect API / partitions they cover",
         f"{tasks['batches']} / {tasks['n']}"),
        (p + "mean scoring batch task as reported by the Prefect API, s", tasks["mean_s"]),
        (p + f"reference: the task body without Prefect (same cluster, {spec.max_parallel} threads), "
             f"s per partition over {direct['partitions']:,} partitions", direct_per),
        (p + "ratio scheduled/without Prefect, per partition", window / n / direct_per),
        (p + "reference: the same rows as one partition, without Prefect, s", single["seconds"]),
        (p + "ratio scheduled run/one partition", wall / single["seconds"]),
        (p + "reference: staging (read + validate + write Zarr) every partition once, one thread, s",
         read["seconds"]),
        (p + "ratio scheduled run/staging alone", wall / read["seconds"]),
        (p + "model load + client connect per task, without Prefect, ms",
         (direct["model_load_s"] + direct["client_connect_close_s"]) * 1e3),
        (p + "peak RSS of all processes (serve, Prefect server, flow run, Dask), GiB", run["peak_rss"] / GIB),
        (p + "RSS when the server became healthy (serve + server), GiB", run["idle_rss"] / GIB),
        (p + "peak RSS last third / first third of the partitions", run["rss_last_third"] / run["rss_first_third"]),
        (p + "slowest Prefect API read by the driver during the run, s", run["api"]["slowest_s"]),
        (p + "everything scored once by one scheduled run, outputs = manifest", not m["problems"]),
    ]


def bench(quick: bool, workdir) -> dict:
    """The ``load`` section of BENCHMARKS.md (``benchmarks/run.py --only load``)."""
    large, small = QUICK if quick else (LARGE, SMALL)
    out = {}
    for spec, limit in ((large, None), (small, None if quick else 500)):
        root = Path(workdir) / f"load-{spec.n_partitions}x{spec.rows}"
        shutil.rmtree(root, ignore_errors=True)
        try:
            out[spec] = measure(root, spec, limit)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    ml, ms = out[large], out[small]
    growth = ms["run"]["peak_rss"] / ml["run"]["peak_rss"]
    worst = max(ml["run"]["peak_rss"], ms["run"]["peak_rss"])
    ok = (not ml["problems"] and not ms["problems"] and worst <= PEAK_RSS_BOUND and growth <= PEAK_GROWTH_BOUND)
    headline = [
        (f"{label(large)}: rows/s in the scheduled run", ml["rows"] / ml["run"]["flow_run"]["wall_s"]),
        (f"{label(small)}: partitions/s in the scheduled run", small.n_partitions / ms["run"]["flow_run"]["wall_s"]),
        ("peak RSS of all processes, larger of the two, GiB", worst / GIB),
        (f"peak RSS {label(small)} / {label(large)}", growth),
    ]
    return dict(
        title=(f"Load: one scheduled `gmm serve` run over {label(large)} and over {label(small)} incoming "
               f"partitions ({', '.join(large.formats)} in turn, {N_FEATURES} float32 features, K={N_COMPONENTS} "
               f"full), LocalCluster of {large.n_workers} workers, max_parallel {large.max_parallel}, "
               f"{len(os.sched_getaffinity(0))} cores"),
        target=(f"one scheduled run scores every partition exactly once (manifest = outputs, staging empty); "
                f"peak RSS of all processes <= {PEAK_RSS_BOUND / GIB:g} GiB, and with {small.n_partitions:,} "
                f"partitions <= {PEAK_GROWTH_BOUND:g} x that with {large.n_partitions:,}"),
        met=bool(ok),
        figures=headline + _figures(large, ml) + _figures(small, ms),
        raw={label(s): {**m, "spec": asdict(s)} for s, m in out.items()},
    )


def bench_load(ctx) -> dict:
    # a scheduled `gmm serve` run over many partitions (the driver shared with tests/test_load.py)
    return bench(ctx.quick, ctx.workdir)
