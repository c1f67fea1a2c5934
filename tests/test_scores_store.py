"""Scores stores: the round trip, atomic publishing, input checks, damage detection, the summary."""

import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from pipeline.scores_store import (
    ScoresStoreError,
    ScoresSummary,
    is_scores_store,
    read_scores,
    scores_marker,
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
# write_scores / read_scores


def test_scores_round_trip_numpy(tmp_path):
    s = _scores(1000)
    attrs = {"model_version": "m1", "threshold": -14.5, "source_url": "/in/p1.csv"}
    out = write_scores(tmp_path / "p1.zarr", attrs=attrs, chunk_rows=300, **s).path
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
        out = write_scores(tmp_path / "p1.zarr", attrs={"k": [1, 2]}, **ds).path
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
    ).path
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
    out = write_scores(tmp_path / "e.zarr", attrs={"n": 0}, **s).path
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
    out = write_scores(tmp_path / "p.zarr", attrs={}, chunk_rows=40, **s).path
    chunk_dir = out / "is_anomaly" / "c"
    assert sorted(os.listdir(chunk_dir)) == ["0", "1", "2"]
    os.remove(chunk_dir / "1")
    assert not is_scores_store(out)
    with pytest.raises(ScoresStoreError, match="'is_anomaly' has 2 of its 3 chunks.*score the partition again"):
        read_scores(out)


def test_read_scores_detects_corrupt_chunk(tmp_path):
    out = write_scores(tmp_path / "p.zarr", attrs={}, chunk_rows=40, **_scores(100)).path
    (out / "log_likelihood" / "c" / "0").write_bytes(b"garbage, not zstd")
    with pytest.raises(ScoresStoreError, match="'log_likelihood' cannot be decoded"):
        read_scores(out)


def test_read_scores_detects_missing_metadata_and_arrays(tmp_path):
    out = write_scores(tmp_path / "p.zarr", attrs={}, **_scores(10)).path
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
    out = write_scores(tmp_path / "p.zarr", attrs={}, **_scores(10)).path
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["gmm_stream"]["n_rows"] = 11
    (out / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ScoresStoreError, match=r"shape \(10,\), expected \(11,\)"):
        read_scores(out)


# ----------------------------------------------------------------------------
# what write_scores returns, and how it refuses an existing store


def test_summary_of_numpy_scores(tmp_path):
    s = _scores(1000)
    summary = write_scores(tmp_path / "p1.zarr", attrs={}, chunk_rows=300, **s)
    assert summary == ScoresSummary(tmp_path / "p1.zarr", 1000, int(s["is_anomaly"].sum()),
                                    float(s["log_likelihood"].mean()))
    assert isinstance(summary.n_rows, int) and isinstance(summary.n_anomalies, int)
    assert isinstance(summary.mean_loglik, float)


def test_summary_of_dask_scores_matches_the_store(tmp_path):
    s = _scores(1003, seed=1)
    ds = {
        "log_likelihood": da.from_array(s["log_likelihood"].astype(np.float32), chunks=((400, 3, 600),)),
        "component": da.from_array(s["component"], chunks=100),
        "responsibility": da.from_array(s["responsibility"], chunks=250),
        "is_anomaly": da.from_array(s["is_anomaly"], chunks=1003),
    }
    with dask.config.set(scheduler="threads"):
        summary = write_scores(tmp_path / "p1.zarr", attrs={}, **ds)
        # what the scoring task used to read back from the store
        stored_ll = da.from_zarr(str(summary.path / "log_likelihood"))
        stored_flag = da.from_zarr(str(summary.path / "is_anomaly"))
        mean, count = dask.compute(stored_ll.mean(), stored_flag.sum())
    assert summary.n_rows == 1003
    assert summary.n_anomalies == int(count) == int(s["is_anomaly"].sum())
    assert summary.mean_loglik == float(mean)  # the stored float64 values, same reduction


def test_summary_of_dask_scores_computes_the_scores_once(tmp_path):
    s = _scores(100)
    calls = []

    def count_blocks(block):
        calls.append(len(block))
        return block

    ll = da.from_array(s["log_likelihood"], chunks=25).map_blocks(count_blocks, meta=np.array((), np.float64))
    with dask.config.set(scheduler="threads"):
        summary = write_scores(tmp_path / "p1.zarr", attrs={}, log_likelihood=ll, component=s["component"],
                               responsibility=s["responsibility"], is_anomaly=ll < -10)
    assert sorted(calls) == [25, 25, 25, 25]
    assert summary.n_anomalies == int((s["log_likelihood"] < -10).sum())
    np.testing.assert_allclose(summary.mean_loglik, s["log_likelihood"].mean(), rtol=1e-12)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_summary_of_an_empty_partition(tmp_path, lazy):
    s = _scores(0)
    if lazy:
        s = {k: da.from_array(v) for k, v in s.items()}
    summary = write_scores(tmp_path / "e.zarr", attrs={}, **s)
    assert summary.n_rows == summary.n_anomalies == 0 and math.isnan(summary.mean_loglik)


def test_existing_store_is_refused_with_the_fix(tmp_path):
    final = tmp_path / "p1.zarr"
    final.mkdir()
    (final / "keep").write_text("old")
    with pytest.raises(FileExistsError, match=r"already exists and is never overwritten\. To re-create it, remove "
                       r"it first \(for a scores store: Manifest\.forget\(partition_id\), then delete the store "
                       r"or let Manifest\.reconcile remove it\), or write to a new path"):
        write_scores(final, attrs={}, **_scores(3))
    assert (final / "keep").read_text() == "old"
    assert os.listdir(tmp_path) == ["p1.zarr"]


def test_scores_marker_reads_only_the_metadata(tmp_path):
    out = write_scores(tmp_path / "p.zarr", attrs={"a": 1}, **_scores(5)).path
    assert scores_marker(out) == {"format": "gmm-stream.scores", "format_version": 1, "n_rows": 5,
                                  "arrays": ["log_likelihood", "component", "responsibility", "is_anomaly"]}
    (tmp_path / "foreign.zarr").mkdir()
    (tmp_path / "foreign.zarr" / "zarr.json").write_text('{"zarr_format": 3, "attributes": {}}')
    assert scores_marker(tmp_path / "foreign.zarr") is None
    assert scores_marker(tmp_path / "missing.zarr") is None


@pytest.mark.parametrize("n, chunk_rows", [(200, 200), (1000, 300), (0, 1), (7, 64)])
def test_small_stores_are_written_as_zarr_writes_them(tmp_path, n, chunk_rows):
    """The direct writer of in-memory stores makes the files zarr makes: the same JSON documents, the same chunk bytes."""
    from pipeline.zarr_v3 import write_group

    rng = np.random.default_rng(n)
    arrays = dict(log_likelihood=rng.normal(size=n), component=rng.integers(0, 5, n),
                  small=rng.integers(0, 5, n).astype(np.int32), is_anomaly=rng.random(n) < 0.1)
    attrs = {"threshold": -3.25, "nested": {"list": [1.5, None, "x"]}}
    (tmp_path / "direct").mkdir()
    write_group(tmp_path / "direct", arrays, chunk_rows, attrs)
    group = zarr.open_group(str(tmp_path / "zarr"), mode="w", zarr_format=3)
    for name, x in arrays.items():
        z = group.create_array(name, shape=(n,), chunks=(chunk_rows,), dtype=x.dtype,
                               config={"write_empty_chunks": True})
        if n:
            z[:] = x
    group.update_attributes(attrs)

    def files(root):
        return {str(p.relative_to(root)): json.loads(p.read_text()) if p.name == "zarr.json" else p.read_bytes()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert files(tmp_path / "direct") == files(tmp_path / "zarr")
    back = zarr.open_group(str(tmp_path / "direct"), mode="r")
    for name, x in arrays.items():
        np.testing.assert_array_equal(back[name][:], x)
        assert back[name].dtype == x.dtype
