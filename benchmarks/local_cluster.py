"""LocalCluster helpers shared by the cluster (``scaling``, ``overhead``) and out-of-core sections."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from benchmarks.common import ours_fit


@contextlib.contextmanager
def local_cluster(n_workers, memory_limit="auto"):
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True,
            memory_limit=memory_limit, dashboard_address=None,
        )
    client = Client(cluster)
    try:
        client.run(_warm_worker)
        yield client
    finally:
        client.close()
        cluster.close()


def _warm_worker():
    # Load the cached numba kernels once per worker, outside the timings.
    from benchmarks.common import warm_up_kernels as warm

    X = np.random.default_rng(0).normal(size=(512, 16))
    for dtype in (np.float64, np.float32):
        for ct in ("full", "diag"):
            warm(X.astype(dtype), 2, ct, None)
    return True


def transfer_bytes(client):
    return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())


def bytes_moved_by_pass(client, data, K, init):
    """Bytes sent between workers during one E-step pass over ``data`` (a DaskData)."""
    from gmm_engine import _covariance
    from gmm_engine._params import GMMParams
    from gmm_engine._stats import estep_chunk

    weights, means, precisions = init
    cov = _covariance.get("full")
    kp = GMMParams.from_precisions_cholesky(
        "full", weights, means, cov.precision_cholesky_from_precisions(precisions)
    ).kernel_params()
    data.map_reduce(estep_chunk, kp)
    before = transfer_bytes(client)
    data.map_reduce(estep_chunk, kp)
    return transfer_bytes(client) - before


def fit_on_client(client, X, K, covariance_type, init, iters, repeats):
    with client.as_current():
        return ours_fit(X, K, covariance_type, init, iters, repeats)
