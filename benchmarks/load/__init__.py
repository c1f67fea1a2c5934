"""Load: one scheduled ``gmm serve`` run over many incoming partitions.

The one driver behind ``tests/test_load.py`` (everything scored exactly
once, memory bounded) and ``benchmarks/run.py --only load`` (throughput in
BENCHMARKS.md, section :mod:`benchmarks.bench_load`):

* :func:`prepare` (:mod:`.prepare`) writes a small training set, fits and
  registers a model, and drops the partitions into ``incoming/`` *before*
  the server starts, so the first scheduled run finds all of them;
* :func:`run_scheduled` (:mod:`.scheduled`) starts ``gmm serve`` (a real
  local Prefect server plus the served deployment, short interval), samples
  the resident memory of its whole process tree, waits until every
  partition is in the manifest (read-only reads, :mod:`.manifest_reads`)
  and the run that scored them has finished, and reads that run's and its
  task runs' timings from the Prefect API (:mod:`.prefect_api`);
* :func:`check_outputs` (:mod:`.checks`) lists every way the manifest, the
  scores stores and the staging area disagree with what was dropped;
* :func:`direct_reference` and :func:`single_partition_reference`
  (:mod:`.references`) score the same rows without Prefect (the task body
  called directly, same cluster shape and parallelism) and as one
  partition: the references the scheduled run is compared to.

The scenarios, their data's shape and the memory bounds are in :mod:`.spec`.
Every wait is bounded; a stall or a dead ``gmm serve`` raises
:class:`LoadRunError` with the tail of its log.
"""

from .checks import check_outputs
from .prepare import prepare
from .references import direct_reference, read_reference, single_partition_reference
from .scheduled import ScheduledRun, run_scheduled
from .spec import (
    GIB,
    LARGE,
    PEAK_GROWTH_BOUND,
    PEAK_RSS_BOUND,
    QUICK,
    SMALL,
    LoadRunError,
    LoadSpec,
)

__all__ = [
    "GIB", "LARGE", "PEAK_GROWTH_BOUND", "PEAK_RSS_BOUND", "QUICK", "SMALL", "LoadRunError", "LoadSpec",
    "ScheduledRun", "check_outputs", "direct_reference", "prepare", "read_reference", "run_scheduled",
    "single_partition_reference",
]
