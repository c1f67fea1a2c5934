"""The scheduled run: ``gmm serve`` started as a user starts it, watched until one run has scored everything.

:func:`run_scheduled` goes through four bounded waits, each a method of
:class:`_Watch`: the server answers; every partition is in the manifest
(with a stall bound, and a check that the run did not end early); the run
that scored them has ended; its task-run records have reached the API
(they arrive through Prefect's event pipeline, minutes behind under load).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import TreeRSS

from . import manifest_reads
from .prefect_api import ApiCalls, batch_size, flow_run, free_port, summarise_tasks, task_runs, timestamp
from .spec import GMM, LoadRunError, LoadSpec

logger = logging.getLogger(__name__)

#: Prefect's task-run records may lag the flow: wait while their count rose in the last this many seconds
SETTLE_SECONDS = 60.0
ENDED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@dataclass
class ScheduledRun:
    """What :func:`run_scheduled` measured."""

    spec: dict
    run_ids: list  # distinct run ids in the manifest (one when a single run scored everything)
    flow_run: dict  # id, auto_scheduled, deployment_id, state, times from the Prefect API
    task_runs: dict  # the scoring batches' task runs from the Prefect API: partitions covered, durations
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


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _serve_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    return env


def _write_serve_config(root: Path, work: Path, spec: LoadSpec, port: int) -> Path:
    import yaml

    cfg = root / "serve.yaml"
    cfg.write_text(yaml.safe_dump({
        "interval_seconds": spec.interval_seconds,
        "server_port": port,
        "score": {"workdir": str(work), "max_parallel": spec.max_parallel,
                  "cluster": {"n_workers": spec.n_workers}},
    }))
    return cfg


class _Watch:
    """A running ``gmm serve`` under the driver's eye: every wait is bounded by ``spec.timeout``."""

    def __init__(self, proc, log_path: Path, work: Path, spec: LoadSpec, api: str, t0: float):
        self.proc, self.log_path, self.work, self.spec, self.api, self.t0 = proc, log_path, work, spec, api, t0
        self.manifest = work / "manifest.sqlite"
        self.deadline = t0 + spec.timeout
        self.api_calls = ApiCalls()
        self.progress: list[tuple[float, int]] = []

    def fail(self, why: str):
        raise LoadRunError(f"{why}\n--- gmm serve log (tail) ---\n{_tail(self.log_path)}\n"
                           f"--- prefect server log (tail) ---\n{_tail(self.work / 'prefect' / 'server.log', 2000)}")

    def alive(self):
        if self.proc.poll() is not None:
            self.fail(f"gmm serve exited with code {self.proc.returncode}")
        if time.monotonic() > self.deadline:
            self.fail(f"timed out after {self.spec.timeout:g} s with {manifest_reads.scored_count(self.manifest)} "
                      f"of {self.spec.n_partitions} partitions scored")

    def wait_healthy(self) -> float:
        from flows.prefect_server import healthy

        while not healthy(self.api):
            self.alive()
            time.sleep(0.5)
        t_healthy = time.monotonic()
        logger.info("Prefect server healthy after %.1f s", t_healthy - self.t0)
        return t_healthy

    def _check_run_not_ended(self, flow_id: str) -> None:
        """Fail when the run ended before every partition was recorded."""
        n = self.spec.n_partitions
        state = self.api_calls.get(lambda: flow_run(self.api, flow_id), {}).get("state_type")
        # re-count: the run may have recorded the last partitions since
        if state in ENDED and manifest_reads.scored_count(self.manifest) < n:
            self.fail(f"run {flow_id} ended {state} with {manifest_reads.scored_count(self.manifest)} of {n} "
                      "partitions scored")

    def wait_scored(self) -> None:
        """Until every partition is in the manifest; a stall, a failure or an early end fails."""
        n, spec = self.spec.n_partitions, self.spec
        last, last_change, flow_id, next_state_check = -1, time.monotonic(), None, 0.0
        while True:
            self.alive()
            done = manifest_reads.scored_count(self.manifest)
            now = time.monotonic()
            if done != last:
                if last <= 0 < done or done == n or done // max(1, n // 10) != last // max(1, n // 10):
                    logger.info("%d of %d partitions scored after %.1f s", done, n, now - self.t0)
                last, last_change = done, now
                self.progress.append((now - self.t0, done))
            elif now - last_change > spec.stall_seconds:
                self.fail(f"no partition scored for {spec.stall_seconds:g} s ({done} of {n} scored)")
            if flow_id is None:
                ids = manifest_reads.run_ids(self.manifest)
                if ids:
                    flow_id = ids[0]
            failed = manifest_reads.failures(self.manifest) if done < n else []
            if failed:
                self.fail(f"{len(failed)} partition(s) failed, e.g. {failed[0][0]}: {failed[0][1]}")
            if done >= n:
                return
            if flow_id is not None and now >= next_state_check:
                next_state_check = now + 5
                self._check_run_not_ended(flow_id)
            time.sleep(1.0)

    def wait_flow_end(self, run_id: str) -> dict:
        """The run's record once it has ended (it still exports the manifest and writes its report)."""
        while time.monotonic() < self.deadline:
            flow = self.api_calls.get(lambda: flow_run(self.api, run_id), {})
            if flow.get("state_type") in ENDED and flow.get("end_time"):
                return flow
            self.alive()
            time.sleep(1)
        self.fail(f"run {run_id} did not finish after scoring every partition")

    def wait_task_runs(self, flow_id: str) -> list[dict]:
        """The run's task runs, once the scoring batches' cover every partition or their count stopped rising."""
        # Task run states arrive through the server's event pipeline, which under
        # this load runs minutes behind the flow: wait while the count still rises.
        n = self.spec.n_partitions
        tasks, seen, stalled = [], -1, time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < min(stalled, self.deadline + SETTLE_SECONDS):
            tasks = self.api_calls.get(lambda: task_runs(self.api, flow_id), tasks)
            done = sum(batch_size(t) for t in tasks if t.get("end_time"))
            if done >= n:
                break
            if done > seen:
                seen, stalled = done, time.monotonic() + SETTLE_SECONDS
            time.sleep(2)
        return tasks


def _flow_summary(flow: dict) -> dict:
    return {
        "id": flow["id"],
        "auto_scheduled": flow.get("auto_scheduled"),
        "deployment_id": flow.get("deployment_id"),
        "state": flow.get("state_type"),
        "expected_start_time": flow.get("expected_start_time"),
        "start_time": flow.get("start_time"),
        "end_time": flow.get("end_time"),
        "wall_s": timestamp(flow["end_time"]) - timestamp(flow["start_time"]),
        "late_s": timestamp(flow["start_time"]) - timestamp(flow["expected_start_time"]),
    }


def run_scheduled(root, spec: LoadSpec) -> ScheduledRun:
    """Serve ``root/work`` (see :func:`benchmarks.load.prepare`) until one scheduled run has scored every partition.

    Raises
    ------
    LoadRunError
        ``gmm serve`` exited, a partition failed, the run ended without
        scoring everything, nothing was scored for ``spec.stall_seconds``,
        or ``spec.timeout`` passed.
    """
    root = Path(root)
    work = root / "work"
    port = free_port()
    cfg = _write_serve_config(root, work, spec, port)
    log_path = root / "serve.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(GMM), "serve", "--config", str(cfg)], env=_serve_env(root / "client-home"),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    watch = _Watch(proc, log_path, work, spec, f"http://127.0.0.1:{port}/api", t0)
    try:
        with TreeRSS(proc.pid, spec.sample_seconds) as rss:
            t_healthy = watch.wait_healthy()
            idle = rss.sample()[0]
            watch.wait_scored()
            t_all = time.monotonic()
            run_ids = manifest_reads.run_ids(watch.manifest)
            flow = watch.wait_flow_end(run_ids[0])
            tasks = watch.wait_task_runs(flow["id"])
            peak, peak_procs = rss.peak, rss.peak_processes
    finally:
        _stop(proc)
    progress = watch.progress
    t_first = t0 + next(t for t, d in progress if d > 0)
    third = (t_all - t_first) / 3
    first_third = rss.between(t_first, t_first + third)
    last_third = rss.between(t_all - third, t_all)
    calls = watch.api_calls
    return ScheduledRun(
        spec=asdict(spec), run_ids=run_ids, flow_run=_flow_summary(flow), task_runs=summarise_tasks(tasks, flow),
        peak_rss=peak, peak_processes=peak_procs, idle_rss=idle,
        rss_first_third=max(first_third, default=0), rss_last_third=max(last_third, default=0),
        n_processes_max=max((p for _, _, p in rss.samples), default=0),
        seconds_to_healthy=t_healthy - t0,
        api={"calls": calls.calls, "failures": calls.failures, "slowest_s": calls.slowest},
        log=str(log_path), progress=progress,
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
