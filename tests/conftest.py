"""Shared test fixtures."""

import os

# Keep Prefect offline and quiet in every test process, and give its
# temporary server time to migrate a fresh database on a busy machine.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def write_zarr(path, X, names=None, chunk_rows=None):
    """A 2-D Zarr array with ``feature_names`` attributes, as ingest writes them."""
    import zarr

    n, d = X.shape
    z = zarr.create_array(str(path), shape=X.shape, chunks=(chunk_rows or max(1, n // 4), d),
                          dtype=X.dtype, overwrite=True)
    z[:] = X
    z.attrs["feature_names"] = list(names or [f"f{i}" for i in range(d)])
    return str(path)


@pytest.fixture(scope="session")
def blobs():
    """Three well-separated 3-D Gaussian blobs plus 1% far-away anomalies."""
    rng = np.random.default_rng(42)
    means = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 2.0], [0.0, 9.0, -3.0]])
    parts = [rng.normal(size=(3000, 3)) @ np.diag([1.0, 0.6, 1.3]) + m for m in means]
    X = np.vstack(parts)
    anomalies = rng.uniform(-40, 40, size=(90, 3))
    X = np.vstack([X, anomalies])
    truth = np.r_[np.zeros(9000, bool), np.ones(90, bool)]
    order = rng.permutation(len(X))
    return X[order], truth[order]


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the whole session (~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def dask_cluster():
    """An in-process LocalCluster (2 workers x 1 thread) shared by the session."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as lc:
        yield lc.scheduler_address
