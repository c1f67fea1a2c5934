"""Atomic output stores, scores stores and atomic file writes."""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from pipeline import outputs
from pipeline.outputs import (
    ScoresStoreError,
    atomic_store,
    atomic_write_json,
    atomic_write_text,
    is_scores_store,
    parse_temp_name,
    read_scores,
    remove_stale_temps,
    temp_name_for,
    write_scores,
)


def _scores(n, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        log_likelihood=rng.normal(-10, 2, n),
        component=rng.integers(0, 5, n).astype(np.int32),
        responsibility=rng.uniform(0.2, 1.0, n),
        is_anomaly=rng.uniform(size=n) < 0.1,
    )


# ----------------------------------------------------------------------------
# atomic_store


def test_atomic_store_publishes_only_on_success(tmp_path):
    final = tmp_path / "out" / "p1.zarr"
    with atomic_store(final) as tmp:
        assert not final.exists()
        assert tmp.parent == final.parent
        assert tmp.name.startswith(".p1.zarr.tmp-")
        assert parse_temp_name(tmp.name) == "p1.zarr"
        assert tmp.is_dir() and list(tmp.iterdir()) == []
        (tmp / "data").write_bytes(b"123")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "more").write_bytes(b"4")
        assert not final.exists()
    assert (final / "data").read_bytes() == b"123"
    assert (final / "sub" / "more").read_bytes() == b"4"
    assert sorted(os.listdir(final.parent)) == ["p1.zarr"]


def test_atomic_store_leaves_nothing_on_exception(tmp_path):
    final = tmp_path / "p1.zarr"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_store(final) as tmp:
            (tmp / "partial").write_bytes(b"half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_atomic_store_cleans_up_on_keyboard_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_store(tmp_path / "p1.zarr") as tmp:
            (tmp / "partial").write_bytes(b"half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_atomic_store_refuses_existing_final(tmp_path):
    final = tmp_path / "p1.zarr"
    final.mkdir()
    (final / "keep").write_text("old")
    with pytest.raises(FileExistsError, match="already exists and is never overwritten.*remove it first"):
        with atomic_store(final):
            pytest.fail("must not start writing")
    assert (final / "keep").read_text() == "old"
    assert os.listdir(tmp_path) == ["p1.zarr"]


def test_atomic_store_refuses_final_created_meanwhile(tmp_path):
    # A concurrent writer publishes first: ours is refused, theirs is intact,
    # and our temporary directory is gone.
    final = tmp_path / "p1.zarr"
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_store(final) as tmp:
            (tmp / "mine").write_text("mine")
            final.mkdir()
            (final / "theirs").write_text("theirs")
    assert os.listdir(final) == ["theirs"]
    assert os.listdir(tmp_path) == ["p1.zarr"]


def test_atomic_store_refuses_empty_final_created_meanwhile(tmp_path):
    # rename(2) would silently replace an empty directory; we must not.
    final = tmp_path / "p1.zarr"
    with pytest.raises(FileExistsError):
        with atomic_store(final) as tmp:
            (tmp / "mine").write_text("mine")
            final.mkdir()
    assert os.listdir(final) == []
    assert os.listdir(tmp_path) == ["p1.zarr"]


def test_no_replace_rename_closes_the_race_window(tmp_path, monkeypatch):
    # The target appears between the existence check and the rename: only
    # renameat2(RENAME_NOREPLACE) can refuse then.
    if not outputs._get_renameat2():
        pytest.skip("renameat2 is not available here")
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    monkeypatch.setattr(outputs.os.path, "lexists", lambda p: False)
    with pytest.raises(FileExistsError, match="never overwritten"):
        outputs._rename_noreplace(src, dst)
    assert src.exists() and dst.exists()


def test_rename_fallback_without_renameat2_refuses_existing(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_get_renameat2", lambda: False)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    with pytest.raises(FileExistsError, match="never overwritten"):
        outputs._rename_noreplace(src, dst)
    dst.rmdir()
    outputs._rename_noreplace(src, dst)
    assert dst.exists() and not src.exists()


def test_atomic_store_refuses_urls(tmp_path):
    with pytest.raises(ValueError, match="is a URL.*local or network-mounted"):
        with atomic_store("s3://bucket/p1.zarr"):
            pass


# ----------------------------------------------------------------------------
# write_scores / read_scores


def test_scores_round_trip_numpy(tmp_path):
    s = _scores(1000)
    attrs = {"model_version": "m1", "threshold": -14.5, "source_url": "/in/p1.csv"}
    out = write_scores(tmp_path / "p1.zarr", attrs=attrs, chunk_rows=300, **s)
    assert out == tmp_path / "p1.zarr"
    back = read_scores(out)
    for name, arr in s.items():
        np.testing.assert_array_equal(back[name], arr)
        assert back[name].dtype == arr.dtype
    assert back["attrs"] == attrs
    assert back["n_rows"] == 1000
    z = zarr.open_group(str(out), mode="r")
    assert z.metadata.zarr_format == 3
    assert z["log_likelihood"].chunks == (300,)
    assert os.listdir(tmp_path) == ["p1.zarr"]


def test_scores_round_trip_dask_multiple_chunks(tmp_path):
    s = _scores(1003, seed=1)
    # irregular chunks, different per array: stored aligned to chunk_rows
    ds = {
        "log_likelihood": da.from_array(s["log_likelihood"], chunks=((400, 3, 600),)),
        "component": da.from_array(s["component"], chunks=100),
        "responsibility": da.from_array(s["responsibility"], chunks=250),
        "is_anomaly": da.from_array(s["is_anomaly"], chunks=1003),
    }
    with dask.config.set(scheduler="threads"):
        out = write_scores(tmp_path / "p1.zarr", attrs={"k": [1, 2]}, **ds)
    back = read_scores(out)
    for name, arr in s.items():
        np.testing.assert_array_equal(back[name], arr)
    z = zarr.open_group(str(out), mode="r")
    assert z["is_anomaly"].chunks == (400,)  # default: the first Dask chunk
    assert z["is_anomaly"].nchunks == 3
    assert back["attrs"] == {"k": [1, 2]}


def test_scores_mixed_dask_and_numpy_with_explicit_chunks(tmp_path):
    s = _scores(50, seed=2)
    ll = da.from_array(s["log_likelihood"], chunks=7)
    out = write_scores(
        tmp_path / "p.zarr", attrs={}, chunk_rows=16,
        log_likelihood=ll, component=s["component"].astype(np.int64),
        responsibility=s["responsibility"].astype(np.float32), is_anomaly=s["is_anomaly"],
    )
    back = read_scores(out)
    np.testing.assert_array_equal(back["log_likelihood"], s["log_likelihood"])
    assert back["component"].dtype == np.int64
    assert back["responsibility"].dtype == np.float64
    np.testing.assert_allclose(back["responsibility"], s["responsibility"].astype(np.float32))


def test_failing_dask_computation_leaves_nothing(tmp_path):
    s = _scores(100)

    def explode(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("corrupt input block")
        return block

    ll = da.from_array(s["log_likelihood"], chunks=25).map_blocks(explode, dtype=np.float64)
    with pytest.raises(RuntimeError, match="corrupt input block"):
        write_scores(tmp_path / "p1.zarr", attrs={}, log_likelihood=ll, component=s["component"],
                     responsibility=s["responsibility"], is_anomaly=s["is_anomaly"])
    assert os.listdir(tmp_path) == []


def test_tasks_still_running_after_a_failure_do_not_recreate_the_temp_dir(tmp_path):
    # dask raises at the first failed task while others keep running; those
    # must not write into (and so re-create) the removed temporary directory.
    s = _scores(40)

    def fail_or_finish_late(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 0:
            raise RuntimeError("first block is corrupt")
        deadline = time.monotonic() + 30
        while any(n.startswith(".p1.zarr.tmp-") for n in os.listdir(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.01)  # finish only after the temporary directory was removed
        return block

    ll = da.from_array(s["log_likelihood"], chunks=10).map_blocks(fail_or_finish_late, dtype=np.float64)
    pool = ThreadPoolExecutor(4)
    try:
        with dask.config.set(scheduler="threads", pool=pool):
            with pytest.raises(RuntimeError, match="first block is corrupt"):
                write_scores(tmp_path / "p1.zarr", attrs={}, log_likelihood=ll, component=s["component"],
                             responsibility=s["responsibility"], is_anomaly=s["is_anomaly"])
    finally:
        pool.shutdown(wait=True)  # every straggler has finished its write attempt
    assert os.listdir(tmp_path) == []


def test_empty_partition_round_trip(tmp_path):
    s = _scores(0)
    out = write_scores(tmp_path / "e.zarr", attrs={"n": 0}, **s)
    back = read_scores(out)
    assert back["n_rows"] == 0
    assert all(back[k].shape == (0,) for k in s)


def test_write_scores_refuses_to_overwrite(tmp_path):
    s = _scores(10)
    write_scores(tmp_path / "p1.zarr", attrs={"v": 1}, **s)
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_scores(tmp_path / "p1.zarr", attrs={"v": 2}, **_scores(10, seed=5))
    back = read_scores(tmp_path / "p1.zarr")
    assert back["attrs"] == {"v": 1}
    np.testing.assert_array_equal(back["log_likelihood"], s["log_likelihood"])
    assert os.listdir(tmp_path) == ["p1.zarr"]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"log_likelihood": np.zeros(9)}, "equal lengths"),
        ({"log_likelihood": np.zeros((10, 1))}, "1-D"),
        ({"component": np.zeros(10)}, "component must be an integer array"),
        ({"is_anomaly": np.zeros(10, dtype=np.int8)}, "is_anomaly must be a boolean array"),
        ({"responsibility": np.zeros(10, dtype=np.int64)}, "responsibility must be floating point"),
    ],
)
def test_write_scores_rejects_bad_arrays_before_writing(tmp_path, change, match):
    s = {**_scores(10), **change}
    with pytest.raises(ValueError, match=match):
        write_scores(tmp_path / "p1.zarr", attrs={}, **s)
    assert os.listdir(tmp_path) == []


def test_write_scores_rejects_bad_attrs(tmp_path):
    with pytest.raises(TypeError, match="JSON-serialisable"):
        write_scores(tmp_path / "a.zarr", attrs={"x": np.float32(1)}, **_scores(3))
    with pytest.raises(TypeError, match="JSON-serialisable"):
        write_scores(tmp_path / "a.zarr", attrs={"x": float("nan")}, **_scores(3))
    with pytest.raises(ValueError, match="reserved"):
        write_scores(tmp_path / "a.zarr", attrs={"gmm_stream": 1}, **_scores(3))
    assert os.listdir(tmp_path) == []


def test_read_scores_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_scores(tmp_path / "nope.zarr")


def test_read_scores_detects_missing_chunk(tmp_path):
    s = _scores(100)
    s["is_anomaly"][:] = False  # all-fill chunks must still be written
    out = write_scores(tmp_path / "p.zarr", attrs={}, chunk_rows=40, **s)
    chunk_dir = out / "is_anomaly" / "c"
    assert sorted(os.listdir(chunk_dir)) == ["0", "1", "2"]
    os.remove(chunk_dir / "1")
    assert not is_scores_store(out)
    with pytest.raises(ScoresStoreError, match="'is_anomaly' has 2 of its 3 chunks.*score the partition again"):
        read_scores(out)


def test_read_scores_detects_corrupt_chunk(tmp_path):
    out = write_scores(tmp_path / "p.zarr", attrs={}, chunk_rows=40, **_scores(100))
    (out / "log_likelihood" / "c" / "0").write_bytes(b"garbage, not zstd")
    with pytest.raises(ScoresStoreError, match="'log_likelihood' cannot be decoded"):
        read_scores(out)


def test_read_scores_detects_missing_metadata_and_arrays(tmp_path):
    out = write_scores(tmp_path / "p.zarr", attrs={}, **_scores(10))
    import shutil

    shutil.rmtree(out / "component")
    with pytest.raises(ScoresStoreError, match="array 'component' is missing"):
        read_scores(out)
    os.remove(out / "zarr.json")
    with pytest.raises(ScoresStoreError, match="no zarr.json"):
        read_scores(out)


def test_read_scores_refuses_foreign_zarr(tmp_path):
    g = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    g.create_array("x", shape=(3,), dtype="f8")
    with pytest.raises(ScoresStoreError, match="not a gmm-stream scores store"):
        read_scores(tmp_path / "other.zarr")


def test_read_scores_detects_wrong_length(tmp_path):
    out = write_scores(tmp_path / "p.zarr", attrs={}, **_scores(10))
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["gmm_stream"]["n_rows"] = 11
    (out / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ScoresStoreError, match=r"shape \(10,\), expected \(11,\)"):
        read_scores(out)


# ----------------------------------------------------------------------------
# remove_stale_temps


def test_remove_stale_temps(tmp_path):
    keep = tmp_path / "p1.zarr"
    keep.mkdir()
    (tmp_path / "notes.tmp").write_text("not ours")
    (tmp_path / ".p1.zarr.tmp-short").mkdir()  # not our temp pattern
    old_dir = tmp_path / temp_name_for("p2.zarr")
    old_dir.mkdir()
    (old_dir / "chunk").write_bytes(b"1")
    old_file = tmp_path / temp_name_for("manifest.json")
    old_file.write_text("{}")
    new_dir = tmp_path / temp_name_for("p3.zarr")
    new_dir.mkdir()
    past = time.time() - 3600
    for p in (old_dir, old_file):
        os.utime(p, (past, past))

    removed = remove_stale_temps(tmp_path, older_than_seconds=600)
    assert sorted(removed) == sorted([str(old_dir), str(old_file)])
    assert new_dir.exists() and keep.exists()

    removed = remove_stale_temps(tmp_path)
    assert removed == [str(new_dir)]
    assert sorted(os.listdir(tmp_path)) == [".p1.zarr.tmp-short", "notes.tmp", "p1.zarr"]
    assert remove_stale_temps(tmp_path / "missing") == []


# ----------------------------------------------------------------------------
# atomic_write_text / atomic_write_json


def test_atomic_write_json_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')  # sorted keys
    atomic_write_json(path, {"c": None})
    assert json.loads(path.read_text()) == {"c": None}
    assert os.listdir(path.parent) == ["state.json"]


def test_atomic_write_json_failure_keeps_old_content(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"ok": True})
    with pytest.raises(ValueError, match="Replace NaN/infinity with None"):
        atomic_write_json(path, {"x": float("nan")})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"x": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_write_text(tmp_path):
    path = tmp_path / "note.txt"
    atomic_write_text(path, "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert os.listdir(tmp_path) == ["note.txt"]
