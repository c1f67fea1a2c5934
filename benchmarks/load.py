"""Load: one scheduled ``gmm serve`` run over many incoming partitions.

The one driver behind ``tests/test_load.py`` (everything scored exactly
once, memory bounded) and ``benchmarks/run.py --only load`` (throughput in
BENCHMARKS.md):

* :func:`prepare` writes a small training set, fits and registers a model,
  and drops the partitions into ``incoming/`` *before* the server starts,
  so the first scheduled run finds all of them;
* :func:`run_scheduled` starts ``gmm serve`` (a real local Prefect server
  plus the served deployment, short interval), samples the resident memory
  of its whole process tree, waits until every partition is in the manifest
  and the run that scored them has finished, and reads that run's and its
  task runs' timings from the Prefect API;
* :func:`check_outputs` lists every way the manifest, the scores stores and
  the staging area disagree with what was dropped;
* :func:`direct_reference` and :func:`single_partition_reference` score the
  same rows without Prefect (the task body called directly, same cluster
  shape and parallelism) and as one partition: the references the
  scheduled run is compared to.

Every wait is bounded; a stall or a dead ``gmm serve`` raises
:class:`LoadRunError` with the tail of its log.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import TreeRSS

logger = logging.getLogger(__name__)

GMM = Path(sys.executable).with_name("gmm")
FORMATS = ("parquet", "npy", "zarr", "csv")
N_FEATURES = 4
N_COMPONENTS = 3
TRAIN_ROWS = 20_000
GIB = 2**30
#: Prefect's task-run records may lag the flow: wait while their count rose in the last this many seconds
SETTLE_SECONDS = 60.0


class LoadRunError(RuntimeError):
    """The scheduled run failed, stalled, or ``gmm serve`` died; the message has its log tail."""


@dataclass(frozen=True)
class LoadSpec:
    """One load scenario.

    ``rows`` is the nominal size; partition ``i`` has ``rows - i % (rows // 20)``
    rows, so a store attributed to the wrong partition shows up as a wrong count.
    """

    n_partitions: int
    rows: int
    formats: tuple = FORMATS
    max_parallel: int = 4
    n_workers: int = 2
    interval_seconds: float = 5.0
    timeout: float = 900.0  # whole wait, from `gmm serve` start to the run's end
    stall_seconds: float = 240.0  # longest time without a new manifest entry
    sample_seconds: float = 0.5

    def partition_rows(self, i: int) -> int:
        return self.rows - i % max(1, self.rows // 20)

    def partition_id(self, i: int) -> str:
        return f"p{i:05d}"

    def expected(self) -> dict:
        return {self.partition_id(i): self.partition_rows(i) for i in range(self.n_partitions)}


# ---------------------------------------------------------------------------
# preparation


def _names():
    return [f"x{j}" for j in range(N_FEATURES)]


def prepare(root, spec: LoadSpec, seed: int = 0) -> Path:
    """Create ``root/work`` with a registered model and ``spec.n_partitions`` partitions in incoming/.

    Returns the work directory.
    """
    import zarr

    from benchmarks.common import mixture_spec, sample_rows
    from gmm_engine import GaussianMixture
    from pipeline.demo_data import write_partition
    from pipeline.registry import ModelRegistry
    from pipeline.training import register_model

    work = Path(root) / "work"
    incoming = work / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    names = _names()
    mixture = mixture_spec(N_FEATURES, N_COMPONENTS, seed)
    train = work / "data" / "train.zarr"
    z = zarr.create_array(str(train), shape=(TRAIN_ROWS, N_FEATURES), chunks=(TRAIN_ROWS // 4, N_FEATURES),
                          dtype="float32", overwrite=True)
    z[:] = sample_rows(mixture, 0, TRAIN_ROWS, seed, np.float32)
    z.attrs["feature_names"] = names
    gm = GaussianMixture(N_COMPONENTS, covariance_type="full", random_state=0, max_iter=50).fit(str(train))
    register_model(gm, str(train), ModelRegistry(work / "models"), contamination=0.01)

    t = time.perf_counter()
    start = TRAIN_ROWS  # partitions are rows the model has not seen
    for i in range(spec.n_partitions):
        n = spec.partition_rows(i)
        X = sample_rows(mixture, start, start + n, seed, np.float32)
        start += n
        write_partition(incoming, spec.partition_id(i), X, names, spec.formats[i % len(spec.formats)])
    logger.info("wrote %d partitions (%d rows) in %.1f s", spec.n_partitions, start - TRAIN_ROWS,
                time.perf_counter() - t)
    return work


# ---------------------------------------------------------------------------
# the scheduled run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None, timeout: float = 30.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class _ApiCalls:
    """Prefect API reads that tolerate a slow server: a failed read returns a default and is counted.

    Under load the local server can take longer than the read timeout to
    answer; the driver keeps waiting (bounded by its own deadline) and
    reports how slow the API was.
    """

    def __init__(self):
        self.calls = self.failures = 0
        self.slowest = 0.0

    def get(self, fn, default):
        self.calls += 1
        t = time.monotonic()
        try:
            return fn()
        except OSError as exc:  # URLError, timeouts and refused connections are OSErrors
            self.failures += 1
            logger.warning("Prefect API read failed after %.1f s: %s", time.monotonic() - t, exc)
            return default
        finally:
            self.slowest = max(self.slowest, time.monotonic() - t)


def _time(s: str | None) -> float | None:
    return None if s is None else _dt.datetime.fromisoformat(s).timestamp()


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


@dataclass
class ScheduledRun:
    """What :func:`run_scheduled` measured."""

    spec: dict
    run_ids: list  # distinct run ids in the manifest (one when a single run scored everything)
    flow_run: dict  # id, auto_scheduled, deployment_id, state, times from the Prefect API
    task_runs: dict  # score-partition task run durations from the Prefect API
    peak_rss: int
    peak_processes: list
    idle_rss: int  # tree RSS when the server has just become healthy: server + serve process
    rss_first_third: int  # peak tree RSS in the first third of the partitions' window
    rss_last_third: int
    n_processes_max: int
    seconds_to_healthy: float
    api: dict  # the driver's reads of the Prefect API: calls, failures, slowest seconds
    log: str
    progress: list = field(default_factory=list)  # (seconds since start, partitions scored)


def _serve_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    return env


def _scored_count(manifest: Path) -> int:
    import sqlite3

    if not manifest.exists():
        return 0
    # read-only: a Manifest() here could create the schema before the flow does
    with contextlib.closing(sqlite3.connect(f"file:{manifest}?mode=ro", uri=True, timeout=30)) as conn:
        try:
            return conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        except sqlite3.OperationalError:  # schema not created yet
            return 0


def _run_ids(manifest: Path) -> list[str]:
    import sqlite3

    if not manifest.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{manifest}?mode=ro", uri=True, timeout=30)) as conn:
        try:
            rows = conn.execute("SELECT DISTINCT run_id FROM entries UNION SELECT DISTINCT run_id FROM claims")
            return sorted({r[0] for r in rows})
        except sqlite3.OperationalError:
            return []


def _failures(manifest: Path) -> list[tuple[str, str]]:
    import sqlite3

    if not manifest.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{manifest}?mode=ro", uri=True, timeout=30)) as conn:
        try:
            return conn.execute("SELECT partition_id, error FROM failures ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []


def _flow_run(api: str, run_id: str) -> dict:
    return _api(api, f"/flow_runs/{run_id.removeprefix('flow-run-')}")


def _task_runs(api: str, flow_run_id: str) -> list[dict]:
    out, offset = [], 0
    while True:
        page = _api(api, "/task_runs/filter", {
            "flow_runs": {"id": {"any_": [flow_run_id]}}, "sort": "EXPECTED_START_TIME_ASC",
            "limit": 200, "offset": offset,
        })
        out += page
        if len(page) < 200:
            return out
        offset += 200


def _summarise_tasks(tasks: list[dict], flow: dict) -> dict:
    scoring = [t for t in tasks if t["name"].startswith("score-partition") and t.get("end_time")]
    if not scoring:
        return {"n": 0}
    starts = [_time(t["start_time"]) for t in scoring]
    ends = [_time(t["end_time"]) for t in scoring]
    durations = [e - s for s, e in zip(starts, ends)]
    window = max(ends) - min(starts)
    flow_start, flow_end = _time(flow["start_time"]), _time(flow["end_time"])
    return {
        "n": len(scoring),
        "window_s": window,
        "mean_s": statistics.fmean(durations),
        "median_s": statistics.median(durations),
        "p95_s": float(np.quantile(durations, 0.95)),
        "max_s": max(durations),
        "sum_s": sum(durations),
        # how many scoring tasks ran at once on average: max_parallel when the
        # flow keeps its pool full, less when submitting is the bottleneck
        "mean_concurrency": sum(durations) / window if window > 0 else float("nan"),
        "before_first_task_s": min(starts) - flow_start,
        "after_last_task_s": flow_end - max(ends),
        "other_tasks": sorted({t["name"].rsplit("-", 1)[0] for t in tasks} - {"score-partition"}),
    }


def run_scheduled(root, spec: LoadSpec) -> ScheduledRun:
    """Serve ``root/work`` (see :func:`prepare`) until one scheduled run has scored every partition.

    Raises
    ------
    LoadRunError
        ``gmm serve`` exited, a partition failed, the run ended without
        scoring everything, nothing was scored for ``spec.stall_seconds``,
        or ``spec.timeout`` passed.
    """
    import yaml

    root = Path(root)
    work = root / "work"
    manifest = work / "manifest.sqlite"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    cfg = root / "serve.yaml"
    cfg.write_text(yaml.safe_dump({
        "interval_seconds": spec.interval_seconds,
        "server_port": port,
        "score": {"workdir": str(work), "max_parallel": spec.max_parallel,
                  "cluster": {"n_workers": spec.n_workers}},
    }))
    log_path = root / "serve.log"
    n = spec.n_partitions
    api_calls = _ApiCalls()
    t0 = time.monotonic()
    deadline = t0 + spec.timeout
    progress: list[tuple[float, int]] = []
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(GMM), "serve", "--config", str(cfg)], env=_serve_env(root / "client-home"),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def fail(why: str):
        raise LoadRunError(f"{why}\n--- gmm serve log (tail) ---\n{_tail(log_path)}\n"
                           f"--- prefect server log (tail) ---\n{_tail(work / 'prefect' / 'server.log', 2000)}")

    def alive():
        if proc.poll() is not None:
            fail(f"gmm serve exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            fail(f"timed out after {spec.timeout:g} s with {_scored_count(manifest)} of {n} partitions scored")

    try:
        with TreeRSS(proc.pid, spec.sample_seconds) as rss:
            from flows.prefect_server import healthy

            while not healthy(api):
                alive()
                time.sleep(0.5)
            t_healthy = time.monotonic()
            logger.info("Prefect server healthy after %.1f s", t_healthy - t0)
            idle = rss.sample()[0]
            last, last_change, flow_id, next_state_check = -1, time.monotonic(), None, 0.0
            while True:
                alive()
                done = _scored_count(manifest)
                now = time.monotonic()
                if done != last:
                    if last <= 0 < done or done == n or done // max(1, n // 10) != last // max(1, n // 10):
                        logger.info("%d of %d partitions scored after %.1f s", done, n, now - t0)
                    last, last_change = done, now
                    progress.append((now - t0, done))
                elif now - last_change > spec.stall_seconds:
                    fail(f"no partition scored for {spec.stall_seconds:g} s ({done} of {n} scored)")
                if flow_id is None:
                    ids = _run_ids(manifest)
                    if ids:
                        flow_id = ids[0]
                failed = _failures(manifest) if done < n else []
                if failed:
                    fail(f"{len(failed)} partition(s) failed, e.g. {failed[0][0]}: {failed[0][1]}")
                if done >= n:
                    break
                if flow_id is not None and now >= next_state_check:
                    next_state_check = now + 5
                    state = api_calls.get(lambda: _flow_run(api, flow_id), {}).get("state_type")
                    if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                        # re-count: the run may have recorded the last partitions since
                        if _scored_count(manifest) < n:
                            fail(f"run {flow_id} ended {state} with {_scored_count(manifest)} of {n} partitions scored")
                time.sleep(1.0)
            t_all = time.monotonic()
            run_ids = _run_ids(manifest)
            flow = {}
            # the run still exports the manifest and writes its report after the last partition
            while time.monotonic() < deadline:
                flow = api_calls.get(lambda: _flow_run(api, run_ids[0]), {})
                if flow.get("state_type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and flow.get("end_time"):
                    break
                alive()
                time.sleep(1)
            else:
                fail(f"run {run_ids[0]} did not finish after scoring every partition")
            # Task run states arrive through the server's event pipeline, which under
            # this load runs minutes behind the flow: wait while the count still rises.
            tasks, seen, stalled = [], -1, time.monotonic() + SETTLE_SECONDS
            while time.monotonic() < min(stalled, deadline + SETTLE_SECONDS):
                tasks = api_calls.get(lambda: _task_runs(api, flow["id"]), tasks)
                done = sum(t["name"].startswith("score-partition") and bool(t.get("end_time")) for t in tasks)
                if done >= n:
                    break
                if done > seen:
                    seen, stalled = done, time.monotonic() + SETTLE_SECONDS
                time.sleep(2)
            peak, peak_procs = rss.peak, rss.peak_processes
    finally:
        _stop(proc)
    t_first = t0 + next(t for t, d in progress if d > 0)
    third = (t_all - t_first) / 3
    first_third = rss.between(t_first, t_first + third)
    last_third = rss.between(t_all - third, t_all)
    return ScheduledRun(
        spec=asdict(spec),
        run_ids=run_ids,
        flow_run={
            "id": flow["id"],
            "auto_scheduled": flow.get("auto_scheduled"),
            "deployment_id": flow.get("deployment_id"),
            "state": flow.get("state_type"),
            "expected_start_time": flow.get("expected_start_time"),
            "start_time": flow.get("start_time"),
            "end_time": flow.get("end_time"),
            "wall_s": _time(flow["end_time"]) - _time(flow["start_time"]),
            "late_s": _time(flow["start_time"]) - _time(flow["expected_start_time"]),
        },
        task_runs=_summarise_tasks(tasks, flow),
        peak_rss=peak,
        peak_processes=peak_procs,
        idle_rss=idle,
        rss_first_third=max(first_third, default=0),
        rss_last_third=max(last_third, default=0),
        n_processes_max=max((p for _, _, p in rss.samples), default=0),
        seconds_to_healthy=t_healthy - t0,
        api={"calls": api_calls.calls, "failures": api_calls.failures, "slowest_s": api_calls.slowest},
        log=str(log_path),
        progress=progress,
    )


def _stop(proc: subprocess.Popen) -> None:
    """Stop ``gmm serve`` like Ctrl-C; kill its process group if it does not exit in a minute."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        logger.warning("gmm serve did not stop within 60 s of SIGINT; killing its process group")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ---------------------------------------------------------------------------
# checks


def check_outputs(work, expected: dict) -> list[str]:
    """Every disagreement between what was dropped and what the run left behind.

    ``expected`` maps partition id to row count.  Checked: one manifest entry
    per partition and no other, with the right row count and anomaly count,
    recorded by a single run; one complete scores store per partition at the
    recorded path, holding that many rows, and nothing else in the outputs
    directory (no temporaries, no orphans); no claims or failures left; an
    empty staging area.
    """
    from pipeline.manifest import Manifest
    from pipeline.scores_store import read_scores

    work = Path(work)
    scores = work / "scores"
    problems = []
    m = Manifest(work / "manifest.sqlite")
    entries = {e.partition_id: e for e in m.entries()}
    missing = sorted(set(expected) - set(entries))
    extra = sorted(set(entries) - set(expected))
    if missing:
        problems.append(f"{len(missing)} partitions not in the manifest, e.g. {missing[:5]}")
    if extra:
        problems.append(f"{len(extra)} unexpected manifest entries, e.g. {extra[:5]}")
    runs = sorted({e.run_id for e in entries.values()})
    if len(runs) != 1:
        problems.append(f"partitions were scored by {len(runs)} runs, not one: {runs[:5]}")
    for pid, e in sorted(entries.items()):
        if pid not in expected:
            continue
        out = scores / f"{pid}.zarr"
        if Path(e.output_path) != out:
            problems.append(f"{pid}: manifest output {e.output_path}, expected {out}")
            continue
        if e.n_rows != expected[pid]:
            problems.append(f"{pid}: manifest has {e.n_rows} rows, the partition has {expected[pid]}")
        try:
            s = read_scores(out)
        except Exception as exc:  # any unreadable store is a finding, not a crash of the check
            problems.append(f"{pid}: scores store unreadable: {type(exc).__name__}: {exc}")
            continue
        if s["n_rows"] != expected[pid] or len(s["log_likelihood"]) != expected[pid]:
            problems.append(f"{pid}: store has {s['n_rows']} rows, the partition has {expected[pid]}")
        if int(s["is_anomaly"].sum()) != e.n_anomalies:
            problems.append(f"{pid}: store flags {int(s['is_anomaly'].sum())} anomalies, manifest {e.n_anomalies}")
        if s["attrs"].get("partition_id") != pid or s["attrs"].get("run_id") != e.run_id:
            problems.append(f"{pid}: store attributes name {s['attrs'].get('partition_id')}/{s['attrs'].get('run_id')}")
    listed = sorted(p.name for p in scores.iterdir()) if scores.is_dir() else []
    unexpected = [name for name in listed if name.removesuffix(".zarr") not in expected or not name.endswith(".zarr")]
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected entries in {scores}: {unexpected[:5]}")
    staging = work / "staging"
    leftovers = sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []
    if leftovers:
        problems.append(f"{len(leftovers)} entries left in {staging}: {leftovers[:5]}")
    if m.claims():
        problems.append(f"{len(m.claims())} claims left in the manifest")
    if m.failures():
        problems.append(f"{len(m.failures())} failures recorded, e.g. {m.failures()[0]}")
    return problems


# ---------------------------------------------------------------------------
# references


def _score_directly(work: Path, incoming: Path, dest: Path, spec: LoadSpec, limit: int | None = None) -> dict:
    """The score-partition task body over ``incoming``, without Prefect; outputs under ``dest``."""
    from flows.config import ScoreConfig
    from flows.score_flow import ScoringPaths, score_partition_task
    from pipeline.cluster import cluster, connect
    from pipeline.partitions import discover_partitions
    from pipeline.registry import ModelRegistry

    models = str(work / "models")
    version = ModelRegistry(models).load("current").version
    parts = discover_partitions(str(incoming)).partitions[:limit]
    paths = ScoringPaths(incoming=str(incoming), outputs=str(dest / "scores"), staging=str(dest / "staging"),
                         manifest=str(dest / "manifest.sqlite"), manifest_export=str(dest / "manifest.json"),
                         models=models)
    for d in ("scores", "staging"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    body = score_partition_task.fn
    config = ScoreConfig(workdir=work)
    with cluster(n_workers=spec.n_workers) as handle:
        t = time.perf_counter()
        with ThreadPoolExecutor(spec.max_parallel) as pool:
            results = list(pool.map(lambda p: body(p, version, paths, "reference", config, handle), parts))
        seconds = time.perf_counter() - t
        # fixed costs the task body pays per partition, measured on the same cluster
        load = _median_time(lambda: ModelRegistry(models).load(version), 20)

        def connect_close():
            with connect(handle.address):
                pass

        conn = _median_time(connect_close, 20)
    bad = [r for r in results if r["status"] != "scored"]
    if bad:
        raise LoadRunError(f"reference scoring failed for {len(bad)} partitions, e.g. {bad[0]}")
    return {"partitions": len(parts), "rows": sum(r["n_rows"] for r in results), "seconds": seconds,
            "task_mean_s": statistics.fmean(r["seconds"] for r in results),
            "model_load_s": load, "client_connect_close_s": conn}


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def direct_reference(root, spec: LoadSpec, limit: int | None = None) -> dict:
    """The same partitions scored by the task body without Prefect, same cluster shape and parallelism."""
    root = Path(root)
    return _score_directly(root / "work", root / "work" / "incoming", root / "direct", spec, limit)


def single_partition_reference(root, spec: LoadSpec, seed: int = 0) -> dict:
    """The same rows as one .npy partition, scored by the task body without Prefect."""
    from benchmarks.common import mixture_spec, sample_rows

    root = Path(root)
    dest = root / "single"
    incoming = dest / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    total = sum(spec.expected().values())
    # prepare() drew the partitions as consecutive row ranges after the training rows
    X = sample_rows(mixture_spec(N_FEATURES, N_COMPONENTS, seed), TRAIN_ROWS, TRAIN_ROWS + total, seed, np.float32)
    np.save(incoming / "all.npy", X)
    del X
    return _score_directly(root / "work", incoming, dest, spec)


def read_reference(root) -> dict:
    """Seconds to stage every partition once, one after the other, with the pipeline's reader.

    ``pipeline.ingest.ingest`` is the first step of scoring a partition: read,
    validate, write a staging Zarr array.
    """
    import shutil

    from pipeline.ingest import ingest

    root = Path(root)
    incoming = root / "work" / "incoming"
    dest = root / "read"
    dest.mkdir(parents=True, exist_ok=True)
    parts = sorted(p for p in incoming.iterdir() if not p.name.startswith("."))
    t = time.perf_counter()
    rows = 0
    for p in parts:
        npy = p.suffix == ".npy"
        r = ingest(str(p), str(dest / f"{p.name}.zarr"), feature_names=_names() if npy else None)
        rows += r.report.n_rows_written
    seconds = time.perf_counter() - t
    shutil.rmtree(dest)
    return {"partitions": len(parts), "rows": rows, "seconds": seconds}


# ---------------------------------------------------------------------------
# the benchmark


#: Peak resident memory of the whole ``gmm serve`` tree.  Measured here: 1.3-1.5 GB, all
#: fixed costs of six processes (the flow run with the Dask scheduler and nannies ~450 MB,
#: the Prefect server ~260 MB, ``gmm serve`` ~230 MB, two Dask workers ~240 MB each), while a
#: partition's data is at most 20,000 x 4 float32 (0.3 MB raw, a few MB while scored, at
#: most ``max_parallel`` at once).  Twice the fixed footprint leaves room for allocator
#: noise and library updates, yet a run that kept ~1 MB per partition of 2,000 breaks it.
PEAK_RSS_BOUND = 3 * GIB
#: Ten times as many partitions (each smaller) must not need more memory than this factor.
PEAK_GROWTH_BOUND = 1.2

LARGE = LoadSpec(200, 20_000)
SMALL = LoadSpec(2_000, 200)
QUICK = (LoadSpec(20, 20_000, timeout=600), LoadSpec(200, 200, timeout=600))


def _label(spec: LoadSpec) -> str:
    return f"{spec.n_partitions:,} x {spec.rows:,}"


def measure(root, spec: LoadSpec, direct_limit: int | None = None) -> dict:
    """Prepare ``root``, run the scheduled scoring, check it, and measure the references."""
    prepare(root, spec)
    run = run_scheduled(root, spec)
    problems = check_outputs(Path(root) / "work", spec.expected())
    if run.run_ids != [f"flow-run-{run.flow_run['id']}"] or not run.flow_run["auto_scheduled"]:
        problems.append(f"not one scheduled run: runs {run.run_ids}, auto_scheduled {run.flow_run['auto_scheduled']}")
    logger.info("%s: scheduled run %.1f s, peak RSS %.2f GiB, %d problems", _label(spec),
                run.flow_run["wall_s"], run.peak_rss / GIB, len(problems))
    direct = direct_reference(root, spec, direct_limit)
    single = single_partition_reference(root, spec)
    read = read_reference(root)
    summary = asdict(run)
    summary.pop("progress")  # one row per partition: too long for BENCHMARKS.md
    summary["manifest_window_s"] = _manifest_window(Path(root) / "work")
    return {"run": summary, "problems": problems, "direct": direct, "single": single, "read": read,
            "rows": sum(spec.expected().values())}


def _manifest_window(work: Path) -> float:
    """Seconds from the first partition recorded in the manifest to the last.

    Prefect's task-run timestamps come through its event pipeline, which
    falls behind when the local server is busy; the manifest's own
    ``scored_at`` times are written by the runs themselves.
    """
    from pipeline.manifest import Manifest

    times = sorted(_dt.datetime.fromisoformat(e.scored_at).timestamp() for e in Manifest(work / "manifest.sqlite").entries())
    return times[-1] - times[0] if len(times) > 1 else 0.0


def _figures(spec: LoadSpec, m: dict) -> list:
    run, direct, single, read = m["run"], m["direct"], m["single"], m["read"]
    n, rows = spec.n_partitions, m["rows"]
    wall = run["flow_run"]["wall_s"]
    tasks = run["task_runs"]
    window = run["manifest_window_s"]
    direct_per = direct["seconds"] / direct["partitions"]
    p = _label(spec) + ": "
    return [
        (p + "wall time of the scheduled run (Prefect start to end), s", wall),
        (p + "partitions/s", n / wall),
        (p + "rows/s", rows / wall),
        (p + "run started after its scheduled time by, s", run["flow_run"]["late_s"]),
        (p + "first to last partition recorded in the manifest, s", window),
        (p + "score-partition task runs reported by the Prefect API", tasks["n"]),
        (p + "mean score-partition task as reported by the Prefect API, s", tasks["mean_s"]),
        (p + f"reference: the task body without Prefect (same cluster, {spec.max_parallel} threads), "
             f"s per partition over {direct['partitions']:,} partitions", direct_per),
        (p + "ratio scheduled/without Prefect, per partition", window / n / direct_per),
        (p + "reference: the same rows as one partition, without Prefect, s", single["seconds"]),
        (p + "ratio scheduled run/one partition", wall / single["seconds"]),
        (p + "reference: staging (read + validate + write Zarr) every partition once, one thread, s",
         read["seconds"]),
        (p + "ratio scheduled run/staging alone", wall / read["seconds"]),
        (p + "model load + client connect per task, without Prefect, ms",
         (direct["model_load_s"] + direct["client_connect_close_s"]) * 1e3),
        (p + "peak RSS of all processes (serve, Prefect server, flow run, Dask), GiB", run["peak_rss"] / GIB),
        (p + "RSS when the server became healthy (serve + server), GiB", run["idle_rss"] / GIB),
        (p + "peak RSS last third / first third of the partitions", run["rss_last_third"] / run["rss_first_third"]),
        (p + "slowest Prefect API read by the driver during the run, s", run["api"]["slowest_s"]),
        (p + "everything scored once by one scheduled run, outputs = manifest", not m["problems"]),
    ]


def bench(quick: bool, workdir) -> dict:
    """The ``load`` section of BENCHMARKS.md (``benchmarks/run.py --only load``)."""
    import shutil

    large, small = QUICK if quick else (LARGE, SMALL)
    out = {}
    for spec, limit in ((large, None), (small, None if quick else 500)):
        root = Path(workdir) / f"load-{spec.n_partitions}x{spec.rows}"
        shutil.rmtree(root, ignore_errors=True)
        try:
            out[spec] = measure(root, spec, limit)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    ml, ms = out[large], out[small]
    growth = ms["run"]["peak_rss"] / ml["run"]["peak_rss"]
    worst = max(ml["run"]["peak_rss"], ms["run"]["peak_rss"])
    ok = (not ml["problems"] and not ms["problems"] and worst <= PEAK_RSS_BOUND and growth <= PEAK_GROWTH_BOUND)
    headline = [
        (f"{_label(large)}: rows/s in the scheduled run", ml["rows"] / ml["run"]["flow_run"]["wall_s"]),
        (f"{_label(small)}: partitions/s in the scheduled run", small.n_partitions / ms["run"]["flow_run"]["wall_s"]),
        ("peak RSS of all processes, larger of the two, GiB", worst / GIB),
        (f"peak RSS {_label(small)} / {_label(large)}", growth),
    ]
    return dict(
        title=(f"Load: one scheduled `gmm serve` run over {_label(large)} and over {_label(small)} incoming "
               f"partitions ({', '.join(large.formats)} in turn, {N_FEATURES} float32 features, K={N_COMPONENTS} "
               f"full), LocalCluster of {large.n_workers} workers, max_parallel {large.max_parallel}, "
               f"{len(os.sched_getaffinity(0))} cores"),
        target=(f"one scheduled run scores every partition exactly once (manifest = outputs, staging empty); "
                f"peak RSS of all processes <= {PEAK_RSS_BOUND / GIB:g} GiB, and with {small.n_partitions:,} "
                f"partitions <= {PEAK_GROWTH_BOUND:g} x that with {large.n_partitions:,}"),
        met=bool(ok),
        figures=headline + _figures(large, ml) + _figures(small, ms),
        raw={_label(s): {**m, "spec": asdict(s)} for s, m in out.items()},
    )
