"""Layout of a gmm-stream work directory: the only place that names its paths.

::

    <root>/
      raw/                  raw sources before ingest (the demo's generated Parquet)
      data/train.zarr       ingested training data
      incoming/             new partitions arrive here (unless configured elsewhere)
      models/<version>/     registered models; models/CURRENT names the current one
      checkpoints/<run>/    per-iteration EM checkpoints of fits
      staging/              validated copies of partitions being scored
      scores/<id>.zarr      one scores store per partition
      manifest.sqlite       what was scored, by which model, with what result
      manifest.json         a readable snapshot of it
      selection/            the sample and candidates of the last model selection
      report/               summary.json, BIC table, plots; one folder per run
      prefect/              PREFECT_HOME of the local Prefect server (SQLite)

Configs name these locations relative to the work directory (or as
absolute paths and URLs); :meth:`Workspace.resolve` turns such a value,
or its absence, into the path to use.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    """A work directory and the locations inside it.

    Parameters
    ----------
    root : path
        Made absolute at construction.
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).absolute())

    @property
    def raw(self) -> Path:
        """Raw sources kept in the work directory (the demo generates its training file here)."""
        return self.root / "raw"

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
    def manifest_export(self) -> Path:
        return self.root / "manifest.json"

    @property
    def selection(self) -> Path:
        return self.root / "selection"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    def checkpoint_run(self, run_name: str) -> Path:
        """Checkpoints of one fit run (``checkpoints/<run>/``)."""
        return self.checkpoints / run_name

    def run_report(self, kind: str, explicit=None) -> Path:
        """``explicit`` or a new ``report/<kind>-<UTC time>/`` folder, created."""
        if explicit:
            path = Path(explicit)
        else:
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            path = self.report / f"{kind}-{stamp}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def resolve(self, value, default: Path) -> str:
        """A location from a config: ``default`` when unset, relative paths inside the root.

        URLs and absolute paths are returned as they are.
        """
        if value in (None, ""):
            return str(default)
        value = str(value)
        if "://" in value or Path(value).is_absolute():
            return value
        return str(self.root / value)

    def publishing_dirs(self) -> tuple[Path, ...]:
        """Directories whose entries are published atomically (reconcile sweeps their leftovers).

        The scores directory is swept with the manifest's claims in mind, and
        ``incoming/`` belongs to the producers of partitions, so neither is
        listed here.
        """
        runs = sorted(p for p in self.checkpoints.iterdir() if p.is_dir()) if self.checkpoints.is_dir() else []
        reports = sorted(p for p in self.report.iterdir() if p.is_dir()) if self.report.is_dir() else []
        return (self.root, self.data, self.models, self.staging, self.selection,
                self.report, self.checkpoints, *runs, *reports)

    def ensure(self) -> "Workspace":
        for d in (self.data, self.incoming, self.models, self.checkpoints, self.staging,
                  self.scores, self.report):
            d.mkdir(parents=True, exist_ok=True)
        return self
