"""Section ``scoring``: ``gmm score`` against a hand-written loop with the same engine, large and small partitions.

A work directory holds a registered model (K=4 full, 10 float32 features,
fitted on 200,000 rows by the pipeline's own ``register_model``) and its
kept Prefect server, started by an untimed first ``gmm score``.  Timed, in
this order, each a whole ``gmm score --workdir work`` process under
``/usr/bin/time -f %e``:

* **fixed cost**: ``gmm score`` with nothing in ``incoming/`` (Python
  start-up, imports, config checks, the server check, the flow run and its
  reconcile and discovery tasks): what any run pays before its first
  partition, ``REPEATS`` times, the median;
* **large**: 8 Parquet partitions of 500,000 x 10 float32 copied into
  ``incoming/`` (new partition ids each repeat, since a scored partition is
  never scored again), ``REPEATS`` times, the fastest;
* **small**: 300 Parquet partitions of 200 rows, once.

The reference, in the same run and process-free: the hand-written loop a
user would write with the same engine and fitted model, over the same 8
files (``pyarrow.parquet.read_table`` -> ``score_samples`` and
``predict_proba`` -> the same four arrays written to a Zarr group per
partition), the fastest of ``REPEATS``.

Figures: ``gmm score``'s seconds beyond its fixed cost (what scoring the
partitions adds: reading, validation, the model's pass, drift tests,
atomic outputs, the manifest, the lease) over the loop's seconds (target
<= 1.5), and the whole process over the loop; for the small partitions,
partitions per second beyond the fixed cost (target >= 50) and within the
run by the manifest's own ``scored_at`` times.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

GMM = Path(sys.executable).with_name("gmm")
TIME = "/usr/bin/time"
D, K, TRAIN_ROWS = 10, 4, 200_000
LARGE = (8, 500_000)  # partitions, rows each
SMALL = (300, 200)
REPEATS = 3
LARGE_TARGET, SMALL_TARGET = 1.5, 50.0


def _names() -> list[str]:
    return [f"f{j}" for j in range(D)]


def prepare(root: Path, quick: bool) -> dict:
    """The work directory with its model, and the partitions to score, written outside ``incoming/``."""
    import zarr

    from benchmarks.common import mixture_spec, sample_rows
    from gmm_engine import GaussianMixture
    from pipeline.demo_data import write_partition
    from pipeline.registry import ModelRegistry
    from pipeline.training import register_model

    work = root / "work"
    (work / "incoming").mkdir(parents=True)
    spec = mixture_spec(D, K, 0)
    train = work / "data" / "train.zarr"
    z = zarr.create_array(str(train), shape=(TRAIN_ROWS, D), chunks=(TRAIN_ROWS // 4, D), dtype="float32")
    z[:] = sample_rows(spec, 0, TRAIN_ROWS, 0, np.float32)
    z.attrs["feature_names"] = _names()
    gm = GaussianMixture(K, covariance_type="full", random_state=0, max_iter=100).fit(str(train))
    register_model(gm, str(train), ModelRegistry(work / "models"), contamination=0.01)
    n_large, large_rows = (2, 50_000) if quick else LARGE
    n_small, small_rows = (30, 200) if quick else SMALL
    start = TRAIN_ROWS
    for kind, n, rows in (("large", n_large, large_rows), ("small", n_small, small_rows)):
        (root / kind).mkdir()
        for i in range(n):
            X = sample_rows(spec, start, start + rows, 0, np.float32)
            start += rows
            write_partition(root / kind, f"{kind}{i:04d}", X, _names(), "parquet")
    return {"work": work, "large": (n_large, large_rows), "small": (n_small, small_rows)}


def gmm_score(root: Path, key: str) -> float:
    """One timed ``gmm score --workdir work`` in ``root``: /usr/bin/time's elapsed seconds."""
    from benchmarks.bench_cli import CommandFailed, _env

    out, log = root / f"{key}.time", root / f"{key}.log"
    with open(log, "wb") as f:
        proc = subprocess.run([TIME, "-f", "%e", "-o", str(out), str(GMM), "score", "--workdir", "work", "--no-progress"],
                              cwd=root, env=_env("kept"), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise CommandFailed(f"`gmm score` in {root} exited {proc.returncode}; log {log}:\n"
                            f"{log.read_text(errors='replace')[-2000:]}")
    return float(out.read_text().split()[-1])


def _arrive(root: Path, kind: str, tag: str) -> list[str]:
    """Copy the ``kind`` partitions into incoming/ under ids new to the manifest; their ids.

    Each is copied under the project's temporary name and renamed, as a
    producer should deliver (discovery never sees half a file).
    """
    from gmm_engine.atomic import temp_name

    incoming, ids = root / "work" / "incoming", []
    for f in sorted((root / kind).glob("*.parquet")):
        pid = f"{tag}-{f.stem}"
        final = incoming / f"{pid}.parquet"
        tmp = incoming / temp_name(final.name)
        shutil.copy(f, tmp)
        tmp.rename(final)
        ids.append(pid)
    return ids


def hand_loop(files: list[Path], model, dest: Path) -> float:
    """Seconds of the loop a user would write: read Parquet, score, write the four arrays per partition."""
    import pyarrow.parquet as pq
    import zarr

    threshold = model.threshold
    gm = model.model
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    t = time.perf_counter()
    for f in files:
        X = np.column_stack([c.to_numpy() for c in pq.read_table(f).columns])
        with warnings.catch_warnings():  # the columns are the fitted features, in order; a bare array says so
            warnings.simplefilter("ignore", UserWarning)
            ll = gm.score_samples(X)
            proba = gm.predict_proba(X)
        g = zarr.open_group(str(dest / f"{f.stem}.zarr"), mode="w")
        for name, a in (("log_likelihood", ll), ("component", proba.argmax(1)), ("responsibility", proba.max(1)),
                        ("is_anomaly", ll < threshold)):
            g.create_array(name, shape=a.shape, dtype=a.dtype)[:] = a
    return time.perf_counter() - t


def _window(work: Path, ids: list[str]) -> float:
    """Seconds between the first and the last of ``ids`` recorded in the manifest (its own ``scored_at``)."""
    from pipeline.manifest import Manifest

    wanted = set(ids)
    times = sorted(_dt.datetime.fromisoformat(e.scored_at).timestamp()
                   for e in Manifest(work / "manifest.sqlite").entries() if e.partition_id in wanted)
    if len(times) != len(ids):
        raise RuntimeError(f"the manifest records {len(times)} of the {len(ids)} partitions just scored")
    return times[-1] - times[0]


def measure(root: Path, quick: bool) -> dict:
    from flows import kept_server
    from pipeline.registry import ModelRegistry
    from pipeline.workspace import Workspace

    p = prepare(root, quick)
    work = p["work"]
    model = ModelRegistry(work / "models").load("current")
    repeats = 1 if quick else REPEATS
    try:
        gmm_score(root, "warm")  # the first command: starts the kept server
        fixed = [gmm_score(root, f"empty{r}") for r in range(repeats)]
        large = []
        for r in range(repeats):
            _arrive(root, "large", f"r{r}")
            large.append(gmm_score(root, f"large{r}"))
        small_ids = _arrive(root, "small", "s")
        small = gmm_score(root, "small")
        window = _window(work, small_ids)
    finally:
        kept_server.stop(Workspace(work).prefect_home)
    files = sorted((root / "large").glob("*.parquet"))
    loop = [hand_loop(files, model, root / "loop") for _ in range(repeats)]
    return dict(fixed=fixed, large=large, small=small, small_window=window, loop=loop,
                large_shape=p["large"], small_shape=p["small"])


def bench_scoring(ctx) -> dict:
    """Section ``scoring`` of ``benchmarks/run.py``."""
    if not GMM.exists():
        raise FileNotFoundError(f"{GMM} not found: install the project (`make install`)")
    root = ctx.workdir / "scoring"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    m = measure(root, ctx.quick)
    shutil.rmtree(root, ignore_errors=True)
    (n_large, large_rows), (n_small, small_rows) = m["large_shape"], m["small_shape"]
    fixed, large, loop = statistics.median(m["fixed"]), min(m["large"]), min(m["loop"])
    large_ratio = (large - fixed) / loop
    small_rate = n_small / (m["small"] - fixed)
    window_rate = (n_small - 1) / m["small_window"] if m["small_window"] > 0 else float("inf")
    return dict(
        title=(f"Scoring: `gmm score` over {n_large} Parquet partitions of {large_rows:,} x {D} float32 and over "
               f"{n_small} of {small_rows} rows (K={K} full, kept Prefect server), against a hand-written loop "
               f"with the same engine and model"),
        target=(f"large partitions: `gmm score`'s seconds beyond its fixed cost <= {LARGE_TARGET:g} x the hand-written "
                f"loop (same run); small partitions: >= {SMALL_TARGET:g} partitions/s beyond the fixed cost"),
        met=bool(large_ratio <= LARGE_TARGET and small_rate >= SMALL_TARGET),
        figures=[
            ("large: (gmm score - fixed cost) / hand-written loop", large_ratio),
            ("small: partitions/s beyond the fixed cost", small_rate),
            ("small: partitions/s within the run (manifest scored_at, first to last)", window_rate),
            ("large: whole gmm score process / hand-written loop", large / loop),
            (f"large: gmm score, {n_large} partitions, s (fastest of {len(m['large'])})", large),
            (f"reference: hand-written loop over the same files, s (fastest of {len(m['loop'])})", loop),
            (f"fixed cost: gmm score with nothing to score, s (median of {len(m['fixed'])})", fixed),
            (f"small: gmm score, {n_small} partitions, s", m["small"]),
            ("large: rows/s beyond the fixed cost", n_large * large_rows / (large - fixed)),
        ],
        raw=dict(m, D=D, K=K, train_rows=TRAIN_ROWS),
    )


if __name__ == "__main__":
    import argparse

    from benchmarks.common import finish_standalone

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path(".benchmarks-work"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    class _Ctx:
        quick, workdir = args.quick, args.workdir

    sys.exit(finish_standalone(bench_scoring(_Ctx())))
