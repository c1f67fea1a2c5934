"""Synthetic data with known components and injected anomalies, for the demo.

The training rows are written to Parquet chunk by chunk (the demo then
ingests them into Zarr, as a user's data would be), so ``n_rows`` can
exceed memory.  Incoming partitions are written in several formats
(Parquet, CSV, Zarr, .npy in turn) to exercise every reader.  Truth
(component of every row, anomaly flags) is stored beside the data.

Anomalies are drawn uniformly from a box around the data and kept only
where the true mixture density is below its ``anomaly_quantile`` among
normal rows, so each injected anomaly really is improbable under the
true model.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gmm_engine import covariances_from_full, full_covariances

from .workspace import Workspace

logger = logging.getLogger(__name__)

PARTITION_FORMATS = ("parquet", "csv", "zarr", "npy")


@dataclass(frozen=True)
class TrueMixture:
    covariance_type: str
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, D)
    covariances: np.ndarray  # (K, D, D), full whatever the type

    @property
    def n_components(self) -> int:
        return len(self.weights)

    def log_density(self, X: np.ndarray) -> np.ndarray:
        """Log density of each row under the true mixture, shape (n,)."""
        K, D = self.means.shape
        out = np.empty((X.shape[0], K))
        for k in range(K):
            chol = np.linalg.cholesky(self.covariances[k])
            z = np.linalg.solve(chol, (X - self.means[k]).T)
            out[:, k] = (np.log(self.weights[k]) - np.log(np.diag(chol)).sum()
                         - 0.5 * D * np.log(2 * np.pi) - 0.5 * (z * z).sum(axis=0))
        m = out.max(axis=1, keepdims=True)
        return (m + np.log(np.exp(out - m).sum(axis=1, keepdims=True)))[:, 0]

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


def make_true_mixture(n_components: int, n_features: int, covariance_type: str,
                      rng: np.random.Generator) -> TrueMixture:
    """Well-separated components with random shapes of the given covariance type."""
    K, D = n_components, n_features
    # means at least ~8 standard deviations apart
    means = np.zeros((K, D))
    for k in range(K):
        for _ in range(1000):
            cand = rng.uniform(-12, 12, size=D)
            if k == 0 or np.min(np.linalg.norm(means[:k] - cand, axis=1)) > 9:
                break
        means[k] = cand
    weights = rng.uniform(0.6, 1.4, size=K)
    weights /= weights.sum()
    # a random orientation and scale per component, reduced to the type's form by the registry
    full = []
    for _ in range(K):
        Q, _ = np.linalg.qr(rng.normal(size=(D, D)))
        full.append(Q @ np.diag(rng.uniform(0.4, 1.6, size=D) ** 2) @ Q.T)
    covs = full_covariances(covariances_from_full(np.array(full), covariance_type), covariance_type, K, D)
    return TrueMixture(covariance_type, weights, means, covs)


def sample_rows(truth: TrueMixture, n: int, anomaly_fraction: float, cutoff: float,
                rng: np.random.Generator):
    """Rows, true component (-1 for anomalies) and anomaly flags.

    Returns
    -------
    X : ndarray of shape (n, D), float64
    component : ndarray of shape (n,), int16
    is_anomaly : ndarray of shape (n,), bool
    """
    K, D = truth.means.shape
    n_anom = rng.binomial(n, anomaly_fraction)
    n_norm = n - n_anom
    comp = rng.choice(K, size=n_norm, p=truth.weights)
    X = np.empty((n, D))
    chols = np.linalg.cholesky(truth.covariances)
    z = rng.standard_normal((n_norm, D))
    for k in range(K):
        idx = np.flatnonzero(comp == k)
        X[idx] = truth.means[k] + z[idx] @ chols[k].T
    lo = truth.means.min(axis=0) - 10
    hi = truth.means.max(axis=0) + 10
    got = 0
    while got < n_anom:
        cand = rng.uniform(lo, hi, size=(max(4 * (n_anom - got), 64), D))
        cand = cand[truth.log_density(cand) < cutoff][: n_anom - got]
        X[n_norm + got : n_norm + got + len(cand)] = cand
        got += len(cand)
    component = np.concatenate([comp, np.full(n_anom, -1)]).astype(np.int16)
    is_anomaly = component < 0
    order = rng.permutation(n)
    return X[order], component[order], is_anomaly[order]


@dataclass(frozen=True)
class DemoData:
    train_path: str
    truth_path: str
    partitions: list  # of (partition id, path, n_rows, n_anomalies, moved), in arrival order
    truth: TrueMixture
    feature_names: list
    n_rows: int
    n_anomalies: int
    cutoff: float


#: a file in a work directory made by :func:`write_demo_data`
DEMO_MARKER = ".gmm-demo"


def check_demo_workdir(root) -> set:
    """The names in ``root`` if a demo may replace them; FileExistsError if it holds someone else's files.

    A missing directory, an empty one, one holding only empty folders or a
    Prefect home, or one an earlier demo made (it holds :data:`DEMO_MARKER`)
    may be replaced.
    """
    root = Path(root)
    if not root.exists():
        return set()
    present = {p.name for p in root.iterdir()}
    keep = {Workspace(root).prefect_home.name}
    # the empty folders of a fresh workspace, and the Prefect home, hold nothing to lose
    held = sorted(name for name in present - keep
                  if not ((root / name).is_dir() and not (root / name).is_symlink() and not any((root / name).iterdir())))
    if held and DEMO_MARKER not in present:
        raise FileExistsError(
            f"{root} is not empty and was not made by `gmm demo` (it holds {', '.join(held[:5])}): "
            "the demo replaces its work directory's contents, so choose a new or empty --workdir."
        )
    return present


def reset_demo_workdir(root) -> Path:
    """Empty a demo work directory for a fresh run; create it if missing.

    A demo generates new data every run, so scores, models and the
    manifest of an earlier run would describe other data.  Everything but
    ``prefect/`` (the Prefect home of the running flow) is removed, but only
    from a directory that an earlier demo made (it holds
    :data:`DEMO_MARKER`) or that holds nothing else; any other non-empty
    directory is refused, so a mistyped ``--workdir`` deletes nothing.

    Raises
    ------
    FileExistsError
        ``root`` holds files that are not a demo's.
    """
    import shutil

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    present = check_demo_workdir(root)
    keep = {Workspace(root).prefect_home.name}
    for name in sorted(present - keep):
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    (root / DEMO_MARKER).write_text("made by `gmm demo`; the next demo run replaces this directory's contents\n")
    return root


def write_demo_data(root, *, n_rows: int, n_features: int, n_components: int,
                    covariance_type: str, anomaly_fraction: float, n_partitions: int,
                    partition_rows: int, seed: int = 0, chunk_rows: int = 250_000,
                    anomaly_quantile: float = 0.001, progress: bool = False,
                    drift_at: int | None = None, drift_shift: float = 3.0) -> DemoData:
    """Write ``raw/train.parquet`` (+ truth) and the partitions that will arrive, under a fresh ``root``.

    The training rows are a raw source for :func:`pipeline.ingest.ingest`,
    which turns them into the out-of-core Zarr array the model is fitted
    on, as a user's own data would be.  They are generated and written
    ``chunk_rows`` at a time (one Parquet row group each), so ``n_rows``
    can exceed memory.

    Parameters
    ----------
    root : path of the work directory (see :func:`reset_demo_workdir`)
    n_rows : int
        Training rows.
    anomaly_quantile : float
        Anomalies are kept only below this quantile of the true log-density
        of normal rows.
    drift_at : int, optional
        From this partition on (1-based, in arrival order), component 0 has
        moved by ``drift_shift`` of its standard deviations along the first
        feature (its rows are not anomalies: the data itself moved).
    drift_shift : float

    Returns
    -------
    DemoData
        ``train_path`` is the Parquet file; the partitions wait in
        ``raw/arrivals/`` (:func:`arrive` moves one into ``incoming/``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    root = reset_demo_workdir(root)
    rng = np.random.default_rng(seed)
    truth = make_true_mixture(n_components, n_features, covariance_type, rng)
    names = [f"sensor_{i:02d}" for i in range(n_features)]
    probe, _, _ = sample_rows(truth, 200_000, 0.0, 0.0, rng)
    cutoff = float(np.quantile(truth.log_density(probe), anomaly_quantile))

    ws = Workspace(root)
    for d in (ws.raw, ws.data):
        d.mkdir(parents=True, exist_ok=True)
    train = ws.raw / "train.parquet"
    truth_path = ws.data / "train_truth.zarr"
    zt = zarr.create_array(truth_path, shape=(n_rows,), chunks=(chunk_rows,), dtype="int16",
                           overwrite=True)
    schema = pa.schema([(n, pa.float32()) for n in names])
    n_anom = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_rows, desc="generating training data", unit="row", unit_scale=True)
    with pq.ParquetWriter(train, schema) as writer:
        for s in range(0, n_rows, chunk_rows):
            m = min(chunk_rows, n_rows - s)
            X, comp, anom = sample_rows(truth, m, anomaly_fraction, cutoff, rng)
            X = X.astype(np.float32)
            writer.write_table(pa.table({n: X[:, j] for j, n in enumerate(names)}, schema=schema))
            zt[s : s + m] = comp
            n_anom += int(anom.sum())
            if bar is not None:
                bar.update(m)
    if bar is not None:
        bar.close()

    ws.incoming.mkdir(parents=True, exist_ok=True)
    arrivals = arrivals_dir(root)
    arrivals.mkdir(parents=True, exist_ok=True)
    (ws.data / "partition_truth").mkdir(parents=True, exist_ok=True)
    parts = []
    sd = float(np.sqrt(truth.covariances[0][0, 0]))
    for i in range(n_partitions):
        fmt = PARTITION_FORMATS[i % len(PARTITION_FORMATS)]
        pid = f"part-{i + 1:04d}"
        X, comp, anom = sample_rows(truth, partition_rows, anomaly_fraction, cutoff, rng)
        moved = drift_at is not None and i + 1 >= drift_at
        if moved:
            X[comp == 0, 0] += drift_shift * sd
        path = write_partition(arrivals, pid, X.astype(np.float32), names, fmt)
        np.save(ws.data / "partition_truth" / f"{pid}.npy", anom)
        parts.append((pid, str(path), partition_rows, int(anom.sum()), bool(moved)))
    logger.info("demo data: %d training rows (%d anomalies), %d partitions", n_rows, n_anom, n_partitions)
    return DemoData(str(train), str(truth_path), parts, truth, names, n_rows, n_anom, cutoff)


def arrivals_dir(root) -> Path:
    """Where the demo's partitions wait before they arrive in ``incoming/``."""
    return Workspace(root).raw / "arrivals"


def arrive(root, path) -> Path:
    """Move one waiting partition into ``incoming/`` (one rename: it appears whole)."""
    import os

    target = Workspace(root).incoming / Path(path).name
    os.replace(path, target)
    return target


def write_partition(directory, pid: str, X: np.ndarray, names: list, fmt: str) -> Path:
    """Write one incoming partition as a producer should: under a hidden temporary name, then renamed.

    Discovery skips hidden entries, so a half-written partition is never scored.
    """
    import os

    from gmm_engine.atomic import temp_name

    directory = Path(directory)
    suffix = {"parquet": ".parquet", "csv": ".csv", "zarr": ".zarr", "npy": ".npy"}[fmt]
    final = directory / f"{pid}{suffix}"
    tmp = directory / temp_name(final.name)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({n: X[:, j] for j, n in enumerate(names)}), tmp)
    elif fmt == "csv":
        import pyarrow as pa
        import pyarrow.csv as pcsv

        pcsv.write_csv(pa.table({n: X[:, j] for j, n in enumerate(names)}), tmp)
    elif fmt == "zarr":
        import zarr

        z = zarr.create_array(tmp, shape=X.shape, chunks=(min(len(X), 65_536), X.shape[1]),
                              dtype=X.dtype, overwrite=True)
        z[:] = X
        z.attrs["feature_names"] = names
    else:
        with open(tmp, "wb") as fh:
            np.save(fh, X)
    os.replace(tmp, final)
    return final


def anomaly_metrics(root, partition_ids) -> dict:
    """Precision and recall of the stored anomaly flags against the injected truth.

    Parameters
    ----------
    root : path of the demo work directory
    partition_ids : iterable of str
        Scored partitions (their stores are ``scores/<id>.zarr``).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``, ``true_positives``,
        ``false_positives``, ``false_negatives``, ``n_rows``, ``n_injected``.
    """
    from gmm_engine.npy import load_npy_bytes

    from .scores_store import read_scores

    ws = Workspace(root)
    tp = fp = fn = n = 0
    for pid in partition_ids:
        flags = np.asarray(read_scores(ws.scores / f"{pid}.zarr")["is_anomaly"], dtype=bool)
        truth = load_npy_bytes((ws.data / "partition_truth" / f"{pid}.npy").read_bytes())
        if flags.shape != truth.shape:
            raise ValueError(f"scores of {pid} have {flags.shape[0]} rows, truth has {truth.shape[0]}")
        tp += int((flags & truth).sum())
        fp += int((flags & ~truth).sum())
        fn += int((~flags & truth).sum())
        n += len(flags)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_positives": tp,
            "false_positives": fp, "false_negatives": fn, "n_rows": n, "n_injected": tp + fn}


def evaluate_stream(root, partitions, entries, updates, original_version: str) -> dict:
    """How the stream went against the truth: drift verdicts, updates, anomalies before and after.

    Parameters
    ----------
    root : path of the demo work directory
    partitions : list of (id, path, n_rows, n_anomalies, moved), in arrival order
    entries : manifest entries (their ``drift`` verdicts and ``model_version``)
    updates : the manifest's update attempts
    original_version : the model fitted before the stream

    Returns
    -------
    dict
        ``stream`` (per partition: arrival index, moved, drifted, why, version),
        ``drift`` (``truth_at``, ``detected_at``: 1-based arrival indices or
        None, ``false_alarms``), ``updates``, ``before_update`` and
        ``after_update`` (precision and recall of the anomaly flags on the
        moved partitions scored by the original model, and by an updated one).
    """
    by_id = {e.partition_id: e for e in entries}
    stream, truth_at, detected_at, false_alarms = [], None, None, 0
    for i, (pid, _path, _n, _anom, moved) in enumerate(partitions, start=1):
        e = by_id.get(pid)
        d = (e.drift or {}) if e is not None else {}
        drifted = bool(d.get("drifted") or d.get("sequential_alarm"))
        if moved and truth_at is None:
            truth_at = i
        if drifted and truth_at is None:
            false_alarms += 1
        if drifted and truth_at is not None and detected_at is None:
            detected_at = i
        stream.append({"index": i, "partition": pid, "moved": moved, "drifted": drifted,
                       "why": d.get("reasons", []), "model_version": e.model_version if e else None})
    moved_ids = [s["partition"] for s in stream if s["moved"] and s["model_version"]]
    before = [p for p in moved_ids if by_id[p].model_version == original_version]
    after = [p for p in moved_ids if by_id[p].model_version != original_version]
    return {
        "stream": stream,
        "drift": {"truth_at": truth_at, "detected_at": detected_at, "false_alarms": false_alarms},
        "updates": [{k: u[k] for k in ("version", "promoted", "partitions", "reason")} for u in updates],
        "before_update": _precision_recall(root, before),
        "after_update": _precision_recall(root, after),
    }


def _precision_recall(root, ids) -> dict:
    if not ids:
        return {"precision": None, "recall": None, "partitions": []}
    m = anomaly_metrics(root, ids)
    return {"precision": m["precision"], "recall": m["recall"], "partitions": list(ids)}
