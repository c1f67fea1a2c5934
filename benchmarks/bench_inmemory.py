"""In memory against scikit-learn: sections ``full``, ``full_d64``, ``diag`` (EM) and ``predict``.

EM sections: both implementations start from one shared initialisation
(:func:`benchmarks.common.shared_init`), ``tol=0`` and a fixed number of
iterations; ours is timed per iteration by ``EMState.seconds``,
scikit-learn's by timestamps around its E/M-step loop
(:func:`benchmarks.common.sklearn_fit`).

``predict``: ``score_samples`` and ``predict`` of the model fitted by the
``full`` section (or a short fit when it did not run), against a
scikit-learn estimator given the same fitted parameters; the fused kernels
alone, without input validation, for reference.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import best_of, ours_fit, shared_init, sklearn_fit, warm_up_kernels


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


def _fitted_pair(ctx, N, D, K):
    """(our fitted model, X, scikit-learn's estimator holding the same fitted parameters)."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

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
    return model, X, sk


def _fused_kernel_seconds(model, X, repeats):
    """Best-of seconds of the fused kernels alone (no check_array, no NaN scan), per method."""
    from gmm_engine import _covariance
    from gmm_engine._chunked import run_blocks
    from gmm_engine._fitted import fitted_params

    N = X.shape[0]
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

    return {m: best_of(lambda: fused(m), repeats) for m in ("score_samples", "predict")}


def bench_predict(ctx):
    cfg = ctx.sizes["full"]
    N, D, K = cfg["N"], cfg["D"], cfg["K"]
    model, X, sk = _fitted_pair(ctx, N, D, K)
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
    fused_t = _fused_kernel_seconds(model, X, ctx.repeats)
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
