"""The SQLite manifest: claims, results, concurrency and crash recovery."""

import json
import logging
import math
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gmm_engine.atomic import temp_name
from pipeline.manifest import (
    AlreadyScored,
    ClaimConflict,
    ClaimLost,
    Manifest,
    ManifestEntry,
    NotAManifestError,
    utc_now_iso,
)
from pipeline.partitions import UnsafePartitionName
from pipeline.scores_store import read_scores, write_scores

REPO = Path(__file__).resolve().parents[1]


def make_entry(pid, run_id="run-a", output_path=None, **kw):
    values = dict(
        partition_id=pid,
        model_version="model-1",
        output_path=output_path or f"/outputs/{pid}.zarr",
        n_rows=100,
        n_anomalies=3,
        mean_loglik=-12.5,
        threshold=-20.0,
        source_url=f"/incoming/{pid}.csv",
        scored_at=utc_now_iso(),
        run_id=run_id,
    )
    values.update(kw)
    return ManifestEntry(**values)


class FakeClock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def _set_claim(db, partition_id, **columns):
    """Edit a claim row directly, to simulate owners we cannot create in a test."""
    conn = sqlite3.connect(db)
    with conn:
        for col, value in columns.items():
            conn.execute(f"UPDATE claims SET {col} = ? WHERE partition_id = ?", (value, partition_id))
    conn.close()


def _run_python(code, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, check=True,
                          capture_output=True, text=True, **kw)


# ----------------------------------------------------------------------------
# basics


def test_schema_and_wal(tmp_path):
    db = tmp_path / "state" / "manifest.sqlite"
    Manifest(db)
    Manifest(db)  # reopening is fine
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["application"] == "gmm-stream.manifest"
    assert meta["schema_version"] == "2"


def test_a_version_1_manifest_is_upgraded_in_place_and_keeps_its_entries(tmp_path):
    db = tmp_path / "m.sqlite"
    with sqlite3.connect(db) as conn:  # the version 1 schema, as an earlier release wrote it
        conn.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE entries (partition_id TEXT PRIMARY KEY, model_version TEXT NOT NULL,
                output_path TEXT NOT NULL, n_rows INTEGER NOT NULL, n_anomalies INTEGER NOT NULL,
                mean_loglik REAL, threshold REAL, source_url TEXT NOT NULL, scored_at TEXT NOT NULL,
                run_id TEXT NOT NULL);
            CREATE TABLE claims (partition_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, hostname TEXT NOT NULL,
                host_key TEXT NOT NULL, pid INTEGER NOT NULL, proc_start REAL, claimed_at REAL NOT NULL,
                expires_at REAL NOT NULL, lease_seconds REAL NOT NULL);
            CREATE TABLE failures (id INTEGER PRIMARY KEY AUTOINCREMENT, partition_id TEXT NOT NULL,
                run_id TEXT NOT NULL, error TEXT NOT NULL, failed_at TEXT NOT NULL, hostname TEXT NOT NULL);
            INSERT INTO meta VALUES ('application', 'gmm-stream.manifest'), ('schema_version', '1');
            INSERT INTO entries VALUES ('p1', 'v1', '/s/p1.zarr', 10, 1, -3.5, -9.0, '/in/p1.csv',
                '2026-01-01T00:00:00+00:00', 'run-a');
        """)
    m = Manifest(db)
    (old,) = m.entries()
    assert old.partition_id == "p1" and old.n_rows == 10 and old.drift is None
    m.set_drift("p1", {"drifted": False, "sequential": {"statistic": 0.0}})
    assert m.get("p1").drift == {"drifted": False, "sequential": {"statistic": 0.0}}
    m.record_update(parent="v1", version=None, rule="on_drift", partitions=["p1"], n_rows=10, promoted=False,
                    reason="the candidate collapsed a component", run_id="run-b")
    (update,) = m.updates()
    assert update["partitions"] == ["p1"] and update["promoted"] is False and update["version"] is None
    with sqlite3.connect(db) as conn:
        assert dict(conn.execute("SELECT key, value FROM meta"))["schema_version"] == "2"
    with pytest.raises(KeyError, match="'p2' has no manifest entry"):
        m.set_drift("p2", {"drifted": True})
    with pytest.raises(ValueError, match="drift is not strict JSON"):
        m.record_success(ManifestEntry("p3", "v1", "/s/p3.zarr", 1, 0, 0.0, None, "/in/p3.csv",
                                       utc_now_iso(), "run-b", drift={"p": math.nan}))


def test_claim_record_scored_ids_round_trip(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    assert m.scored_ids() == set()
    assert m.claim("p1", "run-a")
    assert m.claim("p1", "run-a")  # re-claiming by the holder refreshes the lease
    assert [c.partition_id for c in m.claims()] == ["p1"]
    entry = make_entry("p1", mean_loglik=np.float64(-12.5), n_rows=np.int64(100))
    m.record_success(entry)
    assert m.scored_ids() == {"p1"}
    assert m.claims() == []
    got = m.get("p1")
    assert got == make_entry("p1", scored_at=entry.scored_at)
    assert m.entries() == [got]
    assert m.get("p2") is None
    assert not m.claim("p1", "run-b")  # scored: nobody may claim it
    assert not m.claim("p1", "run-a")


def test_nan_mean_loglik_round_trips(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    m.record_success(make_entry("empty", n_rows=0, n_anomalies=0, mean_loglik=math.nan, threshold=None))
    got = m.get("empty")
    assert math.isnan(got.mean_loglik) and got.threshold is None


def test_claims_are_validated(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    with pytest.raises(UnsafePartitionName, match="path separator"):
        m.claim("../etc", "run-a")
    with pytest.raises(ValueError, match="run_id must be a non-empty string"):
        m.claim("p1", "")
    with pytest.raises(ValueError, match="lease_seconds must be positive"):
        m.claim("p1", "run-a", lease_seconds=0)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"scored_at": "2026-01-31T12:00:00"}, "in UTC"),
        ({"scored_at": "2026-01-31T12:00:00+02:00"}, "in UTC"),
        ({"scored_at": "yesterday"}, "utc_now_iso"),
        ({"n_anomalies": 101}, "exceeds n_rows"),
        ({"n_rows": -1}, "non-negative integer"),
        ({"n_rows": 1.5}, "non-negative integer"),
        ({"model_version": ""}, "model_version must be a non-empty string"),
        ({"partition_id": "a b"}, "whitespace"),
    ],
)
def test_bad_entries_are_refused(tmp_path, change, match):
    m = Manifest(tmp_path / "m.sqlite")
    with pytest.raises(ValueError, match=match):
        m.record_success(make_entry("p1", **{**change}))
    assert m.entries() == []


# ----------------------------------------------------------------------------
# claims between runs


def test_live_claim_of_another_run_is_refused(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    assert m.claim("p1", "run-a")
    assert not m.claim("p1", "run-b")
    with pytest.raises(ClaimConflict, match="claimed by run run-a.*Discard this run's output"):
        m.record_success(make_entry("p1", run_id="run-b"))
    assert m.scored_ids() == set()
    m.release("p1", "run-b")  # releasing someone else's claim does nothing
    assert not m.claim("p1", "run-b")
    m.release("p1", "run-a")
    assert m.claim("p1", "run-b")


def test_claim_of_live_process_elsewhere_then_dead(tmp_path):
    db = tmp_path / "m.sqlite"
    Manifest(db)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pipeline.manifest import Manifest
            assert Manifest({str(db)!r}).claim("p1", "run-child")
            print("claimed", flush=True)
            sys.stdin.read()
        """)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout.readline().strip() == "claimed"
        m = Manifest(db)
        assert not m.claim("p1", "run-b")  # its owner is alive and its lease is valid
    finally:
        child.stdin.close()
        child.wait()
    assert m.claim("p1", "run-b")  # owner gone: taken over at once, lease notwithstanding
    assert m.claims()[0].run_id == "run-b"


def test_claim_of_exited_process_is_taken_over_at_once(tmp_path, caplog):
    db = tmp_path / "m.sqlite"
    _run_python(f"""
        from pipeline.manifest import Manifest
        assert Manifest({str(db)!r}).claim("p1", "run-dead", lease_seconds=3600)
    """)
    m = Manifest(db)
    [held] = m.claims()
    assert held.run_id == "run-dead" and held.pid != os.getpid()
    with caplog.at_level(logging.WARNING, logger="pipeline.manifest"):
        assert m.claim("p1", "run-b")
    assert "takes over the claim on partition p1 from run run-dead" in caplog.text
    assert "no longer running" in caplog.text


def test_pid_reuse_is_detected_by_start_time(tmp_path):
    db = tmp_path / "m.sqlite"
    m = Manifest(db)
    assert m.claim("p1", "run-a")
    # Same pid (this very process, alive) but another start time: the pid was reused.
    held = m.claims()[0]
    _set_claim(db, "p1", proc_start=held.proc_start - 1000.0)
    assert m.claim("p1", "run-b")


def test_expired_lease_is_taken_over_and_renew_keeps_it(tmp_path):
    clock = FakeClock()
    db = tmp_path / "m.sqlite"
    m = Manifest(db, clock=clock)
    assert m.claim("p1", "run-a", lease_seconds=10)
    clock.t += 8
    m.renew("p1", "run-a")  # now expires at +18
    clock.t += 7  # +15
    assert not m.claim("p1", "run-b")
    clock.t += 4  # +19: expired although the owner (this process) is alive
    assert m.claim("p1", "run-b", lease_seconds=10)
    with pytest.raises(ClaimLost, match="run-a no longer holds the claim on partition 'p1'.*run run-b"):
        m.renew("p1", "run-a")
    with pytest.raises(ClaimConflict):
        m.record_success(make_entry("p1", run_id="run-a"))
    m.record_success(make_entry("p1", run_id="run-b"))
    assert m.get("p1").run_id == "run-b"
    with pytest.raises(ClaimLost, match="now held by nobody"):
        m.renew("p1", "run-b")


def test_owner_on_another_host_is_judged_by_lease_only(tmp_path):
    clock = FakeClock()
    db = tmp_path / "m.sqlite"
    m = Manifest(db, clock=clock)
    assert m.claim("p1", "run-remote", lease_seconds=60)
    _set_claim(db, "p1", host_key="other-host|boot|ns", hostname="other-host", pid=2**22 + 12345)
    assert not m.claim("p1", "run-b")  # cannot see that process: trust the lease
    clock.t += 61
    assert m.claim("p1", "run-b")


def test_record_success_of_stale_foreign_claim_is_allowed(tmp_path):
    db = tmp_path / "m.sqlite"
    m = Manifest(db)
    assert m.claim("p1", "run-a")
    _set_claim(db, "p1", pid=2**22 + 12345)  # owner on this host that does not exist
    m.record_success(make_entry("p1", run_id="run-b"))
    assert m.get("p1").run_id == "run-b" and m.claims() == []


def test_already_scored_is_refused(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    m.record_success(make_entry("p1"))
    with pytest.raises(AlreadyScored, match="already scored.*Manifest.forget"):
        m.record_success(make_entry("p1", run_id="run-b", n_rows=5, n_anomalies=0))
    assert m.get("p1").n_rows == 100
    m.forget("p1")
    assert m.get("p1") is None and m.scored_ids() == set()
    assert m.claim("p1", "run-b")
    m.record_success(make_entry("p1", run_id="run-b", n_rows=5, n_anomalies=0))
    assert m.get("p1").n_rows == 5


def test_failures_keep_history_until_success(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    assert m.claim("p1", "run-a")
    m.record_failure("p1", "run-a", "ValueError: corrupt csv\nline 3")
    assert m.claims() == []  # failure drops the claim
    assert m.claim("p1", "run-b")
    m.record_failure("p1", "run-b", "ValueError: corrupt csv again")
    assert m.claim("p2", "run-b")
    m.record_failure("p2", "run-b", "OSError: gone")
    history = m.failures("p1")
    assert [(f["run_id"], f["error"]) for f in history] == [
        ("run-a", "ValueError: corrupt csv\nline 3"),
        ("run-b", "ValueError: corrupt csv again"),
    ]
    assert history[0]["failed_at"].endswith("+00:00")
    assert len(m.failures()) == 3
    assert m.scored_ids() == set()
    assert m.claim("p1", "run-c")
    m.record_success(make_entry("p1", run_id="run-c"))
    assert m.failures("p1") == []
    assert [f["partition_id"] for f in m.failures()] == ["p2"]


def test_record_failure_does_not_drop_another_runs_claim(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    assert m.claim("p1", "run-a")
    m.record_failure("p1", "run-b", "late failure from a run that lost its claim")
    assert [c.run_id for c in m.claims()] == ["run-a"]
    assert len(m.failures("p1")) == 1


# ----------------------------------------------------------------------------
# concurrency


def test_claim_check_and_write_are_one_transaction(tmp_path, monkeypatch):
    # Run B's claim starts while run A's claim sits between reading the claim
    # row and writing its own: B must wait for A and then see A's claim.
    db = tmp_path / "m.sqlite"
    Manifest(db)
    original = Manifest._get_claim
    outcome = {}

    def claim_b():
        try:
            outcome["b"] = Manifest(db).claim("p1", "run-b")
        except Exception as exc:  # recorded, then asserted absent
            outcome["b"] = exc

    def paused_get_claim(self, conn, partition_id):
        row = original(self, conn, partition_id)
        if threading.current_thread().name == "run-a" and "started" not in outcome:
            outcome["started"] = True
            other = threading.Thread(target=claim_b, name="run-b")
            other.start()
            other.join(timeout=1.0)  # B either blocks on A's lock or races past it
            outcome["b_thread"] = other
        return row

    monkeypatch.setattr(Manifest, "_get_claim", paused_get_claim)

    def claim_a():
        try:
            outcome["a"] = Manifest(db).claim("p1", "run-a")
        except Exception as exc:
            outcome["a"] = exc

    first = threading.Thread(target=claim_a, name="run-a")
    first.start()
    first.join(timeout=60)
    outcome["b_thread"].join(timeout=60)
    assert (outcome["a"], outcome["b"]) == (True, False)
    assert [c.run_id for c in Manifest(db).claims()] == ["run-a"]


def _race_worker(db, run_id, ids, barrier, results):
    try:
        barrier.wait()
        m = Manifest(db)  # concurrent schema creation is part of the race
        won = []
        for pid in ids:
            if m.claim(pid, run_id):
                m.renew(pid, run_id)
                m.record_success(make_entry(pid, run_id=run_id))
                won.append(pid)
        results.put((run_id, won, None))
    except BaseException as exc:  # report, do not hang the parent
        results.put((run_id, [], f"{type(exc).__name__}: {exc}"))


def test_concurrent_runs_score_each_partition_exactly_once(tmp_path):
    db = str(tmp_path / "fresh.sqlite")
    ids = [f"p{i:02d}" for i in range(20)]
    n_proc = 4
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n_proc)
    results = ctx.Queue()
    procs = [
        # different orders make the runs collide on many partitions
        ctx.Process(target=_race_worker, args=(db, f"run-{k}", ids if k % 2 == 0 else ids[::-1], barrier, results))
        for k in range(n_proc)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    errors = [e for _, _, e in outcomes if e]
    assert errors == []
    won = [pid for _, w, _ in outcomes for pid in w]
    assert sorted(won) == ids  # every partition claimed and recorded exactly once
    m = Manifest(db)
    entries = m.entries()
    assert [e.partition_id for e in entries] == ids
    winner = {pid: run for run, w, _ in outcomes for pid in w}
    assert all(e.run_id == winner[e.partition_id] for e in entries)
    assert m.claims() == []


# ----------------------------------------------------------------------------
# reconcile


def _scores(n=20):
    rng = np.random.default_rng(0)
    return dict(
        log_likelihood=rng.normal(size=n),
        component=np.zeros(n, dtype=np.int32),
        responsibility=np.ones(n),
        is_anomaly=np.zeros(n, dtype=bool),
    )


def _score(m, out_dir, pid, run_id, record=True):
    path = write_scores(out_dir / f"{pid}.zarr", attrs={"partition_id": pid}, **_scores()).path
    if record:
        m.record_success(make_entry(pid, run_id=run_id, output_path=str(path), n_rows=20, n_anomalies=0))
    return path


def test_reconcile_after_simulated_crashes(tmp_path):
    db = tmp_path / "m.sqlite"
    out = tmp_path / "outputs"
    out.mkdir()
    m = Manifest(db)
    # healthy: recorded, with output (one absolute, one relative output_path)
    _score(m, out, "ok1", "run-a")
    write_scores(out / "ok2.zarr", attrs={}, **_scores())
    m.record_success(make_entry("ok2", output_path="ok2.zarr"))
    # output deleted after recording -> entry forgotten
    m.record_success(make_entry("lost", output_path=str(out / "lost.zarr")))
    # crash between publishing and recording -> orphan removed
    _score(m, out, "orphan", "run-a", record=False)
    # published, not yet recorded, by a live run -> kept
    assert m.claim("busy", "run-live")
    _score(m, out, "busy", "run-live", record=False)
    # crash while writing -> temp removed; live writer's temp kept
    dead_tmp = out / temp_name("crashed.zarr")
    (dead_tmp / "log_likelihood").mkdir(parents=True)
    assert m.claim("writing", "run-live")
    live_tmp = out / temp_name("writing.zarr")
    live_tmp.mkdir()
    # stale claim (owner pid does not exist on this host) -> released, its temp removed
    assert m.claim("stale", "run-dead")
    _set_claim(db, "stale", pid=2**22 + 12345)
    stale_tmp = out / temp_name("stale.zarr")
    stale_tmp.mkdir()
    # things that are not ours -> left alone
    foreign = out / "foreign.zarr"
    foreign.mkdir()
    (foreign / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    (out / "README.txt").write_text("keep me")
    fresh_json_tmp = out / temp_name("manifest.json")
    fresh_json_tmp.write_text("{}")
    old_json_tmp = out / temp_name("manifest.json")
    old_json_tmp.write_text("{}")
    past = time.time() - 7200
    os.utime(old_json_tmp, (past, past))

    report = m.reconcile(out)

    assert report["released_stale_claims"] == ["stale"]
    assert report["forgotten"] == ["lost"]
    assert report["removed_orphans"] == [str(out / "orphan.zarr")]
    assert sorted(report["removed_temps"]) == sorted(map(str, [dead_tmp, stale_tmp, old_json_tmp]))
    assert sorted(report["kept_in_progress"]) == sorted(map(str, [out / "busy.zarr", live_tmp, fresh_json_tmp]))
    assert report["ignored"] == [(str(foreign), "not a gmm-stream scores store (no scores marker)")]
    assert m.scored_ids() == {"ok1", "ok2"}
    assert sorted(c.partition_id for c in m.claims()) == ["busy", "writing"]
    assert sorted(os.listdir(out)) == sorted(
        ["README.txt", "busy.zarr", "foreign.zarr", "ok1.zarr", "ok2.zarr", live_tmp.name, fresh_json_tmp.name]
    )
    # the forgotten and orphaned partitions can be scored again
    assert m.claim("lost", "run-next") and m.claim("orphan", "run-next")
    m.release("lost", "run-next")
    m.release("orphan", "run-next")

    # idempotent
    again = m.reconcile(out)
    assert again["forgotten"] == again["removed_orphans"] == again["removed_temps"] == []
    assert again["released_stale_claims"] == []


def test_forget_then_reconcile_allows_rescoring(tmp_path):
    out = tmp_path / "outputs"
    m = Manifest(tmp_path / "m.sqlite")
    _score(m, out, "p1", "run-a")
    m.forget("p1")
    with pytest.raises(FileExistsError):
        _score(m, out, "p1", "run-b")
    report = m.reconcile(out)
    assert report["removed_orphans"] == [str(out / "p1.zarr")]
    assert m.claim("p1", "run-b")
    _score(m, out, "p1", "run-b")
    assert m.get("p1").run_id == "run-b"


def test_reconcile_refuses_missing_outputs_dir(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    m.record_success(make_entry("p1"))
    with pytest.raises(FileNotFoundError, match="does not exist; nothing was changed"):
        m.reconcile(tmp_path / "not-mounted")
    assert m.scored_ids() == {"p1"}


_KILLED_RUN = """
import os, sys
import numpy as np
from gmm_engine.atomic import publish_dir
from pipeline.manifest import Manifest, ManifestEntry, utc_now_iso
from pipeline.scores_store import write_scores

db, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = Manifest(db)
for i in range(10):
    pid = f"p{i}"
    assert m.claim(pid, "run-1")
    if i == kill_at:
        # killed while writing this partition's store
        with publish_dir(os.path.join(out, pid + ".zarr")) as tmp:
            open(os.path.join(tmp, "half"), "wb").write(b"x")
            os._exit(9)
    n = 10
    path = write_scores(os.path.join(out, pid + ".zarr"), attrs={},
                        log_likelihood=np.zeros(n), component=np.zeros(n, "int32"),
                        responsibility=np.ones(n), is_anomaly=np.zeros(n, bool)).path
    m.record_success(ManifestEntry(pid, "model-1", str(path), n, 0, 0.0, -5.0, pid, utc_now_iso(), "run-1"))
"""


def test_run_killed_mid_partition_next_run_scores_exactly_the_missing(tmp_path):
    db, out = tmp_path / "m.sqlite", tmp_path / "outputs"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(db), str(out), "6"],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    m = Manifest(db)
    assert m.scored_ids() == {f"p{i}" for i in range(6)}
    assert [c.partition_id for c in m.claims()] == ["p6"]  # the dead run's claim
    assert any(name.startswith(".p6.zarr.tmp-") for name in os.listdir(out))

    # the next run
    report = m.reconcile(out)
    assert report["released_stale_claims"] == ["p6"]
    assert len(report["removed_temps"]) == 1
    todo = [f"p{i}" for i in range(10) if f"p{i}" not in m.scored_ids()]
    assert todo == ["p6", "p7", "p8", "p9"]
    for pid in todo:
        assert m.claim(pid, "run-2")
        _score(m, out, pid, "run-2")
    assert sorted(os.listdir(out)) == [f"p{i}.zarr" for i in range(10)]
    entries = m.entries()
    assert {e.partition_id: e.run_id for e in entries} == {
        **{f"p{i}": "run-1" for i in range(6)},
        **{f"p{i}": "run-2" for i in range(6, 10)},
    }
    assert all(Path(e.output_path) == out / f"{e.partition_id}.zarr" for e in entries)


def test_reconcile_restores_or_removes_replaced_entries_in_outputs(tmp_path):
    # an `.old` entry is a replaced directory moved aside: put back when its
    # replacement never arrived, deleted when it did; a live claim keeps it
    out = tmp_path / "outputs"
    m = Manifest(tmp_path / "m.sqlite")
    _score(m, out, "p1", "run-a")
    aside = out / temp_name("p1.zarr", "old")
    os.rename(out / "p1.zarr", aside)  # crash between moving the old aside and moving the new in
    _score(m, out, "p2", "run-a")
    superseded = out / temp_name("p2.zarr", "old")
    superseded.mkdir()  # crash after the new one arrived, before the old was deleted
    assert m.claim("p3", "run-live")
    live_old = out / temp_name("p3.zarr", "old")
    live_old.mkdir()

    report = m.reconcile(out)

    assert report["restored"] == [str(out / "p1.zarr")]
    assert report["removed_temps"] == [str(superseded)]
    assert report["kept_in_progress"] == [str(live_old)]
    assert report["forgotten"] == report["removed_orphans"] == []
    assert m.scored_ids() == {"p1", "p2"}  # restored before entries without output were looked for
    assert read_scores(out / "p1.zarr")["n_rows"] == 20
    assert sorted(os.listdir(out)) == sorted(["p1.zarr", "p2.zarr", live_old.name])


def test_reconcile_sweeps_other_dirs_with_the_grace_period(tmp_path):
    out = tmp_path / "outputs"
    out.mkdir()
    models, report_dir = tmp_path / "models", tmp_path / "report"
    models.mkdir()
    report_dir.mkdir()
    m = Manifest(tmp_path / "m.sqlite")
    past = time.time() - 7200
    old_model_tmp = models / temp_name("20260101T000000Z")
    old_model_tmp.mkdir()
    fresh_model_tmp = models / temp_name("20260101T000001Z")
    fresh_model_tmp.mkdir()
    (models / "v1").mkdir()
    aside = models / temp_name("v2", "old")
    aside.mkdir()  # replacement of v2 never arrived
    old_plot_tmp = report_dir / temp_name("bic.png")
    old_plot_tmp.write_bytes(b"png")
    for p in (old_model_tmp, aside, old_plot_tmp):
        os.utime(p, (past, past))

    report = m.reconcile(out, other_dirs=[models, str(report_dir), tmp_path / "missing"])

    assert sorted(report["removed_other_temps"]) == sorted(map(str, [old_model_tmp, old_plot_tmp]))
    assert report["kept_other_temps"] == [str(fresh_model_tmp)]
    assert report["restored"] == [str(models / "v2")]
    assert report["removed_temps"] == report["kept_in_progress"] == []
    assert sorted(os.listdir(models)) == sorted(["v1", "v2", fresh_model_tmp.name])
    assert os.listdir(report_dir) == []
    again = m.reconcile(out, other_dirs=[models], temp_grace_seconds=0)
    assert again["removed_other_temps"] == [str(fresh_model_tmp)]


def test_reconcile_refuses_bad_other_dirs(tmp_path):
    out = tmp_path / "outputs"
    out.mkdir()
    m = Manifest(tmp_path / "m.sqlite")
    stray = out / temp_name("manifest.json")
    stray.write_text("{}")
    os.utime(stray, (time.time() - 7200,) * 2)
    with pytest.raises(ValueError, match="other_dirs includes the outputs directory.*nothing was changed"):
        m.reconcile(out, other_dirs=[tmp_path / "models", out])
    with pytest.raises(TypeError, match="wrap it in a list"):
        m.reconcile(out, other_dirs=str(tmp_path / "models"))
    assert stray.exists()


# ----------------------------------------------------------------------------
# export and foreign files


def test_export_json(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    e1 = make_entry("p1")
    m.record_success(e1)
    m.record_success(make_entry("p0", n_rows=0, n_anomalies=0, mean_loglik=math.nan))
    assert m.claim("p2", "run-b")
    assert m.claim("p3", "run-b")
    m.record_failure("p3", "run-b", "boom")
    target = tmp_path / "export" / "manifest.json"
    m.export_json(target)
    doc = json.loads(target.read_text())
    assert doc["format"] == "gmm-stream.manifest.export"
    assert doc["schema_version"] == 2 and doc["updates"] == []
    assert doc["manifest"] == str(tmp_path / "m.sqlite")
    assert [e["partition_id"] for e in doc["entries"]] == ["p0", "p1"]
    assert doc["entries"][0]["mean_loglik"] is None
    assert doc["entries"][1] == {
        "partition_id": "p1", "model_version": "model-1", "output_path": "/outputs/p1.zarr",
        "n_rows": 100, "n_anomalies": 3, "mean_loglik": -12.5, "threshold": -20.0,
        "source_url": "/incoming/p1.csv", "scored_at": e1.scored_at, "run_id": "run-a", "drift": None,
    }
    assert [(c["partition_id"], c["run_id"], c["pid"]) for c in doc["claims"]] == [("p2", "run-b", os.getpid())]
    assert [(f["partition_id"], f["error"]) for f in doc["failures"]] == [("p3", "boom")]
    assert os.listdir(target.parent) == ["manifest.json"]


def test_foreign_sqlite_database_is_refused_untouched(tmp_path):
    db = tmp_path / "app.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ann')")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(NotAManifestError, match=r"not a gmm-stream manifest.*other tables \(users\).*Nothing was changed"):
        Manifest(db)
    assert db.read_bytes() == before
    assert not (tmp_path / "app.sqlite-wal").exists()


def test_other_files_are_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a database, just some notes that are long enough " * 4)
    with pytest.raises(NotAManifestError, match="not an SQLite database"):
        Manifest(text)
    assert text.read_text().startswith("this is not a database")

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('application', 'someone-else')")
    conn.close()
    with pytest.raises(NotAManifestError, match="names application 'someone-else'"):
        Manifest(other)

    with pytest.raises(NotAManifestError, match="is a directory"):
        Manifest(tmp_path)


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "m.sqlite"
    Manifest(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(NotAManifestError, match="schema version 99.*upgrade gmm-stream"):
        Manifest(db)
