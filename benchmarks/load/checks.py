"""What a load run left behind, against what was dropped: every disagreement, listed."""

from __future__ import annotations

from pathlib import Path


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
