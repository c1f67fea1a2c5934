"""Section ``real_data``: the product end to end on real outlier data (ODDS), against scikit-learn in the same run.

For each data set of :mod:`benchmarks.odds` (``--quick``: the small ones,
shuttle, annthyroid and shuttle_river) the ``gmm`` command runs as a user
runs it, in a fresh work directory under the system's temporary directory
(the data is never copied into the repository):

1. the features are written as ``train.parquet`` (columns ``f0`` ...;
   Parquet keeps float64 exactly, where a CSV would round or be slow),
   not timed;
2. ``gmm server start``: the work directory's kept Prefect server, timed
   but reported apart, so that the first command's figure is not its
   start-up;
3. ``gmm ingest --source train.parquet``;
4. ``gmm select`` with the default config (no ``--config``: grid K = 1..6
   x the four covariance types, the K range extending up to 16, BIC on
   all rows, trimmed at ``contamination`` 0.01, early drops);
5. ``gmm fit --config fit.yaml``, ``fit.yaml`` naming only the winner's
   ``n_components`` and ``covariance_type`` (everything else the
   defaults: k-means init, ``random_state`` 0, SQUAREM, ``tol`` 1e-3, the
   anomaly threshold at ``anomaly.contamination`` 0.01);
6. the same rows, in their order, as ``PARTITIONS`` (or more, at most
   ``PARTITION_ROWS`` rows each) Parquet partitions in ``incoming/``, then
   ``gmm score``;

then ``gmm server stop``.  Each command is one subprocess timed wall to
wall by the driver (``time.perf_counter`` around ``subprocess.run``); each
runs once, as the product's own timing is not the point of this section.

The figures come from what the product wrote: the scores stores
``scores/<partition>.zarr`` (read with
:func:`pipeline.scores_store.read_scores`: per-row ``log_likelihood`` and
``is_anomaly``), concatenated in partition order, and the fit's
``summary.json`` (the contamination and threshold used).  Against the
outlier label: ROC-AUC of the negative log-likelihood, and the precision
and recall of ``is_anomaly``.

References in the same run, on the same rows in memory:
``sklearn.mixture.GaussianMixture`` with the winner's K and covariance
type twice, from the product's start (its ``weights_init``,
``means_init`` and ``precisions_init`` read from the fit's saved
initialisation, ``checkpoints/<run>/init``) and from its own
(scikit-learn's defaults, ``random_state=0``); fit wall seconds, ROC-AUC
of ``-score_samples``; and ``sklearn.ensemble.IsolationForest``
(defaults, ``random_state=0``; fit plus ``score_samples`` wall seconds,
ROC-AUC of ``-score_samples``).

Target: on every data set run, the product's ROC-AUC is at most
``AUC_MARGIN`` below scikit-learn's fit of the same model from the same
start: the product (out-of-core EM on the ingested store, SQUAREM, a
calibrated threshold, scoring as incoming partitions) loses no detection
quality against the in-memory library's EM.  The fit from scikit-learn's
own start is shown beside it and is not the target: which optimum EM
reaches depends on the k-means start, and on these sets that decides the
ROC-AUC by more than any margin.  On the small sets (``SPREAD_SETS``)
the section shows it: scikit-learn's own fits over ``random_state`` 0-7,
and the engine's with the product's settings and with plain EM from its
own k-means starts (in memory), their ROC-AUC spread and how often
SQUAREM ends at plain EM's optimum.  IsolationForest is a point of
comparison, not part of the target.

A data set whose package is not installed is reported as skipped with
the reason (:class:`benchmarks.odds.DataSetMissing`).

Wired into ``benchmarks/run.py`` as ``bench_real_data(ctx)``; alone, for
one or a few sets::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_real_data.py [--quick] [--sets shuttle,annthyroid] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
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

from benchmarks import odds  # noqa: E402
from benchmarks.common import finish_standalone  # noqa: E402

logger = logging.getLogger(__name__)

GMM = Path(sys.executable).with_name("gmm")
#: every set, small ones first so that a failure shows early
SETS = ("shuttle", "annthyroid", "shuttle_river", "kdd99", "covertype")
#: the sets of ``--quick`` (each runs in well under a minute)
QUICK_SETS = ("shuttle", "annthyroid", "shuttle_river")
#: incoming partitions per data set, at least; more when a set has more than PARTITION_ROWS rows
PARTITIONS = 2
PARTITION_ROWS = 65_536
#: the target: the product's ROC-AUC at most this far below scikit-learn's fit of the same model
AUC_MARGIN = 0.02
#: scikit-learn's EM iterations at most from the product's start (the judge is a converged fit)
SAME_START_MAX_ITER = 1000
#: the sets whose fits are cheap enough to repeat over SPREAD_SEEDS (scikit-learn's takes seconds there)
SPREAD_SETS = ("shuttle", "annthyroid", "shuttle_river")
SPREAD_SEEDS = tuple(range(8))
#: two fits whose lower bounds differ by at most this (nats per row) reached the same optimum
SAME_OPTIMUM = 0.01
#: every command is bounded (seconds), so a hang fails the section instead of holding the run
COMMAND_TIMEOUT = 3600
#: the YAML of ``gmm fit``: the winner, everything else the config's defaults
FIT_YAML = ("# gmm fit --config fit.yaml: the winner of gmm select\n"
            "model:\n  n_components: {K}\n  covariance_type: {ct}\n")


class CommandFailed(RuntimeError):
    """A ``gmm`` command exited non-zero; the message holds the tail of its output."""


# ---------------------------------------------------------------------------
# running the product


def _env() -> dict:
    """The environment of every command: the work directory's kept server, whatever the caller's Prefect settings."""
    from flows.runtime import PREFECT_MODE_VARIABLE

    # a user's PREFECT_API_URL or an ephemeral mode would bypass the kept server the commands are meant to use
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != PREFECT_MODE_VARIABLE}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    return env


def gmm(args, directory: Path) -> float:
    """Run ``gmm <args>`` in ``directory``; its wall seconds.

    Parameters
    ----------
    args : sequence of str
        The command line after ``gmm``.
    directory : Path
        The working directory of the process; its output goes to ``<first arg>.log`` there.

    Returns
    -------
    float
        Wall seconds of the whole process.

    Raises
    ------
    CommandFailed
        The command exited non-zero.
    """
    log = directory / f"{args[0]}.log"
    t = time.perf_counter()
    with open(log, "ab") as f:
        proc = subprocess.run([str(GMM), *args], cwd=directory, env=_env(), stdout=f, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)
    seconds = time.perf_counter() - t
    if proc.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise CommandFailed(f"`gmm {' '.join(args)}` in {directory} exited {proc.returncode}:\n{tail}")
    return seconds


def write_parquet(path: Path, X: np.ndarray) -> None:
    """``X`` as a Parquet table with columns ``f0``, ``f1``, ... (float64, no index)."""
    import pandas as pd

    pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])]).to_parquet(path, index=False)


def partition_bounds(n: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of the partitions: at least PARTITIONS, at most PARTITION_ROWS rows each."""
    count = max(PARTITIONS, math.ceil(n / PARTITION_ROWS))
    edges = np.linspace(0, n, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _summary(work: Path, kind: str) -> dict:
    """The ``summary.json`` of the one ``<kind>`` run in a fresh work directory's report folder."""
    from pipeline.workspace import Workspace

    found = sorted(Workspace(work).report.glob(f"{kind}-*/summary.json"))
    if len(found) != 1:
        raise RuntimeError(f"expected one {kind} summary in {Workspace(work).report}, found {len(found)}")
    return json.loads(found[0].read_text())


def read_product_scores(work: Path, ids: list[str], bounds: list[tuple[int, int]], version: str) -> dict:
    """Per-row ``log_likelihood`` and ``is_anomaly`` of the partitions ``ids``, concatenated in their order.

    Each store must hold all of its partition's rows (none dropped) and
    name the fitted model ``version``, so the rows line up with the labels.
    """
    from pipeline.scores_store import read_scores
    from pipeline.workspace import Workspace

    loglik, flag, threshold = [], [], None
    for pid, (a, b) in zip(ids, bounds):
        s = read_scores(Workspace(work).scores / f"{pid}.zarr")
        attrs = s["attrs"]
        if s["n_rows"] != b - a or attrs.get("rows_dropped", 0):
            raise RuntimeError(f"{pid}: {s['n_rows']} rows scored ({attrs.get('rows_dropped')} dropped), {b - a} sent")
        if attrs.get("model_version") != version:
            raise RuntimeError(f"{pid} was scored by model {attrs.get('model_version')}, not the fitted {version}")
        loglik.append(s["log_likelihood"])
        flag.append(s["is_anomaly"])
        threshold = attrs.get("threshold")
    return dict(log_likelihood=np.concatenate(loglik), is_anomaly=np.concatenate(flag), threshold=threshold)


def run_product(X: np.ndarray, directory: Path) -> dict:
    """ingest, select, fit, score on ``X`` in a fresh work directory ``directory/work``.

    Parameters
    ----------
    X : ndarray (n, d)
    directory : Path
        An empty directory for the input files, the work directory and the command logs.

    Returns
    -------
    dict
        ``seconds`` per command, the select and fit summaries' essentials,
        the partitions, and the per-row ``log_likelihood`` / ``is_anomaly``.
    """
    from flows import kept_server
    from pipeline.workspace import Workspace

    work = directory / "work"
    write_parquet(directory / "train.parquet", X)
    seconds = {}
    try:
        seconds["server start"] = gmm(["server", "start", "--workdir", "work"], directory)
        seconds["ingest"] = gmm(["ingest", "--source", "train.parquet", "--workdir", "work", "--no-progress"],
                                directory)
        seconds["select"] = gmm(["select", "--workdir", "work", "--no-progress"], directory)
        select = _summary(work, "select")
        K, ct = select["selected"]["n_components"], select["selected"]["covariance_type"]
        (directory / "fit.yaml").write_text(FIT_YAML.format(K=K, ct=ct))
        seconds["fit"] = gmm(["fit", "--config", "fit.yaml", "--workdir", "work", "--no-progress"], directory)
        fit = _summary(work, "fit")
        bounds = partition_bounds(len(X))
        ids = [f"part-{i:03d}" for i in range(len(bounds))]
        for pid, (a, b) in zip(ids, bounds):  # written before the command, as arrived partitions (not timed)
            write_parquet(Workspace(work).incoming / f"{pid}.parquet", X[a:b])
        seconds["score"] = gmm(["score", "--workdir", "work", "--no-progress"], directory)
        seconds["server stop"] = gmm(["server", "stop", "--workdir", "work"], directory)
    finally:  # never leave a server behind, whatever failed
        kept_server.stop(Workspace(work).prefect_home)
    scores = read_product_scores(work, ids, bounds, fit["version"])
    scores["start"] = product_start(work)
    k_range = select["k_range"]
    return dict(
        seconds=seconds, n_components=int(K), covariance_type=ct, partitions=[b - a for a, b in bounds],
        select=dict(stopped_by=k_range.get("stopped_by"), tried=k_range.get("tried"), warning=select.get("warning"),
                    candidates=len(select["candidates"]), passes=select.get("passes"),
                    criterion=select.get("criterion")),
        fit=dict(version=fit["version"], n_iter=fit["n_iter"], converged=fit["converged"], passes=fit.get("passes"),
                 lower_bound=fit["lower_bound"], acceleration=fit.get("acceleration"),
                 contamination=fit["threshold"]["contamination"], threshold=fit["threshold"]["threshold"]),
        **scores,
    )


# ---------------------------------------------------------------------------
# references and figures of merit


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil's (1982) standard error of a ROC-AUC from ``n_pos`` outliers and ``n_neg`` inliers.

    Shown beside the AUCs because shuttle has 13 outliers: one of them
    moving past a few inliers shifts the AUC by more than the target's margin.
    """
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return float(math.sqrt(max(var, 0.0)))


def detection(y: np.ndarray, outlyingness: np.ndarray, flag: np.ndarray | None = None) -> dict:
    """ROC-AUC of ``outlyingness`` (larger: more outlying) against ``y``; precision and recall of ``flag``."""
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, outlyingness))
    n_pos = int(np.sum(y))
    out = dict(roc_auc=auc, roc_auc_se=auc_standard_error(auc, n_pos, len(y) - n_pos))
    if flag is not None:
        hits = int(np.sum(flag & y))
        flagged = int(np.sum(flag))
        out.update(flagged=flagged, true_positives=hits,
                   precision=hits / flagged if flagged else float("nan"), recall=hits / int(np.sum(y)))
    return out


def product_start(work: Path):
    """The product fit's initial parameters (``checkpoints/<run>/init``, saved by ``gmm fit``): a GaussianMixture."""
    from gmm_engine import GaussianMixture

    inits = sorted((work / "checkpoints").glob("*/init/model.json"))
    if len(inits) != 1:
        raise RuntimeError(f"expected one fit's initialisation under {work / 'checkpoints'}, found {len(inits)}")
    return GaussianMixture.load(inits[0].parent)


def sklearn_gmm(X: np.ndarray, y: np.ndarray, K: int, covariance_type: str, start=None,
                random_state: int = 0) -> dict:
    """scikit-learn's GaussianMixture of the winner: fit seconds and ROC-AUC.

    Its defaults and ``random_state`` (its own k-means start), or, with
    ``start`` (a fitted-looking model), EM from ``start``'s weights, means
    and precisions: scikit-learn's algorithm from the product's start,
    with the product's ``tol`` (scikit-learn's default) and up to
    ``SAME_START_MAX_ITER`` iterations, so that the judge is a converged
    fit (the product's 100 passes are SQUAREM's; covertype's K=16 took
    scikit-learn more than 100 plain ones).  Given all three, scikit-learn still computes the
    responsibilities of ``init_params`` and discards them: the cheapest
    method keeps a k-means fit out of the timed seconds.
    """
    from sklearn.mixture import GaussianMixture

    given = {} if start is None else dict(weights_init=start.weights_, means_init=start.means_,
                                           precisions_init=start.precisions_, init_params="random_from_data",
                                           max_iter=SAME_START_MAX_ITER)
    gm = GaussianMixture(K, covariance_type=covariance_type, random_state=random_state, **given)
    t = time.perf_counter()
    with warnings.catch_warnings():  # a ConvergenceWarning is recorded as converged=False instead
        warnings.simplefilter("ignore")
        gm.fit(X)
    seconds = time.perf_counter() - t
    return dict(seconds=seconds, n_iter=int(gm.n_iter_), converged=bool(gm.converged_),
                lower_bound=float(gm.lower_bound_), **detection(y, -gm.score_samples(X)))


def isolation_forest(X: np.ndarray, y: np.ndarray) -> dict:
    """IsolationForest (defaults, random_state=0): fit plus score_samples seconds and ROC-AUC."""
    from sklearn.ensemble import IsolationForest

    t = time.perf_counter()
    forest = IsolationForest(random_state=0).fit(X)
    scores = forest.score_samples(X)
    seconds = time.perf_counter() - t
    return dict(seconds=seconds, **detection(y, -scores))


def seed_spread(X: np.ndarray, y: np.ndarray, K: int, covariance_type: str, fitted: dict) -> dict:
    """ROC-AUC and lower bound over ``SPREAD_SEEDS``: scikit-learn's own starts, and the engine's from its own.

    The engine fits in memory with the product's model settings (SQUAREM,
    the fit config's defaults) and, from the same k-means starts, with
    plain EM: which optimum each start leads to, and whether SQUAREM ends
    at plain EM's.  ``fitted`` maps seeds to scikit-learn fits this run
    already made (:func:`sklearn_gmm`'s results), which are not repeated.
    """
    from gmm_engine import GaussianMixture

    out = {"seeds": list(SPREAD_SEEDS), "sklearn": [], "squarem": [], "plain": []}
    for seed in SPREAD_SEEDS:
        out["sklearn"].append(fitted[seed] if seed in fitted
                              else sklearn_gmm(X, y, K, covariance_type, random_state=seed))
        for key, acceleration in (("squarem", "squarem"), ("plain", None)):
            gm = GaussianMixture(K, covariance_type=covariance_type, random_state=seed, acceleration=acceleration)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm.fit(X)
            out[key].append(dict(lower_bound=float(gm.lower_bound_), converged=bool(gm.converged_),
                                 **detection(y, -gm.score_samples(X))))
    return out


def run_set(name: str) -> dict:
    """The product and both references on data set ``name``; ``{"skipped": reason}`` when its package is missing."""
    try:
        X, y = odds.load(name)
    except odds.DataSetMissing as exc:
        logger.warning("real_data: %s skipped: %s", name, exc)
        return dict(skipped=str(exc))
    logger.info("real_data: %s, %d x %d, %d outliers", name, X.shape[0], X.shape[1], int(y.sum()))
    with tempfile.TemporaryDirectory(prefix=f"gmm-real-{name}-") as tmp:
        product = run_product(X, Path(tmp))
    product.update(detection(y, -product.pop("log_likelihood"), product.pop("is_anomaly")))
    start = product.pop("start")
    logger.info("real_data: %s: K=%d %s, ROC-AUC %.4f, commands %s", name, product["n_components"],
                product["covariance_type"], product["roc_auc"],
                ", ".join(f"{k} {v:.1f} s" for k, v in product["seconds"].items()))
    sk = sklearn_gmm(X, y, product["n_components"], product["covariance_type"])
    logger.info("real_data: %s: scikit-learn GaussianMixture %.2f s, ROC-AUC %.4f", name, sk["seconds"], sk["roc_auc"])
    same = sklearn_gmm(X, y, product["n_components"], product["covariance_type"], start=start)
    logger.info("real_data: %s: scikit-learn GaussianMixture from the product's start %.2f s, ROC-AUC %.4f",
                name, same["seconds"], same["roc_auc"])
    forest = isolation_forest(X, y)
    logger.info("real_data: %s: IsolationForest %.2f s, ROC-AUC %.4f", name, forest["seconds"], forest["roc_auc"])
    spread = (seed_spread(X, y, product["n_components"], product["covariance_type"], fitted={0: sk})
              if name in SPREAD_SETS else None)
    return dict(rows=int(X.shape[0]), features=int(X.shape[1]), outliers=int(y.sum()), product=product,
                sklearn_gmm=sk, sklearn_gmm_same_start=same, isolation_forest=forest, seed_spread=spread)


def _set_figures(name: str, r: dict) -> list:
    if "skipped" in r:
        return [(f"{name}: skipped", r["skipped"])]
    p, sk, same, forest = r["product"], r["sklearn_gmm"], r["sklearn_gmm_same_start"], r["isolation_forest"]
    s = p["seconds"]
    model = f"K={p['n_components']} {p['covariance_type']}"
    return [
        (f"{name} ({r['rows']:,} x {r['features']}, {r['outliers']:,} outliers): winner of `gmm select`", model),
        (f"{name}: `gmm server start`, s (before the timed commands)", s["server start"]),
        (f"{name}: `gmm ingest` of the Parquet file, s", s["ingest"]),
        (f"{name}: `gmm select` (default config), s", s["select"]),
        (f"{name}: `gmm fit` of the winner, s", s["fit"]),
        (f"{name}: `gmm score`, {len(p['partitions'])} partitions, s", s["score"]),
        (f"{name}: product ROC-AUC (negative log-likelihood)", p["roc_auc"]),
        (f"{name}: its standard error (Hanley-McNeil)", p["roc_auc_se"]),
        (f"{name}: product anomaly flag (contamination {p['fit']['contamination']:g}): rows flagged", p["flagged"]),
        (f"{name}: product anomaly flag: precision", p["precision"]),
        (f"{name}: product anomaly flag: recall", p["recall"]),
        (f"{name}: scikit-learn GaussianMixture {model} from the product's start: fit, s", same["seconds"]),
        (f"{name}: scikit-learn GaussianMixture {model} from the product's start: ROC-AUC", same["roc_auc"]),
        (f"{name}: scikit-learn GaussianMixture {model}, its own start (random_state=0): fit, s", sk["seconds"]),
        (f"{name}: scikit-learn GaussianMixture {model}, its own start: ROC-AUC", sk["roc_auc"]),
        # a higher bound with a lower AUC says the fits reached different optima, not that scoring went wrong
        (f"{name}: lower bound per row, product fit / scikit-learn from its start / scikit-learn's own start",
         f"{p['fit']['lower_bound']:.4f} / {same['lower_bound']:.4f} / {sk['lower_bound']:.4f}"),
        (f"{name}: EM converged: product / scikit-learn from its start / its own start",
         f"{p['fit']['converged']} / {same['converged']} / {sk['converged']}"),
        (f"{name}: IsolationForest (defaults): fit + score, s", forest["seconds"]),
        (f"{name}: IsolationForest: ROC-AUC", forest["roc_auc"]),
        *_spread_figures(name, model, r.get("seed_spread")),
    ]


def _spread_figures(name: str, model: str, spread) -> list:
    if not spread:
        return []

    def auc(key):
        v = [f["roc_auc"] for f in spread[key]]
        return f"{min(v):.3f} / {float(np.median(v)):.3f} / {max(v):.3f}"

    gaps = [a["lower_bound"] - b["lower_bound"] for a, b in zip(spread["squarem"], spread["plain"])]
    same = sum(abs(g) <= SAME_OPTIMUM for g in gaps)
    higher, lower = sum(g > SAME_OPTIMUM for g in gaps), sum(g < -SAME_OPTIMUM for g in gaps)
    seeds = f"random_state {spread['seeds'][0]}-{spread['seeds'][-1]}"
    return [
        (f"{name}: {model} over {seeds}, ROC-AUC min / median / max: scikit-learn from its own starts", auc("sklearn")),
        (f"{name}: the same, the engine with the product's settings (SQUAREM) from its own starts", auc("squarem")),
        (f"{name}: the same, plain EM from those starts", auc("plain")),
        (f"{name}: starts where SQUAREM ends at plain EM's optimum (lower bounds within {SAME_OPTIMUM:g} nats/row)",
         f"{same} of {len(spread['seeds'])} (elsewhere higher: {higher}, lower: {lower})"),
    ]


def bench_real_data(ctx) -> dict:
    """Section ``real_data`` of ``benchmarks/run.py``: ``ctx.quick`` runs only the small sets.

    Parameters
    ----------
    ctx : benchmarks.run.Context or argparse.Namespace
        ``quick`` is read; ``sets`` (a tuple of names), when present, overrides the choice.

    Returns
    -------
    dict
        ``title``, ``target``, ``met``, ``figures`` (label, value) and ``raw`` (every number per set).
    """
    names = getattr(ctx, "sets", None) or (QUICK_SETS if ctx.quick else SETS)
    results = {name: run_set(name) for name in names}
    ran = {n: r for n, r in results.items() if "skipped" not in r}
    shortfall = {n: r["sklearn_gmm_same_start"]["roc_auc"] - r["product"]["roc_auc"] for n, r in ran.items()}
    own = {n: r["sklearn_gmm"]["roc_auc"] - r["product"]["roc_auc"] for n, r in ran.items()}
    figures = [
        ("data sets run / skipped", f"{len(ran)} / {len(results) - len(ran)}"),
        ("ROC-AUC product / scikit-learn GMM from the product's start / from its own start / IsolationForest",
         "; ".join(f"{n} {r['product']['roc_auc']:.3f} / {r['sklearn_gmm_same_start']['roc_auc']:.3f} / "
                   f"{r['sklearn_gmm']['roc_auc']:.3f} / {r['isolation_forest']['roc_auc']:.3f}"
                   for n, r in ran.items()) or "-"),
        ("largest ROC-AUC shortfall of the product against scikit-learn's GMM of the same model from the same start",
         max(shortfall.values()) if shortfall else float("nan")),
        ("largest ROC-AUC shortfall against scikit-learn's GMM from its own start (not the target: a different "
         "k-means start, a different optimum)", max(own.values()) if own else float("nan")),
        ("product anomaly flag precision / recall",
         "; ".join(f"{n} {r['product']['precision']:.3f} / {r['product']['recall']:.3f}" for n, r in ran.items())
         or "-"),
    ]
    for name, r in results.items():
        figures += _set_figures(name, r)
    return dict(
        title=("Real outlier data (ODDS): the product end to end (`gmm ingest`, `select`, `fit`, `score` in a fresh "
               f"work directory) on {', '.join(names)}, against scikit-learn in the same run"),
        target=(f"on every data set, the product's ROC-AUC (negative log-likelihood against the outlier label) at "
                f"most {AUC_MARGIN:g} below scikit-learn's GaussianMixture of the same K and covariance type from "
                f"the same start"),
        met=bool(ran) and all(v <= AUC_MARGIN for v in shortfall.values()),
        figures=figures,
        raw=dict(sets=results, partition_rows=PARTITION_ROWS, min_partitions=PARTITIONS, auc_margin=AUC_MARGIN,
                 fit_yaml=FIT_YAML, repeats=1),
    )


def main(argv=None) -> int:
    """Run the section alone and log its figures (``--json``: also write the result there)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small sets only: " + ", ".join(QUICK_SETS))
    parser.add_argument("--sets", default="", help="comma-separated data sets (default: all, or --quick's)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
    unknown = sorted(set(sets) - set(odds.NAMES))
    if unknown:
        parser.error(f"unknown data set(s) {unknown}; choose from {list(odds.NAMES)}")
    return finish_standalone(bench_real_data(argparse.Namespace(quick=args.quick, sets=sets)), args.json)


if __name__ == "__main__":
    sys.exit(main())
