"""Shared test fixtures, data generators and helpers."""

import atexit
import os
import shutil
import tempfile
import warnings

# Keep Prefect offline and quiet in every test process, and give its
# temporary server time to migrate a fresh database on a busy machine.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
# Commands run by the tests use Prefect's temporary server (or the session's test harness),
# not a server kept for their work directory; tests of the kept server set it up themselves.
os.environ.setdefault("GMM_STREAM_PREFECT", "ephemeral")
# A kept server's migrated Prefect database is kept in a cache of this session, not the user's.
os.environ["GMM_STREAM_CACHE"] = tempfile.mkdtemp(prefix="gmm-stream-test-cache-")
atexit.register(shutil.rmtree, os.environ["GMM_STREAM_CACHE"], True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


import logging  # noqa: E402

#: loggers whose set-up a command run in this process changes (``flows.runtime.configure``, Prefect's logging)
_LOGGERS = ("", "gmm_engine", "pipeline", "flows", "prefect", "distributed")


@pytest.fixture(scope="session", autouse=True)
def _temporary_prefect_servers_stopped():
    """Stop Prefect's temporary servers before pytest closes its output streams.

    Prefect stops them at exit and logs that it does through a rich console
    on the stream pytest captured, by then closed: a "Logging error"
    traceback after the summary.  Stopped here, they stop while the stream is open.
    """
    yield
    import sys

    server = sys.modules.get("prefect.server.api.server")
    if server is not None:
        for instance in list(server.SubprocessASGIServer._instances.values()):
            instance.stop()


@pytest.fixture(autouse=True)
def _process_state_restored():
    """Undo what a command run in this process left behind: environment variables and logging set-up.

    ``gmm`` commands invoked in-process (``CliRunner``) point Prefect at a
    home and set the engine's loggers to INFO with Prefect's API handler:
    left in place, every later test's EM iterations would be logged through
    rich and shipped to a Prefect server (measured: tests 30x slower).
    """
    env = dict(os.environ)
    saved = {name: (lg.level, list(lg.handlers), lg.propagate)
             for name in _LOGGERS for lg in [logging.getLogger(name)]}
    yield
    for key in set(os.environ) - set(env):
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value
    for name, (level, handlers, propagate) in saved.items():
        lg = logging.getLogger(name)
        # pytest's own capture handlers come and go around each test phase: leave them to pytest
        ours = [h for h in lg.handlers if type(h).__module__.startswith("_pytest")]
        lg.setLevel(level)
        lg.handlers[:] = [h for h in handlers if not type(h).__module__.startswith("_pytest")] + ours
        lg.propagate = propagate


# ---------------------------------------------------------------------------
# data generators and helpers shared by the engine tests


def gaussian_clusters(n, centers, weights, *, seed=0, mixing=0.0):
    """Rows drawn around ``centers`` (K, D) with probabilities ``weights``.

    The noise is standard normal, or with ``mixing > 0`` correlated per
    cluster: ``z @ (I + mixing * G_k)`` with ``G_k`` standard normal.
    """
    rng = np.random.default_rng(seed)
    centers = np.asarray(centers, dtype=np.float64)
    K, D = centers.shape
    labels = rng.choice(K, size=n, p=list(weights))
    if not mixing:
        return centers[labels] + rng.normal(size=(n, D))
    mix = np.eye(D) + mixing * rng.normal(size=(K, D, D))
    return centers[labels] + np.einsum("nd,nde->ne", rng.normal(size=(n, D)), mix[labels])


def three_clusters(n=300, D=3, seed=0):
    """Three unit-variance clusters at (0, 0, 0), (5, 3, 0), (0, 4, 5) (first D coordinates)."""
    centers = np.array([[0.0, 0.0, 0.0], [5.0, 3.0, 0.0], [0.0, 4.0, 5.0]])[:, :D]
    return gaussian_clusters(n, centers, (0.4, 0.35, 0.25), seed=seed)


def quiet(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with every warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def sklearn_error(kwargs, X, method="fit"):
    """The exception scikit-learn's GaussianMixture(**kwargs).<method>(X) raises: the oracle."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    sk = SkGaussianMixture(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            getattr(sk, method)(X)
        except Exception as exc:  # noqa: BLE001 - whatever scikit-learn raises is the oracle
            return exc
    raise AssertionError(f"scikit-learn accepted {kwargs}; the test case is wrong")


def assert_same_params(a, b, rtol=1e-9, atol=None):
    """The fitted arrays of two mixtures agree (``atol`` defaults to ``rtol``)."""
    atol = rtol if atol is None else atol
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(a, attr), getattr(b, attr), rtol=rtol, atol=atol, err_msg=attr)


def zarr_one_chunk(path, arr):
    """``arr`` (any shape) as a Zarr array of one chunk, without attributes; returns its path."""
    import zarr

    z = zarr.create_array(str(path), shape=arr.shape, chunks=arr.shape, dtype=arr.dtype)
    z[...] = arr
    return str(path)


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


# ---------------------------------------------------------------------------
# weights, starts and streams (sample_weight and partial_fit tests)


def integer_weights(n, *, high=4, seed=0, zeros=True):
    """Integer row weights in [0, high) (``zeros=False``: [1, high)), as float64."""
    rng = np.random.default_rng(seed)
    return rng.integers(0 if zeros else 1, high, size=n).astype(np.float64)


def shared_start(X, n_components, covariance_type, *, seed=0):
    """``weights_init``, ``means_init`` and ``precisions_init`` of a short fit: a start two fits can share."""
    from gmm_engine import GaussianMixture

    gm = quiet(GaussianMixture(n_components, covariance_type=covariance_type, max_iter=2,
                               random_state=seed).fit, X)
    return dict(weights_init=gm.weights_, means_init=gm.means_, precisions_init=gm.precisions_)


def stationary_stream(n_batches, batch_rows, *, n_components=3, n_features=4, separation=2.5,
                      mixing=0.3, seed=0):
    """``n_batches * batch_rows`` rows of one mixture (random centres ``separation`` apart on average)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_components, n_features)) * separation
    weights = np.ones(n_components) / n_components
    return gaussian_clusters(n_batches * batch_rows, centers, weights, seed=seed, mixing=mixing)


class CountingArray:
    """An in-memory array that counts the reads dask makes of it: ``da.from_array(CountingArray(X))``.

    ``reads`` lists the row slices read, one per chunk loaded.
    """

    def __init__(self, X):
        self.X = np.asarray(X)
        self.shape, self.dtype, self.ndim = self.X.shape, self.X.dtype, self.X.ndim
        self.reads = []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.X[key]


def counted_dask(X, chunk_rows):
    """(dask array over X that counts its chunk loads, the counter)."""
    import dask.array as da

    counter = CountingArray(X)
    return da.from_array(counter, chunks=(chunk_rows, X.shape[1]), asarray=False, lock=False, name=False,
                         meta=np.empty((0, 0), dtype=counter.dtype)), counter
