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

Each section is one ``bench_<section>.py`` module of this folder (its
docstring says what it measures; ``notes.py`` holds the text rendered
beside its figures); ``BENCHMARKS`` below maps section names to their
functions, each ``fn(ctx) -> result`` with ``title``, ``target``, ``met``,
``figures`` (label, value) and ``raw``.  This module keeps the command
line, the :class:`Context` the sections share and the rendering.

Results of each benchmark are kept in ``.benchmarks-work/results.json``
(in a fresh clone, read back from BENCHMARKS.md); BENCHMARKS.md is rendered
from the latest result of every benchmark, so ``--only`` refreshes some
sections without losing the others.  ``--quick``
results go to ``.benchmarks-work/BENCHMARKS-quick.md`` instead.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402
from benchmarks.bench_acceleration import bench_acceleration  # noqa: E402
from benchmarks.bench_cli import bench_cli  # noqa: E402
from benchmarks.bench_cluster import bench_overhead, bench_scaling  # noqa: E402
from benchmarks.bench_inmemory import bench_diag, bench_full, bench_full_d64, bench_predict  # noqa: E402
from benchmarks.bench_load import bench_load  # noqa: E402
from benchmarks.bench_missing import bench_missing  # noqa: E402
from benchmarks.bench_online import bench_online  # noqa: E402
from benchmarks.bench_ooc import bench_ooc, bench_ooc_lz4, bench_ooc_zstd  # noqa: E402
from benchmarks.bench_real_data import bench_real_data  # noqa: E402
from benchmarks.bench_scoring import bench_scoring  # noqa: E402
from benchmarks.bench_selection import bench_selection  # noqa: E402
from benchmarks.common import machine_info, mixture_spec, sample_rows  # noqa: E402

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
    """What the benchmarks share within one run: options, generated data, fitted models, the work directory."""

    def __init__(self, args, workdir: Path = WORKDIR):
        self.quick = args.quick
        self.repeats = args.repeats
        self.sk_repeats = args.sk_repeats
        self.sizes = sizes(args.quick)
        self.iters = self.sizes["iters"]
        self.workdir = workdir  # generated stores and scratch directories (not timed)
        self._data = {}
        self.models = {}  # section name -> (fitted model, X): `predict` reuses `full`'s

    def data(self, N, D, K, seed=0, dtype=np.float64):
        key = (N, D, K, seed, np.dtype(dtype).str)
        if key not in self._data:
            t = time.perf_counter()
            spec = mixture_spec(D, K, seed)
            self._data[key] = sample_rows(spec, 0, N, seed, dtype)
            logger.info("generated %d x %d %s in %.1f s (not timed)", N, D, np.dtype(dtype).name, time.perf_counter() - t)
        return self._data[key]


# ---------------------------------------------------------------------------
# the sections, in the order of BENCHMARKS.md


BENCHMARKS = {
    "full": bench_full,  # bench_inmemory.py
    "full_d64": bench_full_d64,
    "diag": bench_diag,
    "predict": bench_predict,
    "overhead": bench_overhead,  # bench_cluster.py
    "scaling": bench_scaling,
    "ooc": bench_ooc,  # bench_ooc.py
    "ooc_lz4": bench_ooc_lz4,
    "ooc_zstd": bench_ooc_zstd,
    "load": bench_load,  # bench_load.py (driver: load/)
    "scoring": bench_scoring,  # bench_scoring.py
    "acceleration": bench_acceleration,  # bench_acceleration.py
    "cli": bench_cli,  # bench_cli.py
    "online": bench_online,  # bench_online.py
    "missing": bench_missing,  # bench_missing.py
    "selection": bench_selection,  # bench_selection.py
    "real_data": bench_real_data,  # bench_real_data.py
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test); not written to BENCHMARKS.md")
    parser.add_argument("--only", default="", help="comma-separated subset of the sections: " + ", ".join(BENCHMARKS))
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
    if results_path.exists():
        stored = json.loads(results_path.read_text())
    elif not args.quick and (ROOT / "BENCHMARKS.md").exists():  # a fresh clone: keep the sections it holds
        stored = report.parse((ROOT / "BENCHMARKS.md").read_text())
        logger.info("no %s: read %d sections back from BENCHMARKS.md", results_path, len(stored) - 1)
    else:
        stored = {}
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
        result["cpu"] = machine.get("cpu")  # sections refreshed one at a time may come from different machines
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
