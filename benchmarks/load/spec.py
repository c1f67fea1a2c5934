"""What a load scenario is: :class:`LoadSpec`, the fixed shape of its data, the bounds, the scenarios."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

GMM = Path(sys.executable).with_name("gmm")
FORMATS = ("parquet", "npy", "zarr", "csv")
N_FEATURES = 4
N_COMPONENTS = 3
TRAIN_ROWS = 20_000
GIB = 2**30


class LoadRunError(RuntimeError):
    """The scheduled run failed, stalled, or ``gmm serve`` died; the message has its log tail."""


@dataclass(frozen=True)
class LoadSpec:
    """One load scenario.

    ``rows`` is the nominal size; partition ``i`` has ``rows - i % (rows // 20)``
    rows, so a store attributed to the wrong partition shows up as a wrong count.
    """

    n_partitions: int
    rows: int
    formats: tuple = FORMATS
    max_parallel: int = 4
    n_workers: int = 2
    interval_seconds: float = 5.0
    timeout: float = 900.0  # whole wait, from `gmm serve` start to the run's end
    stall_seconds: float = 240.0  # longest time without a new manifest entry
    sample_seconds: float = 0.5

    def partition_rows(self, i: int) -> int:
        return self.rows - i % max(1, self.rows // 20)

    def partition_id(self, i: int) -> str:
        return f"p{i:05d}"

    def expected(self) -> dict:
        return {self.partition_id(i): self.partition_rows(i) for i in range(self.n_partitions)}


def feature_names() -> list[str]:
    return [f"x{j}" for j in range(N_FEATURES)]


def label(spec: LoadSpec) -> str:
    return f"{spec.n_partitions:,} x {spec.rows:,}"


#: Peak resident memory of the whole ``gmm serve`` tree.  Measured here: 1.3-1.5 GB, all
#: fixed costs of six processes (the flow run with the Dask scheduler and nannies ~450 MB,
#: the Prefect server ~260 MB, ``gmm serve`` ~230 MB, two Dask workers ~240 MB each), while a
#: partition's data is at most 20,000 x 4 float32 (0.3 MB raw, a few MB while scored, at
#: most ``max_parallel`` at once).  Twice the fixed footprint leaves room for allocator
#: noise and library updates, yet a run that kept ~1 MB per partition of 2,000 breaks it.
PEAK_RSS_BOUND = 3 * GIB
#: Ten times as many partitions (each smaller) must not need more memory than this factor.
PEAK_GROWTH_BOUND = 1.2

LARGE = LoadSpec(200, 20_000)
SMALL = LoadSpec(2_000, 200)
QUICK = (LoadSpec(20, 20_000, timeout=600), LoadSpec(200, 200, timeout=600))
