"""Rendering of benchmark results (``.benchmarks-work/results.json``) as BENCHMARKS.md."""

from __future__ import annotations

import datetime as _dt
import json
import math
import re

import numpy as np

from benchmarks import notes
from gmm_engine._dask_plan import MAX_TASKS_PER_THREAD


def jsonable(obj):
    """json.dumps ``default=``: NumPy scalars and arrays, tuples, paths."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            return str(v)
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1e6:
            return f"{v:,.0f}" if a < 1e12 else f"{v:.3e}"
        if a >= 100:
            return f"{v:,.1f}"
        if a >= 1e-3:
            return f"{v:.4g}"
        return f"{v:.2e}"
    return str(value)


def text_summary(name, result) -> str:
    lines = [f"{name}: {'MET' if result['met'] else 'NOT MET'} - {result['target']}"]
    lines += [f"    {label}: {fmt(value)}" for label, value in result["figures"]]
    return "\n".join(lines)


def _table(rows, header):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# cost model


def _scenario_rows(N, workers, t_row, row_bytes, result_bytes, n_chunks, read_rate, per_task):
    """The cost model's table rows for 1 and 8 threads per worker, and the read rate below which reading dominates."""
    rows = []
    crossover = {}
    for threads in (1, 8):
        T = workers * threads
        compute = N * t_row / T
        net = 1.25e9  # 10 Gbit/s per worker
        rate = min(threads * (read_rate or 1e9), net)
        io = N * row_bytes / workers / rate
        tasks = min(n_chunks, MAX_TASKS_PER_THREAD * T)
        merges = sum(math.ceil(tasks / 16**i) for i in range(1, 8) if tasks / 16 ** (i - 1) > 1)
        moved = (tasks + merges) * result_bytes
        depth = max(1, math.ceil(math.log(max(tasks, 2), 16)))
        reduce_s = depth * 16 * result_bytes / net + depth * 16 * 2e-4  # transfers + additions on the critical path
        sched = (tasks + merges) * (per_task or 1e-3)
        total = max(compute, io) + reduce_s + sched
        crossover[threads] = N * row_bytes / workers / compute  # read rate below which reading dominates
        rows.append([
            f"{workers} x {threads} thread(s)", fmt(compute), fmt(io), fmt(tasks + merges), fmt(moved / 1e6),
            fmt(reduce_s), fmt(sched), fmt(total),
            "compute" if compute >= max(io, sched) else ("I/O" if io >= sched else "scheduler"),
        ])
    return rows, crossover


def cost_model(stored) -> str:
    """Per-iteration cost on a real cluster, from constants measured in this run."""
    full, d64, ovh = (stored.get(k) for k in ("full", "full_d64", "overhead"))
    ooc = stored.get("ooc_zstd") or stored.get("ooc")
    if not (full and d64):
        return "_Needs the `full` and `full_d64` results; run them to fill this section._\n"
    cores = 2

    def core_s_per_row(r):
        raw = r["raw"]
        return r["raw"]["ours"]["s_per_iter"] * cores / raw["N"], raw["D"], raw["K"]

    t1, D1, K1 = core_s_per_row(full)
    t2, D2, K2 = core_s_per_row(d64)
    # t(row) = K (a D(D+1) + b D): the triangular products and the per-feature work
    A = np.array([[K1 * D1 * (D1 + 1), K1 * D1], [K2 * D2 * (D2 + 1), K2 * D2]], dtype=float)
    a, b = np.linalg.solve(A, [t1, t2])
    if b < 0:  # noise: fall back to the quadratic term alone
        a, b = t2 / (K2 * D2 * (D2 + 1)), 0.0
    D, K, N, workers = 32, 32, 10**10, 100
    t_row = K * (a * D * (D + 1) + b * D)
    row_bytes = D * 4
    result_bytes = 8 * (K + K * D + K * D * D + 2)
    chunk_rows = (64 * 2**20) // row_bytes
    n_chunks = math.ceil(N / chunk_rows)
    read_rate = None
    if ooc:
        raw = ooc["raw"]
        read_rate = raw["store_bytes"] / raw["read_s"] / 2  # bytes/s per single-threaded worker
    per_task = None
    if ovh and "per_task_s" in ovh["raw"]:
        per_task = ovh["raw"]["per_task_s"]
    rows, crossover = _scenario_rows(N, workers, t_row, row_bytes, result_bytes, n_chunks, read_rate, per_task)
    lines = [
        f"Model: one E-step row costs `K (a D(D+1) + b D)` core-seconds, with `a = {a:.3e}` and `b = {b:.3e}` "
        f"fitted to this run's in-memory full fits (D={D1}, K={K1}: {t1 * 1e9:.0f} ns per row per core; "
        f"D={D2}, K={K2}: {t2 * 1e9:.0f} ns), i.e. about {1 / a / 1e9:.1f} G triangular multiply-adds per core-second. "
        f"For D={D}, K={K} that is {t_row * 1e6:.2f} core-µs per row.",
        "",
        f"Scenario: N = 10^10 rows, D = {D}, K = {K}, float32 in Zarr ({N * row_bytes / 1e12:.2f} TB per pass), 64 MiB chunks "
        f"({n_chunks:,} chunks), 100 workers.  Each task returns {result_bytes / 1e3:.0f} kB of statistics "
        f"(K(1 + D + D^2) float64); chunks are grouped to at most {MAX_TASKS_PER_THREAD} tasks per worker thread and merged with fan-in 16.",
        "",
        f"Read rate per single-threaded worker: {fmt((read_rate or 1e9) / 1e9)} GB/s "
        + ("(measured here: Zarr/zstd from the page cache)" if read_rate else "(assumed)")
        + ", capped at 1.25 GB/s (10 Gbit/s) per worker.  Scheduler cost per task: "
        + (f"{per_task * 1e3:.2f} ms (measured here, 1,000 trivial tasks on the LocalCluster)" if per_task else "1 ms (assumed)")
        + ".",
        "",
        _table(rows, ["cluster", "compute s", "read s", "tasks", "MB moved", "reduction s (critical path)",
                      "scheduler s", "s/iteration", "bottleneck"]),
        "",
        f"Where the bottleneck moves: at D = K = 32 a row costs ~{2 * K * D * (D + 1) // 2:,} multiply-adds, so "
        "the E-step is compute-bound: on single-threaded workers reading would dominate only below "
        f"{crossover[1] / 1e9:.2f} GB/s per worker, with 8 threads per worker below {crossover[8] / 1e9:.2f} GB/s "
        "(object storage without local caching can be that slow, and then reading takes over).  The "
        "reduction is small (a few hundred MB per iteration in total, a few MB on its critical path) and the "
        "M-step (K Cholesky factorisations of 32 x 32) is negligible; with many more tasks per iteration the "
        "scheduler's per-task cost becomes the next limit, which is why chunks are grouped into at most "
        f"{MAX_TASKS_PER_THREAD} tasks per worker thread.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------


def render(stored, machine, quick=False) -> str:
    order = stored.get("_benchmark_order") or [k for k in stored if not k.startswith("_")]
    results = [(k, stored[k]) for k in order if k in stored]
    now = _dt.datetime.now().isoformat(timespec="minutes")
    out = [
        "# Benchmarks" + (" (quick run: small sizes, not representative)" if quick else ""),
        "",
        f"Generated by `benchmarks/run.py` on {now}; this file is its output (rerun to refresh it: "
        "`.venv/bin/python benchmarks/run.py`, `--only NAME` for one section, `--quick` for a smoke test).",
        "Every ratio compares figures measured in the same run, on the same data and from the same initial "
        "parameters.  Timings are the best of N repeats (N given per benchmark) because the machine is shared; "
        "the load average when each benchmark started is recorded.",
        "",
        "## Machine",
        "",
    ]
    m = dict(machine)
    versions = m.pop("versions", {})
    blas = m.pop("blas", [])
    out += [_table([[k, fmt(v) if not isinstance(v, list) else ", ".join(map(str, v))] for k, v in m.items()], ["", ""])]
    out += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    out += ["BLAS (threadpoolctl): " + "; ".join(
        f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, {b.get('num_threads')} threads, "
        f"{str(b.get('filepath', '')).rsplit('/', 1)[-1]})" for b in blas
    ), ""]
    out += ["## Summary", ""]
    rows = []
    for name, r in results:
        key = r["figures"][:4]
        rows.append([f"[{name}](#{name})", r["target"], "<br>".join(f"{lbl}: **{fmt(v)}**" for lbl, v in key),
                     "met" if r["met"] else "**not met**"])
    out += [_table(rows, ["benchmark", "target", "headline figures", ""]), ""]
    out += [notes.SUMMARY_NOTES, ""]
    for name, r in results:
        out += [f'<a id="{name}"></a>', f"## {name}: {r['title']}", ""]
        out += [f"Target: {r['target']} — **{'met' if r['met'] else 'not met'}**.", ""]
        extra = notes.PER_BENCHMARK.get(name)
        if extra:
            out += [extra, ""]
        out += [_table([[lbl, fmt(v)] for lbl, v in r["figures"]], ["figure", "value"]), ""]
        load = r.get("machine_load")
        cpu = f" on {r['cpu']}" if r.get("cpu") else ""
        out += [
            f"Measured {r.get('when', '?')}{cpu} in {r.get('seconds', float('nan')):.0f} s; load average at start "
            f"{', '.join(f'{x:.2f}' for x in load) if load else '?'}.",
            "",
            "<details><summary>raw numbers</summary>",
            "",
            "```json",
            json.dumps(r["raw"], indent=1, default=jsonable),
            "```",
            "</details>",
            "",
        ]
    out += ["## Cost model: 100 workers, 10^10 rows, D = 32, K = 32", "", cost_model(stored)]
    out += [notes.DISCUSSION, ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# reading a rendered file back

_SECTION = re.compile(r'^<a id="(?P<name>[a-z0-9_]+)"></a>\n## (?P=name): (?P<title>.*)$', re.M)
_MEASURED = re.compile(r"^Measured (?P<when>\S+)(?: on (?P<cpu>.+?))? in (?P<seconds>[0-9.]+|nan) s; load average at start (?P<load>.*)\.$", re.M)


def parse(markdown: str) -> dict:
    """The stored results a rendered BENCHMARKS.md was made from, as far as it holds them.

    A fresh clone has no ``.benchmarks-work/results.json``; without this, refreshing one section with
    ``--only`` would render a file holding that section alone.  Figures come back as the strings they
    were rendered as (``fmt`` leaves strings as they are, so a re-render is unchanged) and ``raw`` exactly.

    Parameters
    ----------
    markdown : str
        The text of a file written by :func:`render`.

    Returns
    -------
    dict
        Section name -> result (``title``, ``target``, ``met``, ``figures``, ``raw``, ``when``, ``seconds``,
        ``machine_load``), plus ``_benchmark_order``.
    """
    stored: dict = {}
    heads = list(_SECTION.finditer(markdown))
    ends = [h.start() for h in heads[1:]] + [markdown.find("\n## Cost model")]
    for head, end in zip(heads, ends):
        body = markdown[head.end():end if end > 0 else len(markdown)]
        target = re.search(r"^Target: (?P<target>.*) — \*\*(?P<met>met|not met)\*\*\.$", body, re.M)
        table = re.search(r"^\| figure \| value \|\n\|---\|---\|\n(?P<rows>(?:\|.*\|\n)+)", body, re.M)
        raw = re.search(r"```json\n(?P<raw>.*?)\n```", body, re.S)
        measured = _MEASURED.search(body)
        if not (target and table and raw):
            raise ValueError(f"BENCHMARKS.md section {head['name']!r} is not in the rendered form; rerun it "
                             f"(benchmarks/run.py --only {head['name']}) instead of reading it back")
        figures = [row[2:-2].rsplit(" | ", 1) for row in table["rows"].splitlines()]
        result = dict(title=head["title"], target=target["target"], met=target["met"] == "met",
                      figures=[(label, value) for label, value in figures], raw=json.loads(raw["raw"]))
        if measured:
            load = [float(x) for x in measured["load"].split(", ")] if measured["load"] != "?" else None
            result.update(when=measured["when"], seconds=float(measured["seconds"]), machine_load=load,
                          cpu=measured["cpu"])
        stored[head["name"]] = result
    stored["_benchmark_order"] = list(stored)
    return stored
