"""Data, initial parameters and timing helpers shared by the benchmarks."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

#: rows per generator block; every chunk size used is a multiple of it, so the
#: same (seed, row range) gives the same rows in memory, on workers and in Zarr
GEN_BLOCK = 500
#: typical distance between component means, in units of a component's spread
SEPARATION = 8.0


def mixture_spec(D: int, K: int, seed: int):
    """Weights, means and covariances of a K-component mixture in D dimensions.

    Dirichlet(5) weights; random covariances ``s (A A^T / D + 0.2 I)`` with
    ``s`` in [0.5, 2]; means drawn so that the typical distance between two
    means is about ``SEPARATION`` spreads: overlapping tails, distinct
    clusters.
    """
    rng = np.random.default_rng([seed, D, K])
    weights = rng.dirichlet(np.full(K, 5.0))
    means = rng.normal(scale=SEPARATION / np.sqrt(2.0 * D), size=(K, D))
    covs = np.empty((K, D, D))
    for k in range(K):
        A = rng.normal(size=(D, D)) / np.sqrt(D)
        covs[k] = rng.uniform(0.5, 2.0) * (A @ A.T + 0.2 * np.eye(D))
    return weights, means, covs


def sample_rows(spec, start: int, stop: int, seed: int, dtype=np.float64) -> np.ndarray:
    """Rows ``start:stop`` of the data set ``(spec, seed)``; a pure function of the row range."""
    weights, means, covs = spec
    K, D = means.shape
    chol = np.linalg.cholesky(covs)
    out = np.empty((stop - start, D), dtype=dtype)
    for b0 in range(start - start % GEN_BLOCK, stop, GEN_BLOCK):
        rng = np.random.default_rng([seed, b0 // GEN_BLOCK])
        labels = rng.choice(K, size=GEN_BLOCK, p=weights)
        z = rng.standard_normal((GEN_BLOCK, D))
        x = np.empty((GEN_BLOCK, D))
        for k in range(K):
            sel = labels == k
            x[sel] = means[k] + z[sel] @ chol[k].T
        lo, hi = max(start, b0), min(stop, b0 + GEN_BLOCK)
        out[lo - start : hi - start] = x[lo - b0 : hi - b0]
    return out


def shared_init(X, K: int, covariance_type: str, seed: int):
    """One initialisation given to both implementations.

    Means: K distinct rows drawn at random; weights uniform; precisions the
    inverse of the data covariance (estimated on up to 200,000 rows), the
    same for every component.
    """
    rng = np.random.default_rng(seed)
    N, D = X.shape
    idx = np.sort(rng.choice(N, size=K, replace=False))
    means = np.asarray(X[idx], dtype=np.float64)
    sub = np.asarray(X[: min(N, 200_000)], dtype=np.float64)
    cov = np.cov(sub, rowvar=False) + 1e-6 * np.eye(D)
    from gmm_engine import _covariance

    registry = _covariance.get(covariance_type)
    covariances = registry.from_full(np.stack([cov] * K))
    precisions = registry.precisions(registry.precision_cholesky(covariances))
    return np.full(K, 1.0 / K), means, precisions


def best_of(fn, repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls of fn."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def warm_up_kernels(X, K, covariance_type, init):
    """Load (or compile) the numba kernels for X's dtype outside any timing."""
    from gmm_engine import GaussianMixture

    kwargs = dict(max_iter=2, tol=0.0, covariance_type=covariance_type)
    if init is not None:
        weights, means, precisions = init
        kwargs.update(weights_init=weights, means_init=means, precisions_init=precisions)
    else:
        kwargs.update(init_params="random_from_data", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(K, **kwargs).fit(X)
    gm.score_samples(X)
    gm.predict(X)


def ours_fit(X, K, covariance_type, init, iters, repeats):
    """Best-of-``repeats`` mean seconds per iteration of gmm_engine, and the model."""
    from gmm_engine import GaussianMixture

    weights, means, precisions = init
    per_fit, model = [], None
    for _ in range(repeats):
        times = []
        gm = GaussianMixture(
            K, covariance_type=covariance_type, tol=0.0, max_iter=iters,
            weights_init=weights, means_init=means, precisions_init=precisions,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm.fit(X, on_iteration=lambda s: times.append(s.seconds))
        per_fit.append(times)
        model = gm
    means_per_fit = [float(np.mean(t)) for t in per_fit]
    return dict(
        s_per_iter=min(means_per_fit), s_per_iter_all=means_per_fit,
        iteration_seconds=per_fit[int(np.argmin(means_per_fit))],
        lower_bound=float(model.lower_bound_), repeats=repeats,
    ), model


def sklearn_fit(X, K, covariance_type, init, iters, repeats):
    """scikit-learn's seconds per iteration (best of ``repeats`` fits) and lower bound."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    class Timed(SkGaussianMixture):
        # timestamps around the EM loop: iteration i ends when its M-step ends
        def _e_step(self, X, **kw):
            if not self._marks:
                self._marks.append(time.perf_counter())
            return super()._e_step(X, **kw)

        def _m_step(self, X, log_resp, **kw):
            super()._m_step(X, log_resp, **kw)
            self._marks.append(time.perf_counter())

    weights, means, precisions = init
    fits = []
    for _ in range(max(1, repeats)):
        sk = Timed(
            K, covariance_type=covariance_type, tol=0.0, max_iter=iters, init_params="random_from_data",
            weights_init=weights, means_init=means, precisions_init=precisions, random_state=0,
        )
        sk._marks = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk.fit(X)
        fits.append((list(np.diff(sk._marks)), float(sk.lower_bound_)))
    means_per_fit = [float(np.mean(t)) for t, _ in fits]
    best = int(np.argmin(means_per_fit))
    return dict(
        s_per_iter=means_per_fit[best], s_per_iter_all=means_per_fit, iteration_seconds=fits[best][0],
        fastest_iteration=float(min(min(t) for t, _ in fits)), lower_bound=fits[best][1], repeats=len(fits),
    )


def _chunk(D, K, seed, start, stop, dtype_str):
    return sample_rows(mixture_spec(D, K, seed), start, stop, seed, np.dtype(dtype_str))


def generate_dask_on_workers(client, D, K, N, chunk, seed, dtype=np.float64):
    """The data set as a dask array generated on the cluster, chunk i on worker i mod n."""
    import dask.array as da
    from distributed import wait

    workers = sorted(client.scheduler_info()["workers"])
    futures, parts = [], []
    for j, s in enumerate(range(0, N, chunk)):
        e = min(N, s + chunk)
        f = client.submit(_chunk, D, K, seed, s, e, np.dtype(dtype).str, workers=[workers[j % len(workers)]], pure=False)
        futures.append(f)
        parts.append(da.from_delayed(f, shape=(e - s, D), dtype=dtype))
    wait(futures)
    X = client.persist(da.concatenate(parts))
    wait(X)
    return X


def machine_info() -> dict:
    import threadpoolctl

    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS for threadpoolctl)

    info = {}
    info["cores (affinity)"] = len(os.sched_getaffinity(0))
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cpu"] = model or platform.processor()
    try:
        flags = Path("/proc/cpuinfo").read_text()
        info["simd"] = ", ".join(f for f in ("avx2", "avx512f", "fma") if f" {f} " in flags)
    except OSError:
        pass
    try:
        import psutil

        info["memory GiB"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    info["os"] = platform.platform()
    info["python"] = sys.version.split()[0]
    versions = {}
    for mod in ("numpy", "scipy", "numba", "llvmlite", "dask", "distributed", "zarr", "sklearn", "threadpoolctl", "psutil"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - report what is there
            versions[mod] = "missing"
    info["versions"] = versions
    info["blas"] = [
        {k: d.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer", "architecture", "filepath")}
        for d in threadpoolctl.threadpool_info()
    ]
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout.strip()
        info["git"] = commit + (" (uncommitted changes)" if dirty else "")
    except OSError:
        pass
    info["load average at start"] = [round(x, 2) for x in os.getloadavg()]
    return info


class TreeRSS:
    """Resident memory of a process and all its descendants, sampled in a thread.

    Sums RSS, so pages shared between processes (libraries, forked memory)
    count once per process: an upper bound of the real footprint.
    """

    def __init__(self, pid: int, interval: float = 0.5):
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (monotonic time, bytes, processes)
        self.peak = 0
        self.peak_processes: list[tuple[int, int, str]] = []  # (bytes, pid, command) at the peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)

    def sample(self):
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0, []
        found = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                found.append((p.memory_info().rss, p))
        return sum(r for r, _ in found), found

    @staticmethod
    def _describe(found):
        import psutil

        out = []
        for rss, p in sorted(found, key=lambda rp: -rp[0]):
            try:
                cmd = " ".join(p.cmdline())[:120]
            except psutil.Error:
                cmd = "(exited)"
            out.append((rss, p.pid, cmd))
        return out

    def _run(self):
        while not self._stop.is_set():
            total, found = self.sample()
            self.samples.append((time.monotonic(), total, len(found)))
            if total > self.peak:  # command lines only at a new peak: the sampler must stay cheap
                self.peak, self.peak_processes = total, self._describe(found)
            self._stop.wait(self.interval)

    def between(self, t0: float, t1: float) -> list[int]:
        return [b for t, b, _ in self.samples if t0 <= t <= t1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        total, found = self.sample()  # the end state counts too
        if total > self.peak:
            self.peak, self.peak_processes = total, self._describe(found)


def finish_standalone(result: dict, json_path=None) -> int:
    """End a section run on its own (``python benchmarks/bench_<section>.py``): log its figures, save it, exit code.

    Returns 0 when the section's target is met, else 1.
    """
    import json

    for label, value in result["figures"]:
        logging.getLogger("benchmarks").info("%s: %s", label, value)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1, default=str))
    return 0 if result["met"] else 1
