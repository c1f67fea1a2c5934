"""A work directory ready for the load run: a registered model and every partition already in incoming/."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .spec import N_COMPONENTS, N_FEATURES, TRAIN_ROWS, LoadSpec, feature_names

logger = logging.getLogger(__name__)


def prepare(root, spec: LoadSpec, seed: int = 0) -> Path:
    """Create ``root/work`` with a registered model and ``spec.n_partitions`` partitions in incoming/.

    Returns the work directory.
    """
    import zarr

    from benchmarks.common import mixture_spec, sample_rows
    from gmm_engine import GaussianMixture
    from pipeline.demo_data import write_partition
    from pipeline.registry import ModelRegistry
    from pipeline.training import register_model

    work = Path(root) / "work"
    incoming = work / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    names = feature_names()
    mixture = mixture_spec(N_FEATURES, N_COMPONENTS, seed)
    train = work / "data" / "train.zarr"
    z = zarr.create_array(str(train), shape=(TRAIN_ROWS, N_FEATURES), chunks=(TRAIN_ROWS // 4, N_FEATURES),
                          dtype="float32", overwrite=True)
    z[:] = sample_rows(mixture, 0, TRAIN_ROWS, seed, np.float32)
    z.attrs["feature_names"] = names
    gm = GaussianMixture(N_COMPONENTS, covariance_type="full", random_state=0, max_iter=50).fit(str(train))
    register_model(gm, str(train), ModelRegistry(work / "models"), contamination=0.01)

    t = time.perf_counter()
    start = TRAIN_ROWS  # partitions are rows the model has not seen
    for i in range(spec.n_partitions):
        n = spec.partition_rows(i)
        X = sample_rows(mixture, start, start + n, seed, np.float32)
        start += n
        write_partition(incoming, spec.partition_id(i), X, names, spec.formats[i % len(spec.formats)])
    logger.info("wrote %d partitions (%d rows) in %.1f s", spec.n_partitions, start - TRAIN_ROWS,
                time.perf_counter() - t)
    return work
