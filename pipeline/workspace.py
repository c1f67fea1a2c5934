"""Layout of a gmm-stream work directory.

::

    <root>/
      data/train.zarr       ingested training data
      incoming/             new partitions arrive here (unless configured elsewhere)
      models/<version>/     registered models; models/CURRENT names the current one
      checkpoints/<run>/    per-iteration EM checkpoints of fits
      staging/              validated copies of partitions being scored
      scores/<id>.zarr      one scores store per partition
      manifest.sqlite       what was scored, by which model, with what result
      report/               summary.json, BIC table, plots
      prefect/              PREFECT_HOME of the local Prefect server (SQLite)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).absolute())

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def train(self) -> Path:
        return self.data / "train.zarr"

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def scores(self) -> Path:
        return self.root / "scores"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.sqlite"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    def ensure(self) -> "Workspace":
        for d in (self.data, self.incoming, self.models, self.checkpoints, self.staging,
                  self.scores, self.report):
            d.mkdir(parents=True, exist_ok=True)
        return self
