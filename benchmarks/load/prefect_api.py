"""Reads of the Prefect server's REST API during a load run: flow run, task runs, their timings."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import socket
import statistics
import time
import urllib.request

import numpy as np

logger = logging.getLogger(__name__)


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


class ApiCalls:
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


def timestamp(s: str | None) -> float | None:
    return None if s is None else _dt.datetime.fromisoformat(s).timestamp()


def flow_run(api: str, run_id: str) -> dict:
    return _api(api, f"/flow_runs/{run_id.removeprefix('flow-run-')}")


def task_runs(api: str, flow_run_id: str) -> list[dict]:
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


_BATCH = re.compile(r"score-partitions-batch\[(\d+)\]")  # flows.score_flow.batch_run_name


def batch_size(task: dict) -> int:
    """The partitions a scoring batch's task run scored (from its name), 0 for any other task run."""
    found = _BATCH.match(task.get("name", ""))
    return int(found.group(1)) if found else 0


def summarise_tasks(tasks: list[dict], flow: dict) -> dict:
    scoring = [t for t in tasks if batch_size(t) and t.get("end_time")]
    if not scoring:
        return {"n": 0, "batches": 0}
    starts = [timestamp(t["start_time"]) for t in scoring]
    ends = [timestamp(t["end_time"]) for t in scoring]
    durations = [e - s for s, e in zip(starts, ends)]
    window = max(ends) - min(starts)
    flow_start, flow_end = timestamp(flow["start_time"]), timestamp(flow["end_time"])
    return {
        "n": sum(batch_size(t) for t in scoring),  # partitions
        "batches": len(scoring),
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
        "other_tasks": sorted({t["name"].rsplit("-", 1)[0] for t in tasks if not batch_size(t)}),
    }
