"""Load: one scheduled run scores 200 partitions, and 2,000 small ones, in bounded memory.

Each test starts ``gmm serve`` (a real local Prefect server, a 5 s interval)
over a work directory whose ``incoming/`` already holds every partition,
and waits for the first scheduled run to score them all.  The driver is
the package ``benchmarks/load/``, shared with ``benchmarks/run.py --only
load`` (``benchmarks/bench_load.py``), which records the throughput in
BENCHMARKS.md; speed is never asserted here.
Every wait in the driver is bounded (``LoadSpec.timeout``, ``stall_seconds``);
pytest-timeout is the backstop.
"""

import logging
import sys
from pathlib import Path

import pytest

# benchmarks/ is a folder of the repository, not an installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load import (  # noqa: E402
    GIB,
    LARGE,
    PEAK_GROWTH_BOUND,
    PEAK_RSS_BOUND,
    SMALL,
    check_outputs,
    prepare,
    run_scheduled,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.slow


def _load(root, spec):
    prepare(root, spec)
    run = run_scheduled(root, spec)
    rows = sum(spec.expected().values())
    wall = run.flow_run["wall_s"]
    logger.info(
        "%d partitions (%d rows): scheduled run %.1f s (%.2f partitions/s, %.0f rows/s), %d scoring batch "
        "tasks %.1f s first to last, mean %.2f s, %.2f at once; peak RSS %.2f GiB (%.2f GiB when idle)",
        spec.n_partitions, rows, wall, spec.n_partitions / wall, rows / wall, run.task_runs["batches"],
        run.task_runs["window_s"],
        run.task_runs["mean_s"], run.task_runs["mean_concurrency"], run.peak_rss / GIB, run.idle_rss / GIB,
    )
    return run


def _assert_scored_once_in_bounded_memory(root, spec, run):
    assert check_outputs(root / "work", spec.expected()) == []
    # one run, created by the schedule of the served deployment, did all the work
    assert run.run_ids == [f"flow-run-{run.flow_run['id']}"]
    assert run.flow_run["auto_scheduled"] is True and run.flow_run["deployment_id"]
    assert run.flow_run["state"] == "COMPLETED"
    # every scoring batch's task run reaches Prefect's API too (its records may lag the flow), each named
    # for its partitions, and together they cover every partition once
    assert run.task_runs["n"] == spec.n_partitions, (
        f"Prefect's API shows {run.task_runs['batches']} finished scoring batches covering {run.task_runs['n']} "
        f"partitions of {spec.n_partitions} (the outputs and manifest above hold every partition)")
    assert 1 <= run.task_runs["batches"] <= spec.n_partitions
    breakdown = "\n".join(f"{rss / 2**20:8.0f} MiB  {pid}  {cmd}" for rss, pid, cmd in run.peak_processes)
    assert run.peak_rss <= PEAK_RSS_BOUND, f"peak RSS {run.peak_rss / GIB:.2f} GiB:\n{breakdown}"


@pytest.fixture(scope="module")
def large_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("load-large")
    return root, _load(root, LARGE)


@pytest.mark.timeout(LARGE.timeout + 300)
def test_one_scheduled_run_scores_200_partitions(large_run):
    root, run = large_run
    _assert_scored_once_in_bounded_memory(root, LARGE, run)


@pytest.mark.timeout(LARGE.timeout + SMALL.timeout + 600)
def test_one_scheduled_run_scores_2000_small_partitions(tmp_path, large_run):
    run = _load(tmp_path, SMALL)
    _assert_scored_once_in_bounded_memory(tmp_path, SMALL, run)
    # ten times as many partitions, each a hundred times smaller: memory must not follow the count
    _, large = large_run
    assert run.peak_rss <= PEAK_GROWTH_BOUND * large.peak_rss, (
        f"peak RSS {run.peak_rss / GIB:.2f} GiB with {SMALL.n_partitions} partitions, "
        f"{large.peak_rss / GIB:.2f} GiB with {LARGE.n_partitions}"
    )
