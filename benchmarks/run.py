#!/usr/bin/env python
"""Benchmarks of gmm_engine against scikit-learn, written to BENCHMARKS.md.

Run from the repository root::

    .venv/bin/python benchmarks/run.py            # everything (~30-60 min)
    .venv/bin/python benchmarks/run.py --quick    # small sizes, a smoke test
    .venv/bin/python benchmarks/run.py --only full,predict

Every figure is a ratio against a reference measured in the same run, on
the same data, from the same initial parameters (one shared initialisation
passed to both implementations as weights_init/means_init/precisions_init,
tol=0, a fixed max_iter).  Data generation is never timed.  The machine is
shared and noisy, so each timing is the best of N repeats; N is recorded.

Per-iteration times exclude initialisation and scikit-learn's final
E-step: ours come from ``EMState.seconds`` (one pass plus the M-step),
scikit-learn's from timestamps taken around its ``_e_step``/``_m_step``
loop.

Results of each benchmark are kept in ``.benchmarks-work/results.json``;
BENCHMARKS.md is rendered from the latest result of every benchmark, so
``--only`` refreshes some sections without losing the others.  ``--quick``
results go to ``.benchmarks-work/BENCHMARKS-quick.md`` instead.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402
from benchmarks.common import (  # noqa: E402
    best_of,
    generate_dask_on_workers,
    machine_info,
    mixture_spec,
    sample_rows,
    TreeRSS,
    shared_init,
    sklearn_fit,
    warm_up_kernels,
)

logger = logging.getLogger("benchmarks")

WORKDIR = ROOT / ".benchmarks-work"


# ---------------------------------------------------------------------------
# sizes


def sizes(quick: bool) -> dict:
    if quick:
        return dict(
            full=dict(N=100_000, D=16, K=8), full_d64=dict(N=20_000, D=64, K=16),
            diag=dict(N=100_000, D=16, K=8), ooc=dict(N=2_000_000, D=16, K=8, zarr_rows=125_000),
            overhead=dict(N=200_000, D=16, K=8, chunks=1000), iters=5,
        )
    return dict(
        full=dict(N=1_000_000, D=16, K=8), full_d64=dict(N=200_000, D=64, K=16),
        diag=dict(N=1_000_000, D=16, K=8), ooc=dict(N=20_000_000, D=16, K=8, zarr_rows=250_000),
        overhead=dict(N=1_000_000, D=16, K=8, chunks=1000), iters=10,
    )


class Context:
    """What the benchmarks share within one run: options and generated data."""

    def __init__(self, args):
        self.quick = args.quick
        self.repeats = args.repeats
        self.sk_repeats = args.sk_repeats
        self.sizes = sizes(args.quick)
        self.iters = self.sizes["iters"]
        self._data = {}
        self.models = {}

    def data(self, N, D, K, seed=0, dtype=np.float64):
        key = (N, D, K, seed, np.dtype(dtype).str)
        if key not in self._data:
            t = time.perf_counter()
            spec = mixture_spec(D, K, seed)
            self._data[key] = sample_rows(spec, 0, N, seed, dtype)
            logger.info("generated %d x %d %s in %.1f s (not timed)", N, D, np.dtype(dtype).name, time.perf_counter() - t)
        return self._data[key]


# ---------------------------------------------------------------------------
# in-memory fits against scikit-learn


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


def bench_inmemory(ctx, name, covariance_type, target_ratio):
    cfg = ctx.sizes[name]
    N, D, K = cfg["N"], cfg["D"], cfg["K"]
    X = ctx.data(N, D, K)
    init = shared_init(X, K, covariance_type, seed=1)
    warm_up_kernels(X[:4096], K, covariance_type, init)
    ours, model = ours_fit(X, K, covariance_type, init, ctx.iters, ctx.repeats)
    sk = sklearn_fit(X, K, covariance_type, init, ctx.iters, ctx.sk_repeats)
    ctx.models[name] = (model, X)
    ratio = ours["s_per_iter"] / sk["s_per_iter"]
    ll_rel = abs(ours["lower_bound"] - sk["lower_bound"]) / abs(sk["lower_bound"])
    return dict(
        title=f"In memory, {covariance_type}, float64, N={N:,}, D={D}, K={K}, {ctx.iters} EM iterations",
        target=f"ours/scikit-learn seconds per iteration <= {target_ratio:g}; same final log-likelihood to 1e-6",
        met=bool(ratio <= target_ratio and ll_rel <= 1e-6),
        figures=[
            ("seconds/iteration, ours", ours["s_per_iter"]),
            ("seconds/iteration, scikit-learn", sk["s_per_iter"]),
            ("ratio ours/scikit-learn", ratio),
            ("speed-up", 1.0 / ratio),
            ("ratio against scikit-learn's fastest single iteration", ours["s_per_iter"] / sk["fastest_iteration"]),
            ("final lower_bound_, ours", ours["lower_bound"]),
            ("final lower_bound_, scikit-learn", sk["lower_bound"]),
            ("relative difference of lower_bound_", ll_rel),
        ],
        raw=dict(ours=ours, sklearn=sk, N=N, D=D, K=K, covariance_type=covariance_type),
    )


def bench_full(ctx):
    return bench_inmemory(ctx, "full", "full", 0.1)


def bench_full_d64(ctx):
    return bench_inmemory(ctx, "full_d64", "full", 0.1)


def bench_diag(ctx):
    return bench_inmemory(ctx, "diag", "diag", 0.25)


# ---------------------------------------------------------------------------
# score_samples / predict throughput


def bench_predict(ctx):
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from gmm_engine import _covariance
    from gmm_engine._chunked import run_blocks
    from gmm_engine._fitted import fitted_params

    cfg = ctx.sizes["full"]
    N, D, K = cfg["N"], cfg["D"], cfg["K"]
    if "full" in ctx.models:
        model, X = ctx.models["full"]
    else:
        X = ctx.data(N, D, K)
        init = shared_init(X, K, "full", seed=1)
        warm_up_kernels(X[:4096], K, "full", init)
        _, model = ours_fit(X, K, "full", init, 3, 1)
    sk = SkGaussianMixture(K, covariance_type="full")
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        setattr(sk, attr, np.array(getattr(model, attr)))
    sk.converged_, sk.n_iter_, sk.lower_bound_, sk.n_features_in_ = True, 1, model.lower_bound_, D

    out = {}
    for method in ("score_samples", "predict"):
        ours_t = best_of(lambda: getattr(model, method)(X), ctx.repeats)
        sk_t = best_of(lambda: getattr(sk, method)(X), ctx.sk_repeats)
        out[method] = dict(ours=ours_t, sklearn=sk_t)
    # Same answers
    labels_equal = bool(np.array_equal(model.predict(X), sk.predict(X)))
    s_ours, s_sk = model.score_samples(X), sk.score_samples(X)
    score_rel = float(np.max(np.abs(s_ours - s_sk)) / np.max(np.abs(s_sk)))

    # The fused kernels alone, without input validation (check_array, NaN scan), for reference.
    kp = fitted_params(model).kernel_params()
    cov = _covariance.get("full")
    block = 65_536

    def fused(kind):
        res = np.empty(N) if kind == "score_samples" else np.empty(N, np.int64)

        def run(i):
            s = i * block
            getattr(cov, kind)(X[s : s + block], kp, res[s : s + block])

        run_blocks(run, -(-N // block))
        return res

    fused_t = {m: best_of(lambda: fused(m), ctx.repeats) for m in ("score_samples", "predict")}
    figures = []
    ok = True
    for method in ("score_samples", "predict"):
        o, s = out[method]["ours"], out[method]["sklearn"]
        figures += [
            (f"{method}: rows/s, ours", N / o),
            (f"{method}: rows/s, scikit-learn", N / s),
            (f"{method}: throughput ratio ours/scikit-learn", s / o),
            (f"{method}: throughput ratio of the kernel alone (no input validation)", s / fused_t[method]),
        ]
        ok &= s / o >= 10
    figures += [("predict labels identical", labels_equal), ("score_samples max relative difference", score_rel)]
    return dict(
        title=f"score_samples / predict throughput, in memory, full, N={N:,}, D={D}, K={K}",
        target="throughput >= 10x scikit-learn's (same fitted parameters, same data)",
        met=bool(ok and labels_equal and score_rel <= 1e-6),
        figures=figures,
        raw=dict(times=out, fused=fused_t, N=N, repeats=ctx.repeats, sk_repeats=ctx.sk_repeats),
    )


# ---------------------------------------------------------------------------
# cluster helpers


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


def _bytes_moved_by_pass(client, data, K, init):
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


# ---------------------------------------------------------------------------
# scaling: 2 workers vs 1


def bench_scaling(ctx):
    from gmm_engine import _chunked
    from gmm_engine._dask_data import DaskData

    cfg = ctx.sizes["full"]
    N, D, K = cfg["N"], cfg["D"], cfg["K"]
    X = ctx.data(N, D, K)
    init = shared_init(X, K, "full", seed=1)
    chunk = N // 16
    rounds = max(ctx.repeats, 5)
    warm_up_kernels(X[:4096], K, "full", init)
    # The machine's cores are shared with other tenants whose load varies by the
    # second: the configurations are measured in alternation, best of `rounds` each.
    with local_cluster(1) as c1, local_cluster(2) as c2:
        clusters = {1: c1, 2: c2}
        arrays = {n: generate_dask_on_workers(c, D, K, N, chunk, seed=0) for n, c in clusters.items()}
        placement = {n: c.run(lambda dask_worker: len(dask_worker.data)) for n, c in clusters.items()}
        fits = {("workers", 1): [], ("workers", 2): [], ("threads", 1): [], ("threads", 2): []}
        original = _chunked.n_threads
        for _ in range(rounds):
            for n, client in clusters.items():
                fits[("workers", n)].append(fit_on_client(client, arrays[n], K, "full", init, ctx.iters, 1)[0])
            # Reference: the same fit in memory on 1 and 2 local threads, no cluster.
            for t in (1, 2):
                _chunked.n_threads = lambda t=t: t
                try:
                    fits[("threads", t)].append(ours_fit(X, K, "full", init, ctx.iters, 1)[0])
                finally:
                    _chunked.n_threads = original
        moved = {}
        for n, client in clusters.items():
            with client.as_current():
                moved[n] = _bytes_moved_by_pass(client, DaskData(arrays[n]), K, init)
        # The same fit on four times the rows: the cluster's fixed cost per
        # iteration weighs four times less against the work.
        del arrays
        big_n = 4 * N
        big = {n: generate_dask_on_workers(c, D, K, big_n, chunk, seed=0) for n, c in clusters.items()}
        big_fits = {1: [], 2: []}
        for _ in range(max(3, rounds - 2)):
            for n, client in clusters.items():
                big_fits[n].append(fit_on_client(client, big[n], K, "full", init, max(5, ctx.iters // 2), 1)[0])
        del big

    def best(key):
        return min(f["s_per_iter"] for f in fits[key])

    w1, w2, t1, t2 = best(("workers", 1)), best(("workers", 2)), best(("threads", 1)), best(("threads", 2))
    b1, b2 = (min(f["s_per_iter"] for f in big_fits[n]) for n in (1, 2))
    speedup = w1 / w2
    lbs = [f["lower_bound"] for runs in fits.values() for f in runs]
    same = (max(lbs) - min(lbs)) / abs(lbs[0])
    return dict(
        title=f"Scaling on a LocalCluster: 2 workers vs 1 (1 thread each), full, N={N:,}, D={D}, K={K}, data persisted in 16 chunks",
        target="speed-up (seconds/iteration with 1 worker / with 2 workers) >= 1.7",
        met=bool(speedup >= 1.7),
        figures=[
            ("seconds/iteration, 1 worker", w1),
            ("seconds/iteration, 2 workers", w2),
            ("speed-up", speedup),
            ("reference: in-memory seconds/iteration, 1 thread", t1),
            ("reference: in-memory seconds/iteration, 2 threads", t2),
            ("reference: speed-up of 2 threads over 1 on this machine", t1 / t2),
            ("cluster's fixed cost per iteration, 1 worker (1-worker row minus 1-thread row), s", w1 - t1),
            ("cluster's fixed cost per iteration, 2 workers (2-worker row minus 2-thread row), s", w2 - t2),
            (f"{big_n:,} rows: seconds/iteration, 1 worker", b1),
            (f"{big_n:,} rows: seconds/iteration, 2 workers", b2),
            (f"{big_n:,} rows: speed-up", b1 / b2),
            ("bytes moved between workers per pass, 2 workers", moved[2]),
            ("largest relative difference of lower_bound_ between all runs", same),
        ],
        raw=dict(
            rounds=rounds, placement=placement, bytes_moved_per_pass=moved,
            s_per_iter={f"{kind}={n}": [f["s_per_iter"] for f in runs] for (kind, n), runs in fits.items()},
            s_per_iter_4x_rows={f"workers={n}": [f["s_per_iter"] for f in runs] for n, runs in big_fits.items()},
        ),
    )


# ---------------------------------------------------------------------------
# overhead with 1,000 chunks


def _trivial(i):
    return i


def _noop_chunk(block, start, kp):
    from gmm_engine._stats import SuffStats

    return SuffStats.zeros(kp.covariance_type, kp.means)


def _kernel_seconds(chunks, params_seq):
    """Single-thread CPU seconds of the E-step kernel over all chunks, per parameter set."""
    from gmm_engine._stats import SuffStats

    out = []
    for params in params_seq:
        kp = params.kernel_params()
        t = time.thread_time()
        for c in chunks:
            SuffStats.from_estep(c, kp)
        out.append(time.thread_time() - t)
    return out


def _overhead_run(data_for_fit, chunks, K, init, iters, repeats, parallelism, noop_data):
    """Per-iteration wall time, kernel time and the difference, for one scheduler."""
    from gmm_engine import GaussianMixture, _covariance
    from gmm_engine._params import GMMParams, m_step
    from gmm_engine._stats import estep_chunk

    weights, means, precisions = init
    best = None
    for _ in range(repeats):
        states = []
        gm = GaussianMixture(
            K, covariance_type="full", tol=0.0, max_iter=iters,
            weights_init=weights, means_init=means, precisions_init=precisions,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm.fit(data_for_fit, on_iteration=states.append)
        wall = [s.seconds for s in states]
        if best is None or np.mean(wall) < np.mean(best[0]):
            best = (wall, states)
    wall, states = best
    cov = _covariance.get("full")
    first = GMMParams.from_precisions_cholesky("full", weights, means, cov.precision_cholesky_from_precisions(precisions))
    params_seq = [first] + [s.params for s in states[:-1]]
    kernel = _kernel_seconds(chunks, params_seq)
    overhead = [w - k / parallelism for w, k in zip(wall, kernel)]
    # No-op kernel: the same graph, merge and payload, no arithmetic.
    kp = first.kernel_params()
    noop = best_of(lambda: noop_data.map_reduce(_noop_chunk, kp), repeats)
    stats = noop_data.map_reduce(estep_chunk, kp)
    mstep = best_of(lambda: m_step(stats, 1e-6), repeats)
    return dict(
        wall_s_per_iter=float(np.mean(wall)), kernel_cpu_s_per_iter=float(np.mean(kernel)),
        overhead_s_per_iter=float(np.mean(overhead)), overhead_per_iteration=overhead,
        noop_pass_s=noop, m_step_s=mstep, noop_plus_m_step_s=noop + mstep, parallelism=parallelism,
    )


def bench_overhead(ctx):
    import dask.array as da

    from gmm_engine._dask_data import DaskData

    cfg = ctx.sizes["overhead"]
    N, D, K, n_chunks = cfg["N"], cfg["D"], cfg["K"], cfg["chunks"]
    X = ctx.data(N, D, K)
    init = shared_init(X, K, "full", seed=1)
    warm_up_kernels(X[:4096], K, "full", init)
    rows = N // n_chunks
    chunks = [X[i : i + rows] for i in range(0, N, rows)]
    iters = min(ctx.iters, 5)

    Xd = da.from_array(X, chunks=(rows, D))
    threaded = _overhead_run(Xd, chunks, K, init, iters, ctx.repeats, 2, DaskData(Xd))
    with local_cluster(2) as client:
        Xc = generate_dask_on_workers(client, D, K, N, rows, seed=0)
        with client.as_current():
            data = DaskData(Xc)
            cluster = _overhead_run(Xc, chunks, K, init, iters, ctx.repeats, 2, data)
            cluster["bytes_moved_per_pass"] = _bytes_moved_by_pass(client, data, K, init)
        # The scheduler's cost of one task on this machine, for the cost model.
        per_task = best_of(lambda: client.gather(client.map(_trivial, range(1000), pure=False)), ctx.repeats) / 1000
    worst = max(threaded["overhead_s_per_iter"], cluster["overhead_s_per_iter"])
    return dict(
        title=f"Overhead with {n_chunks:,} chunks ({rows:,} rows each), full, N={N:,}, D={D}, K={K}",
        target="per-iteration time outside chunk work <= 0.3 s (threaded scheduler and LocalCluster of 2 workers)",
        met=bool(worst <= 0.3),
        figures=[
            ("threaded: wall seconds/iteration", threaded["wall_s_per_iter"]),
            ("threaded: kernel CPU seconds/iteration (all chunks, 1 thread)", threaded["kernel_cpu_s_per_iter"]),
            ("threaded: overhead = wall - kernel/2", threaded["overhead_s_per_iter"]),
            ("threaded: no-op kernel pass + M-step", threaded["noop_plus_m_step_s"]),
            ("LocalCluster: wall seconds/iteration", cluster["wall_s_per_iter"]),
            ("LocalCluster: kernel CPU seconds/iteration", cluster["kernel_cpu_s_per_iter"]),
            ("LocalCluster: overhead = wall - kernel/2", cluster["overhead_s_per_iter"]),
            ("LocalCluster: no-op kernel pass + M-step", cluster["noop_plus_m_step_s"]),
            ("LocalCluster: bytes moved between workers per pass", cluster["bytes_moved_per_pass"]),
            ("LocalCluster: scheduler round trip per trivial task (1,000 tasks), s", per_task),
        ],
        raw=dict(threaded=threaded, cluster=cluster, iterations=iters, repeats=ctx.repeats, per_task_s=per_task),
    )


# ---------------------------------------------------------------------------
# out of core


def ooc_array(cfg, codec):
    """The float32 Zarr array, generated chunk by chunk once and reused (``codec``: 'none', 'lz4' or 'zstd')."""
    import zarr

    N, D, K, zr = cfg["N"], cfg["D"], cfg["K"], cfg["zarr_rows"]
    path = WORKDIR / f"ooc-{N}x{D}-f4-{codec}.zarr"
    stamp = dict(N=N, D=D, K=K, seed=0, zarr_rows=zr, codec=codec, complete=True, generator=2)
    if path.exists():
        with contextlib.suppress(Exception):
            z = zarr.open_array(str(path), mode="r")
            if dict(z.attrs).get("benchmark") == stamp:
                return path
        shutil.rmtree(path)
    WORKDIR.mkdir(exist_ok=True)
    t = time.perf_counter()
    spec = mixture_spec(D, K, 0)
    from pipeline.ingest import compressors as ingest_compressors

    # 'lz4' is what `gmm ingest` writes by default; 'zstd' is Zarr's own default ("auto")
    compressors = {"none": None, "zstd": "auto"}.get(codec) or ingest_compressors(codec)
    z = zarr.create_array(store=str(path), shape=(N, D), chunks=(zr, D), dtype="f4", compressors=compressors)
    for start in range(0, N, zr):
        stop = min(N, start + zr)
        z[start:stop] = sample_rows(spec, start, stop, 0, np.float32)
    z.attrs["benchmark"] = stamp
    logger.info("wrote %s in %.0f s (not timed)", path, time.perf_counter() - t)
    return path


def _arithmetic_bound(sample, init, iters, N):
    """Seconds per iteration of the E-step arithmetic alone on both cores, scaled to N rows.

    An in-memory pass (NumpyData, 2 threads) over the same rows with the
    same sequence of parameters: what the kernels cost on this machine with
    both cores busy and no reading.
    """
    from gmm_engine import _covariance
    from gmm_engine._chunked import NumpyData
    from gmm_engine._params import GMMParams, m_step
    from gmm_engine._stats import estep_chunk

    weights, means, precisions = init
    cov = _covariance.get("full")
    params = GMMParams.from_precisions_cholesky("full", weights, means, cov.precision_cholesky_from_precisions(precisions))
    data = NumpyData(sample)
    data.map_reduce(estep_chunk, params.kernel_params())
    per_iter = []
    for _ in range(iters):
        kp = params.kernel_params()
        t = time.perf_counter()
        stats = data.map_reduce(estep_chunk, kp)
        per_iter.append(time.perf_counter() - t)
        params = m_step(stats, 1e-6)
    return float(np.mean(per_iter)) * N / sample.shape[0], per_iter


def _bench_ooc(ctx, codec):
    import dask.array as da
    import zarr

    from gmm_engine import zarr_to_dask
    from gmm_engine._dask_data import DaskData

    cfg = ctx.sizes["ooc"]
    N, D, K = cfg["N"], cfg["D"], cfg["K"]
    path = ooc_array(cfg, codec)
    z = zarr.open_array(str(path), mode="r")
    store_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    sample = np.asarray(z[: min(N, 1_000_000)])
    init = shared_init(sample, K, "full", seed=1)
    iters = ctx.iters
    repeats = max(1, min(ctx.repeats, 2))
    warm_up_kernels(sample[:4096], K, "full", init)
    arith, arith_raw = _arithmetic_bound(sample, init, iters, N)

    with local_cluster(2, memory_limit="1GiB") as client:
        Xd = zarr_to_dask(z)
        with client.as_current():
            da.from_zarr(str(path), chunks=Xd.chunks).sum().compute()  # warm: imports, page cache
            read = best_of(lambda: da.from_zarr(str(path), chunks=Xd.chunks).sum().compute(), repeats)
            with TreeRSS(os.getpid(), interval=0.1) as rss:
                ours, model = ours_fit(str(path), K, "full", init, iters, repeats)
            moved = _bytes_moved_by_pass(client, DaskData(zarr_to_dask(z)), K, init)
    bound = max(read, arith)
    ratio = ours["s_per_iter"] / bound
    gib = 2**30
    label = {"none": "uncompressed", "lz4": "Blosc-LZ4 (what `gmm ingest` writes by default)",
             "zstd": "zstd (Zarr's default codec)"}[codec]
    return dict(
        title=(
            f"Out of core: float32 Zarr {N:,} x {D} ({N * D * 4 / 1e9:.2f} GB raw, {label}, "
            f"{store_bytes / 1e9:.2f} GB on disk), LocalCluster of 2 single-threaded workers with memory_limit "
            f"1 GiB, full, K={K}, {iters} EM iterations"
        ),
        target="peak RSS of all processes <= 3 GiB; seconds/iteration <= 1.5 x max(read-only pass, arithmetic bound)",
        met=bool(rss.peak <= 3 * gib and ratio <= 1.5),
        figures=[
            ("seconds/iteration, ours", ours["s_per_iter"]),
            ("read-only pass (da.from_zarr(...).sum().compute(), same chunks), seconds", read),
            ("arithmetic bound (in-memory pass on both cores, scaled to N), seconds", arith),
            ("ratio to max(read, arithmetic)", ratio),
            ("ratio to read + arithmetic", ours["s_per_iter"] / (read + arith)),
            ("peak RSS, client + scheduler + nannies + workers, GiB", rss.peak / gib),
            ("bytes read per iteration (store on disk)", store_bytes),
            ("bytes per iteration, raw float32", N * D * 4),
            ("bytes moved between workers per pass", moved),
            ("final lower_bound_", ours["lower_bound"]),
        ],
        raw=dict(ours=ours, read_s=read, arithmetic_s=arith, arithmetic_per_iteration_1M_rows=arith_raw,
                 sample_rows=sample.shape[0], peak_rss=rss.peak, store_bytes=store_bytes, repeats=repeats,
                 dask_chunks=len(Xd.chunks[0]), codec=codec),
    )


def bench_ooc(ctx):
    return _bench_ooc(ctx, "none")


def bench_ooc_lz4(ctx):
    return _bench_ooc(ctx, "lz4")


def bench_ooc_zstd(ctx):
    return _bench_ooc(ctx, "zstd")


def bench_load(ctx):
    # a scheduled `gmm serve` run over many partitions (the driver shared with tests/test_load.py)
    from benchmarks.load import bench

    return bench(ctx.quick, WORKDIR)


# ---------------------------------------------------------------------------


BENCHMARKS = {
    "full": bench_full,
    "full_d64": bench_full_d64,
    "diag": bench_diag,
    "predict": bench_predict,
    "overhead": bench_overhead,
    "scaling": bench_scaling,
    "ooc": bench_ooc,
    "ooc_lz4": bench_ooc_lz4,
    "ooc_zstd": bench_ooc_zstd,
    "load": bench_load,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test); not written to BENCHMARKS.md")
    parser.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    parser.add_argument("--repeats", type=int, default=3, help="best of N for our timings (default 3)")
    parser.add_argument("--sk-repeats", type=int, default=2, help="best of N for scikit-learn's timings (default 2)")
    parser.add_argument("--output", type=Path, default=None, help="markdown file (default BENCHMARKS.md)")
    parser.add_argument("--render-only", action="store_true", help="rewrite the markdown from the stored results")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    WORKDIR.mkdir(exist_ok=True)
    results_path = WORKDIR / ("results-quick.json" if args.quick else "results.json")
    stored = json.loads(results_path.read_text()) if results_path.exists() else {}
    output = args.output or (WORKDIR / "BENCHMARKS-quick.md" if args.quick else ROOT / "BENCHMARKS.md")
    if args.render_only:
        output.write_text(report.render(stored, stored.get("_machine") or machine_info(), quick=args.quick))
        logger.info("wrote %s", output)
        return 0
    ctx = Context(args)
    machine = machine_info()
    for name in names:
        logger.info("== %s", name)
        t = time.perf_counter()
        result = BENCHMARKS[name](ctx)
        result["seconds"] = time.perf_counter() - t
        result["when"] = _dt.datetime.now().isoformat(timespec="seconds")
        result["machine_load"] = os.getloadavg()
        result["quick"] = args.quick
        stored[name] = result
        results_path.write_text(json.dumps(stored, indent=1, default=report.jsonable))
        logger.info("%s", report.text_summary(name, result))
    stored["_machine"] = machine
    stored["_benchmark_order"] = list(BENCHMARKS)
    results_path.write_text(json.dumps(stored, indent=1, default=report.jsonable))
    output.write_text(report.render(stored, machine, quick=args.quick))
    logger.info("wrote %s", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
