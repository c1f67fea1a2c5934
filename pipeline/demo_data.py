"""Synthetic data with known components and injected anomalies, for the demo.

The training array is written to Zarr chunk by chunk, so ``n_rows`` can
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
    if covariance_type == "full":
        covs = []
        for _ in range(K):
            A = rng.normal(size=(D, D))
            Q, _ = np.linalg.qr(A)
            s = rng.uniform(0.4, 1.6, size=D) ** 2
            covs.append(Q @ np.diag(s) @ Q.T)
        covs = np.array(covs)
    elif covariance_type == "tied":
        A = rng.normal(size=(D, D))
        Q, _ = np.linalg.qr(A)
        cov = Q @ np.diag(rng.uniform(0.4, 1.6, size=D) ** 2) @ Q.T
        covs = np.broadcast_to(cov, (K, D, D)).copy()
    elif covariance_type == "diag":
        covs = np.array([np.diag(rng.uniform(0.4, 1.6, size=D) ** 2) for _ in range(K)])
    elif covariance_type == "spherical":
        covs = np.array([np.eye(D) * rng.uniform(0.4, 1.6) ** 2 for _ in range(K)])
    else:
        raise ValueError(f"unknown covariance_type {covariance_type!r}; use full, tied, diag or spherical")
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
    partitions: list  # of (partition id, path, n_rows, n_anomalies)
    truth: TrueMixture
    feature_names: list
    n_rows: int
    n_anomalies: int
    cutoff: float


def write_demo_data(root, *, n_rows: int, n_features: int, n_components: int,
                    covariance_type: str, anomaly_fraction: float, n_partitions: int,
                    partition_rows: int, seed: int = 0, chunk_rows: int = 250_000,
                    anomaly_quantile: float = 0.001, progress: bool = False) -> DemoData:
    """Write ``data/train.zarr`` (+ truth) and ``incoming/`` partitions under ``root``.

    Parameters
    ----------
    root : path of the work directory
    n_rows : int
        Training rows, written ``chunk_rows`` at a time.
    anomaly_quantile : float
        Anomalies are kept only below this quantile of the true log-density
        of normal rows.

    Returns
    -------
    DemoData
    """
    import zarr

    from .ingest import compressors

    root = Path(root)
    rng = np.random.default_rng(seed)
    truth = make_true_mixture(n_components, n_features, covariance_type, rng)
    names = [f"sensor_{i:02d}" for i in range(n_features)]
    probe, _, _ = sample_rows(truth, 200_000, 0.0, 0.0, rng)
    cutoff = float(np.quantile(truth.log_density(probe), anomaly_quantile))

    (root / "data").mkdir(parents=True, exist_ok=True)
    train = root / "data" / "train.zarr"
    truth_path = root / "data" / "train_truth.zarr"
    z = zarr.create_array(train, shape=(n_rows, n_features), chunks=(chunk_rows, n_features),
                          dtype="float32", overwrite=True,
                          compressors=compressors("lz4"))
    zt = zarr.create_array(truth_path, shape=(n_rows,), chunks=(chunk_rows,), dtype="int16",
                           overwrite=True)
    z.attrs["feature_names"] = names
    z.attrs["source"] = "gmm-stream demo generator"
    n_anom = 0
    starts = range(0, n_rows, chunk_rows)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_rows, desc="generating training data", unit="row", unit_scale=True)
    for s in starts:
        m = min(chunk_rows, n_rows - s)
        X, comp, anom = sample_rows(truth, m, anomaly_fraction, cutoff, rng)
        z[s : s + m] = X.astype(np.float32)
        zt[s : s + m] = comp
        n_anom += int(anom.sum())
        if bar is not None:
            bar.update(m)
    if bar is not None:
        bar.close()

    incoming = root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    (root / "data" / "partition_truth").mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(n_partitions):
        fmt = PARTITION_FORMATS[i % len(PARTITION_FORMATS)]
        pid = f"part-{i + 1:04d}"
        X, comp, anom = sample_rows(truth, partition_rows, anomaly_fraction, cutoff, rng)
        path = write_partition(incoming, pid, X.astype(np.float32), names, fmt)
        np.save(root / "data" / "partition_truth" / f"{pid}.npy", anom)
        parts.append((pid, str(path), partition_rows, int(anom.sum())))
    logger.info("demo data: %d training rows (%d anomalies), %d partitions", n_rows, n_anom, n_partitions)
    return DemoData(str(train), str(truth_path), parts, truth, names, n_rows, n_anom, cutoff)


def write_partition(directory, pid: str, X: np.ndarray, names: list, fmt: str) -> Path:
    """Write one incoming partition, atomically (temp name, then rename)."""
    import os

    directory = Path(directory)
    suffix = {"parquet": ".parquet", "csv": ".csv", "zarr": ".zarr", "npy": ".npy"}[fmt]
    final = directory / f"{pid}{suffix}"
    tmp = directory / f".{pid}{suffix}.tmp"
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
    from .outputs import read_scores

    root = Path(root)
    tp = fp = fn = n = 0
    for pid in partition_ids:
        flags = np.asarray(read_scores(root / "scores" / f"{pid}.zarr")["is_anomaly"], dtype=bool)
        truth = np.load(root / "data" / "partition_truth" / f"{pid}.npy", allow_pickle=False)
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
