"""Tests for pipeline.ingest: every format, every refusal, atomicity, streaming."""

from __future__ import annotations

import gzip
import logging
import os
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import zarr

from pipeline.ingest import (
    IngestError,
    IngestResult,
    ValidationReport,
    detect_format,
    ingest,
    read_report,
    read_rows,
)

RNG = np.random.default_rng(12345)


# ---------------------------------------------------------------------------
# helpers


def _data(n=40, d=3, dtype=np.float64):
    return RNG.standard_normal((n, d)).astype(dtype)


def _table(X, names=None):
    names = names or [f"c{i}" for i in range(X.shape[1])]
    return pa.table({n: X[:, i] for i, n in enumerate(names)})


def _write_csv(path, X, names=None):
    pcsv.write_csv(_table(X, names), str(path))
    return path


def _write_text(path, text):
    path.write_text(text)
    return path


def _read(path):
    z = zarr.open_array(str(path), mode="r")
    return z[:], z


def _leftovers(directory, keep):
    """Entries of ``directory`` other than ``keep`` (temp dirs, partial dests)."""
    return sorted(set(os.listdir(directory)) - set(keep))


# ---------------------------------------------------------------------------
# detect_format


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("a.csv", "csv"),
        ("a.CSV.gz", "csv"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
        ("a.npy", "npy"),
        ("a.zarr", "zarr"),
        ("s3://bucket/x/a.csv", "csv"),
    ],
)
def test_detect_format_by_suffix(name, fmt):
    assert detect_format(name) == fmt


def test_detect_format_zarr_directory_and_unknown(tmp_path):
    z = zarr.create_array(str(tmp_path / "plain"), shape=(2, 2), dtype="f8")
    z[:] = 1.0
    assert detect_format(tmp_path / "plain") == "zarr"
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(IngestError, match=r"Cannot tell the format.*format='csv'"):
        detect_format(tmp_path / "data.txt")


# ---------------------------------------------------------------------------
# round trips


def test_csv_round_trip_exact(tmp_path):
    X = _data()
    src = _write_csv(tmp_path / "d.csv", X, ["a", "b", "c"])
    res = ingest(src, tmp_path / "out.zarr")
    assert isinstance(res, IngestResult)
    Y, z = _read(res.path)
    assert Y.dtype == np.float64 and np.array_equal(Y, X)
    assert z.attrs["feature_names"] == ["a", "b", "c"]
    assert z.metadata.zarr_format == 3
    assert res.report.n_rows_read == res.report.n_rows_written == 40
    assert res.report.format == "csv" and res.report.dtype == "float64"
    assert res.report.source == str(src)
    assert z.attrs["source"] == str(src) and z.attrs["created_at"].endswith("+00:00")


def test_gzipped_csv_round_trip(tmp_path):
    X = _data()
    plain = _write_csv(tmp_path / "d.csv", X)
    gz = tmp_path / "d.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    Y, _ = _read(ingest(gz, tmp_path / "out.zarr").path)
    assert np.array_equal(Y, X)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parquet_round_trip_keeps_float_dtype(tmp_path, dtype):
    X = _data(dtype=dtype)
    pq.write_table(_table(X, ["p", "q", "r"]), tmp_path / "d.parquet")
    res = ingest(tmp_path / "d.parquet", tmp_path / "out.zarr")
    Y, z = _read(res.path)
    assert Y.dtype == dtype and np.array_equal(Y, X)
    assert z.attrs["feature_names"] == ["p", "q", "r"]
    assert res.report.dtype == np.dtype(dtype).name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npy_round_trip_default_names(tmp_path, dtype):
    X = _data(dtype=dtype)
    np.save(tmp_path / "d.npy", X)
    res = ingest(tmp_path / "d.npy", tmp_path / "out.zarr")
    Y, z = _read(res.path)
    assert Y.dtype == dtype and np.array_equal(Y, X)
    assert z.attrs["feature_names"] == ["x0", "x1", "x2"]


def test_npy_fortran_order_and_feature_names(tmp_path):
    X = np.asfortranarray(_data(n=25, d=4))
    np.save(tmp_path / "d.npy", X)
    res = ingest(tmp_path / "d.npy", tmp_path / "out.zarr",
                 feature_names=["a", "b", "c", "d"], batch_rows=7)
    Y, z = _read(res.path)
    assert np.array_equal(Y, X) and z.attrs["feature_names"] == ["a", "b", "c", "d"]


def test_zarr_to_zarr_rechunks_and_keeps_names(tmp_path):
    X = _data(n=50, d=3)
    src = zarr.create_array(str(tmp_path / "src.zarr"), shape=X.shape, chunks=(7, 3),
                            dtype="f8")
    src[:] = X
    src.attrs["feature_names"] = ["u", "v", "w"]
    res = ingest(tmp_path / "src.zarr", tmp_path / "out.zarr", chunk_rows=12)
    Y, z = _read(res.path)
    assert np.array_equal(Y, X)
    assert z.chunks == (12, 3)
    assert z.attrs["feature_names"] == ["u", "v", "w"]
    assert res.report.format == "zarr"


def test_zarr_source_without_names_and_columns_by_position(tmp_path):
    X = _data(n=20, d=4, dtype=np.float32)
    src = zarr.create_array(str(tmp_path / "src.zarr"), shape=X.shape, chunks=(6, 4),
                            dtype="f4")
    src[:] = X
    res = ingest(tmp_path / "src.zarr", tmp_path / "out.zarr", columns=[3, 1])
    Y, z = _read(res.path)
    assert Y.dtype == np.float32 and np.array_equal(Y, X[:, [3, 1]])
    assert z.attrs["feature_names"] == ["x3", "x1"]


def test_default_chunks_fit_small_data_and_compression_is_lz4(tmp_path):
    X = _data(n=30)
    np.save(tmp_path / "d.npy", X)
    _, z = _read(ingest(tmp_path / "d.npy", tmp_path / "out.zarr").path)
    assert z.chunks == (30, 3)  # no 32 MiB chunk padded around 30 rows
    (codec,) = z.compressors
    assert type(codec).__name__ == "BloscCodec" and codec.cname.value == "lz4"


@pytest.mark.parametrize("compression, names", [("zstd", ["ZstdCodec"]), ("none", [])])
def test_compression_choice_round_trips(tmp_path, compression, names):
    X = _data(n=1000)
    np.save(tmp_path / "d.npy", X)
    Y, z = _read(ingest(tmp_path / "d.npy", tmp_path / "out.zarr", compression=compression).path)
    assert [type(c).__name__ for c in z.compressors] == names
    assert np.array_equal(Y, X)


def test_integer_and_bool_columns_convert_and_are_recorded(tmp_path):
    t = pa.table({
        "i": pa.array([1, -2, 3], pa.int64()),
        "u": pa.array([7, 8, 9], pa.uint8()),
        "b": pa.array([True, False, True]),
        "f": pa.array([0.5, 1.5, 2.5], pa.float32()),
    })
    pq.write_table(t, tmp_path / "d.parquet")
    res = ingest(tmp_path / "d.parquet", tmp_path / "out.zarr")
    Y, _ = _read(res.path)
    assert Y.dtype == np.float64  # not all float32: float64, never a downcast
    assert np.array_equal(Y, [[1, 7, 1, 0.5], [-2, 8, 0, 1.5], [3, 9, 1, 2.5]])
    assert res.report.source_dtypes == {
        "i": "int64", "u": "uint8", "b": "bool", "f": "float32"
    }


def test_csv_bool_and_int_columns(tmp_path):
    src = _write_text(tmp_path / "d.csv", "flag,n,x\ntrue,1,0.25\nFalse,-3,1e3\n")
    res = ingest(src, tmp_path / "out.zarr")
    Y, _ = _read(res.path)
    assert np.array_equal(Y, [[1, 1, 0.25], [0, -3, 1000.0]])
    assert res.report.source_dtypes == {"flag": "bool", "n": "int64", "x": "float64"}


def test_float32_requested_and_float32_upcast(tmp_path):
    X = _data()
    np.save(tmp_path / "d.npy", X)
    Y, _ = _read(ingest(tmp_path / "d.npy", tmp_path / "a.zarr", dtype="float32").path)
    assert Y.dtype == np.float32 and np.array_equal(Y, X.astype(np.float32))
    X32 = X.astype(np.float32)
    np.save(tmp_path / "e.npy", X32)
    Y, _ = _read(ingest(tmp_path / "e.npy", tmp_path / "b.zarr", dtype="float64").path)
    assert Y.dtype == np.float64 and np.array_equal(Y, X32.astype(np.float64))


# ---------------------------------------------------------------------------
# refusals of inexact conversion and bad options


def test_integer_not_exact_in_float32_is_refused(tmp_path):
    np.save(tmp_path / "d.npy", np.array([[1, 2], [16_777_217, 3]], dtype=np.int64))
    with pytest.raises(IngestError, match=r"16777217 \(row 1\).*float32 cannot represent "
                                          r"exactly.*dtype='float64'"):
        ingest(tmp_path / "d.npy", tmp_path / "out.zarr", dtype="float32")
    assert not (tmp_path / "out.zarr").exists()
    # the default float64 holds it exactly
    Y, _ = _read(ingest(tmp_path / "d.npy", tmp_path / "out.zarr").path)
    assert Y[1, 0] == 16_777_217


def test_integer_not_exact_in_float64_is_refused(tmp_path):
    big = 2**53 + 1
    pq.write_table(pa.table({"id": pa.array([1, big], pa.int64()), "x": [0.0, 1.0]}),
                   tmp_path / "d.parquet")
    with pytest.raises(IngestError, match=rf"'id' holds the integer {big}.*columns="):
        ingest(tmp_path / "d.parquet", tmp_path / "out.zarr")
    src = _write_text(tmp_path / "d.csv", f"id,x\n1,0.5\n{big},1.5\n")
    with pytest.raises(IngestError, match=rf"'id' holds the integer {big} \(row 1\)"):
        ingest(src, tmp_path / "out.zarr")


def test_float32_overflow_is_refused(tmp_path):
    np.save(tmp_path / "d.npy", np.array([[1.0], [1e300]]))
    with pytest.raises(IngestError, match=r"1e\+300 \(row 1\).*infinity.*dtype='float64'"):
        ingest(tmp_path / "d.npy", tmp_path / "out.zarr", dtype="float32")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bad_rows": "skip"}, r"bad_rows must be 'error' or 'drop'"),
        ({"bad_rows": "impute"}, r"bad_rows must be 'error' or 'drop' or 'marginalize', got 'impute'"),
        ({"dtype": "int32"}, r"dtype must be 'float32' or 'float64'"),
        ({"format": "json"}, r"format must be one of"),
        ({"chunk_rows": 0}, r"chunk_rows must be a positive integer"),
        ({"compression": "gzip"}, r"compression must be one of \['lz4', 'zstd', 'none'\], got 'gzip'"),
        ({"columns": "a"}, r"columns=\['a'\]"),
        ({"columns": ["a", "zz"]}, r"\['zz'\] are not in .*its columns are \['a', 'b'\]"),
        ({"columns": ["a", "a"]}, r"lists \['a'\] more than once"),
        ({"feature_names": ["x", "x"]}, r"feature_names is invalid.*unique"),
        ({"feature_names": ["x"]}, r"feature_names is invalid: 1 names for 2 columns"),
        ({"feature_names": ["x", ""]}, r"non-empty strings"),
    ],
)
def test_bad_options_are_refused(tmp_path, kwargs, match):
    src = _write_text(tmp_path / "d.csv", "a,b\n1,2\n3,4\n")
    with pytest.raises(IngestError, match=match):
        ingest(src, tmp_path / "out.zarr", **kwargs)
    assert _leftovers(tmp_path, ["d.csv"]) == []


def test_missing_source_and_url_dest_are_refused(tmp_path):
    with pytest.raises(IngestError, match=r"source not found"):
        ingest(tmp_path / "nope.csv", tmp_path / "out.zarr")
    src = _write_text(tmp_path / "d.csv", "a\n1\n")
    with pytest.raises(IngestError, match=r"dest must be a local path"):
        ingest(src, "s3://bucket/out.zarr")


def test_npy_that_is_not_2d_is_refused(tmp_path):
    np.save(tmp_path / "d.npy", np.arange(5.0))
    with pytest.raises(IngestError, match=r"1-D array.*reshape\(-1, 1\)"):
        ingest(tmp_path / "d.npy", tmp_path / "out.zarr")


# ---------------------------------------------------------------------------
# columns and non-numeric data


def test_columns_select_and_order(tmp_path):
    X = _data(d=4)
    src = _write_csv(tmp_path / "d.csv", X, ["a", "b", "c", "d"])
    res = ingest(src, tmp_path / "out.zarr", columns=["d", "b"])
    Y, z = _read(res.path)
    assert np.array_equal(Y, X[:, [3, 1]])
    assert z.attrs["feature_names"] == ["d", "b"]


MIXED_CSV = "id,x,when,y\nabc,1.5,2024-01-01,2\ndef,2.5,2024-01-02,3\n"


def test_non_numeric_column_is_refused_with_fix(tmp_path):
    src = _write_text(tmp_path / "d.csv", MIXED_CSV)
    with pytest.raises(IngestError, match=r"Non-numeric columns.*'id'.*'when'.*"
                                          r"columns=\[\.\.\.\] with numeric columns only"):
        ingest(src, tmp_path / "out.zarr")
    pq.write_table(pa.table({"name": ["a", "b"], "v": [1.0, 2.0]}), tmp_path / "d.parquet")
    with pytest.raises(IngestError, match=r"'name' \(string\).*encode these columns"):
        ingest(tmp_path / "d.parquet", tmp_path / "p.zarr")
    assert _leftovers(tmp_path, ["d.csv", "d.parquet"]) == []


def test_excluded_non_numeric_columns_are_listed_in_report(tmp_path):
    src = _write_text(tmp_path / "d.csv", MIXED_CSV)
    res = ingest(src, tmp_path / "out.zarr", columns=["x", "y"])
    Y, _ = _read(res.path)
    assert np.array_equal(Y, [[1.5, 2], [2.5, 3]])
    assert res.report.non_numeric_columns == ["id", "when"]


# ---------------------------------------------------------------------------
# bad rows


BAD_CSV = "a,b\n1,2\n,3\n4,inf\n5,6\n-inf,nan\n7,8\n9,abc\n10,11\n"
# rows: 1 empty (NaN), 2 inf, 4 -inf and nan (NaN), 6 'abc' (unparseable)


def test_bad_rows_error_names_count_and_rows(tmp_path):
    src = _write_text(tmp_path / "d.csv", BAD_CSV)
    with pytest.raises(IngestError, match=r"4 of 8 rows.*row indices 1, 2, 4, 6 .*"
                                          r"'abc' at row 6.*bad_rows='drop'"):
        ingest(src, tmp_path / "out.zarr")
    assert _leftovers(tmp_path, ["d.csv"]) == []


def test_bad_rows_error_carries_the_report(tmp_path):
    src = _write_text(tmp_path / "d.csv", BAD_CSV)
    with pytest.raises(IngestError) as info:
        ingest(src, tmp_path / "out.zarr")
    rep = info.value.report
    assert (rep.n_rows_read, rep.n_bad_rows, rep.bad_row_examples) == (8, 4, [1, 2, 4, 6])


def test_bad_rows_drop_records_counts_and_keeps_rows_exact(tmp_path, caplog):
    src = _write_text(tmp_path / "d.csv", BAD_CSV)
    with caplog.at_level(logging.WARNING, logger="pipeline.ingest"):
        res = ingest(src, tmp_path / "out.zarr", bad_rows="drop")
    Y, z = _read(res.path)
    assert np.array_equal(Y, [[1, 2], [5, 6], [7, 8], [10, 11]])
    r = res.report
    assert (r.n_rows_read, r.n_rows_written, r.n_bad_rows) == (8, 4, 4)
    assert (r.n_nan_rows, r.n_inf_rows, r.n_unparseable_rows) == (3, 1, 1)
    assert r.bad_row_examples == [1, 2, 4, 6]
    assert r.bad_rows_policy == "drop"
    assert z.attrs["ingest_report"]["n_bad_rows"] == 4
    assert any("Dropped 4 of 8 rows" in m for m in caplog.messages)


def test_bad_rows_in_npy_and_parquet(tmp_path):
    X = _data(n=30)
    X[[3, 17], 1] = np.nan
    X[25, 0] = -np.inf
    np.save(tmp_path / "d.npy", X)
    with pytest.raises(IngestError, match=r"3 of 30 rows.*row indices 3, 17, 25"):
        ingest(tmp_path / "d.npy", tmp_path / "out.zarr", batch_rows=8)
    res = ingest(tmp_path / "d.npy", tmp_path / "out.zarr", bad_rows="drop", batch_rows=8)
    keep = np.isfinite(X).all(axis=1)
    assert np.array_equal(_read(res.path)[0], X[keep])
    assert (res.report.n_nan_rows, res.report.n_inf_rows) == (2, 1)
    # Parquet nulls are missing values too
    t = pa.table({"a": pa.array([1.0, None, 3.0]), "b": pa.array([1, 2, None], pa.int64())})
    pq.write_table(t, tmp_path / "d.parquet")
    res = ingest(tmp_path / "d.parquet", tmp_path / "p.zarr", bad_rows="drop")
    assert np.array_equal(_read(res.path)[0], [[1.0, 1.0]])
    assert res.report.bad_row_examples == [1, 2]


def test_bad_row_examples_stop_at_ten(tmp_path):
    X = np.full((25, 2), np.nan)
    X[::2] = 1.0
    np.save(tmp_path / "d.npy", X)
    with pytest.raises(IngestError, match=r"12 of 25 rows.*1, 3, 5, 7, 9, 11, 13, 15, 17, 19, "
                                          r"\.\.\."):
        ingest(tmp_path / "d.npy", tmp_path / "out.zarr")
    res = ingest(tmp_path / "d.npy", tmp_path / "out.zarr", bad_rows="drop")
    assert res.report.bad_row_examples == list(range(1, 21, 2))


def test_mostly_numeric_text_column_counts_junk_as_bad_rows(tmp_path):
    # the junk cell is in the first block, where pyarrow infers 'string'
    src = _write_text(tmp_path / "d.csv", "a,b\n1,2\n?,3\n4,5\n6,7\n")
    res = ingest(src, tmp_path / "out.zarr", bad_rows="drop")
    assert np.array_equal(_read(res.path)[0], [[1, 2], [4, 5], [6, 7]])
    assert res.report.n_unparseable_rows == 1 and res.report.bad_row_examples == [1]


def test_late_cell_that_breaks_inferred_type_falls_back(tmp_path):
    # block 1 infers int64 for 'a'; later blocks hold 2.5 and junk
    rows = [f"{i},{i}" for i in range(40)] + ["2.5,1", "x,2", "7,3"]
    src = _write_text(tmp_path / "d.csv", "a,b\n" + "\n".join(rows) + "\n")
    res = ingest(src, tmp_path / "out.zarr", bad_rows="drop", block_size=64)
    Y, _ = _read(res.path)
    expected = [[i, i] for i in range(40)] + [[2.5, 1], [7, 3]]
    assert np.array_equal(Y, expected)
    assert res.report.bad_row_examples == [41] and res.report.n_unparseable_rows == 1


def test_repeated_csv_header_names_are_refused(tmp_path):
    src = _write_text(tmp_path / "d.csv", "a,b,a\n1,2,3\n")
    for kw in ({}, {"feature_names": ["p", "q", "r"]}, {"columns": [2, 1]}):
        with pytest.raises(IngestError, match=r"\['a'\] appear more than once.*rename"):
            ingest(src, tmp_path / "out.zarr", **kw)
    Y, _ = _read(ingest(src, tmp_path / "out.zarr", columns=["b"]).path)
    assert np.array_equal(Y, [[2.0]])


def test_malformed_csv_row_is_refused(tmp_path):
    src = _write_text(tmp_path / "d.csv", "a,b\n1,2\n3\n")
    with pytest.raises(IngestError, match=r"Expected 2 columns, got 1.*Fix the file"):
        ingest(src, tmp_path / "out.zarr")


# ---------------------------------------------------------------------------
# bad_rows='marginalize': rows with missing values kept as NaN


GAPS_CSV = "a,b,c\n1,2,3\n,5,6\n7,NA,\n8,9,10\n"
# rows: 1 one empty cell, 2 a null ('NA') and an empty cell


def test_marginalize_keeps_rows_with_missing_values_as_nan(tmp_path, caplog):
    src = _write_text(tmp_path / "d.csv", GAPS_CSV)
    with caplog.at_level(logging.INFO, logger="pipeline.ingest"):
        res = ingest(src, tmp_path / "out.zarr", bad_rows="marginalize")
    Y, z = _read(res.path)
    expected = [[1, 2, 3], [np.nan, 5, 6], [7, np.nan, np.nan], [8, 9, 10]]
    assert np.array_equal(Y, expected, equal_nan=True)
    r = res.report
    assert (r.n_rows_read, r.n_rows_written, r.n_bad_rows) == (4, 4, 0)
    assert (r.n_incomplete_rows, r.n_missing_values, r.n_empty_rows) == (2, 3, 0)
    assert r.bad_rows_policy == "marginalize"
    assert z.attrs["ingest_report"]["n_incomplete_rows"] == 2
    assert read_report(res.path) == r
    assert any("Kept 2 of 4 rows" in m and "3 values" in m for m in caplog.messages)


BAD_GAPS_CSV = "a,b\n1,2\n,3\n4,inf\n5,6\n-inf,nan\n7,8\n9,abc\n,\n10,11\n"
# rows: 1 incomplete (kept), 2 inf, 4 -inf and nan, 6 'abc' (unparseable), 7 every value missing


def test_marginalize_still_refuses_infinities_junk_and_rows_without_values(tmp_path):
    src = _write_text(tmp_path / "d.csv", BAD_GAPS_CSV)
    with pytest.raises(IngestError, match=r"4 of 9 rows of .* cannot be kept with missing values \(2 with "
                                          r"infinity; 1 with every value missing; 1 with a non-numeric cell\): "
                                          r"row indices 2, 4, 6, 7 .*'abc' at row 6.*bad_rows='drop'.*"
                                          r"Nothing was written") as info:
        ingest(src, tmp_path / "out.zarr", bad_rows="marginalize")
    rep = info.value.report
    assert (rep.n_bad_rows, rep.n_nan_rows, rep.n_inf_rows) == (4, 3, 1)
    assert (rep.n_unparseable_rows, rep.n_empty_rows, rep.n_incomplete_rows) == (1, 1, 1)
    assert rep.bad_row_examples == [2, 4, 6, 7]
    assert _leftovers(tmp_path, ["d.csv"]) == []
    # the other policies count the rows without values too
    res = ingest(src, tmp_path / "drop.zarr", bad_rows="drop")
    assert (res.report.n_bad_rows, res.report.n_empty_rows, res.report.n_incomplete_rows) == (5, 1, 0)


def test_marginalize_keeps_npy_nan_and_parquet_nulls(tmp_path):
    X = _data(n=30)
    X[[3, 17], 1] = np.nan
    X[25, [0, 2]] = np.nan
    np.save(tmp_path / "d.npy", X)
    res = ingest(tmp_path / "d.npy", tmp_path / "out.zarr", bad_rows="marginalize", batch_rows=8)
    assert np.array_equal(_read(res.path)[0], X, equal_nan=True)
    assert (res.report.n_incomplete_rows, res.report.n_missing_values, res.report.n_bad_rows) == (3, 4, 0)
    t = pa.table({"a": pa.array([1.0, None, 3.0]), "b": pa.array([1, 2, None], pa.int64())})
    pq.write_table(t, tmp_path / "d.parquet")
    res = ingest(tmp_path / "d.parquet", tmp_path / "p.zarr", bad_rows="marginalize")
    assert np.array_equal(_read(res.path)[0], [[1.0, 1.0], [np.nan, 2.0], [3.0, np.nan]], equal_nan=True)


def test_marginalized_ingest_feeds_a_marginalizing_mixture(tmp_path):
    from gmm_engine import GaussianMixture

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(200, 3)), rng.normal(size=(200, 3)) + 6.0])
    X[rng.random(X.shape) < 0.1] = np.nan
    X = X[~np.isnan(X).all(axis=1)]
    np.save(tmp_path / "d.npy", X)
    res = ingest(tmp_path / "d.npy", tmp_path / "out.zarr", bad_rows="marginalize")
    assert res.report.n_incomplete_rows == int(np.isnan(X).any(axis=1).sum())
    gm = GaussianMixture(2, missing="marginalize", random_state=0).fit(res.path)
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), [0.0, 6.0], atol=0.3)
    assert np.all(np.isfinite(gm.score_samples(res.path)))


def test_reports_written_before_marginalize_read_back_with_zero_counts():
    old = {k: v for k, v in ValidationReport(
        source="s", format="csv", n_rows_read=1, n_rows_written=1, n_bad_rows=0, n_nan_rows=0, n_inf_rows=0,
        bad_row_examples=[], non_numeric_columns=[], feature_names=["a"], dtype="float64", bad_rows_policy="error",
    ).to_dict().items() if k not in ("n_empty_rows", "n_incomplete_rows", "n_missing_values")}
    back = ValidationReport.from_dict(old)
    assert (back.n_empty_rows, back.n_incomplete_rows, back.n_missing_values) == (0, 0, 0)


# ---------------------------------------------------------------------------
# empty sources


def test_empty_sources_are_refused(tmp_path):
    cases = {
        "header.csv": "a,b\n",
        "blank.csv": "",
    }
    for name, text in cases.items():
        _write_text(tmp_path / name, text)
        with pytest.raises(IngestError, match=r"nothing to fit or score"):
            ingest(tmp_path / name, tmp_path / "out.zarr")
    np.save(tmp_path / "e.npy", np.empty((0, 3)))
    with pytest.raises(IngestError, match=r"no data rows.*nothing to fit or score"):
        ingest(tmp_path / "e.npy", tmp_path / "out.zarr")
    np.save(tmp_path / "n.npy", np.full((4, 2), np.nan))
    with pytest.raises(IngestError, match=r"all 4 rows were bad and dropped"):
        ingest(tmp_path / "n.npy", tmp_path / "out.zarr", bad_rows="drop")
    assert _leftovers(tmp_path, [*cases, "e.npy", "n.npy"]) == []


# ---------------------------------------------------------------------------
# expected features


@pytest.fixture
def abc_csv(tmp_path):
    return _write_csv(tmp_path / "d.csv", _data(n=10), ["a", "b", "c"])


def test_expected_features_match(abc_csv, tmp_path):
    res = ingest(abc_csv, tmp_path / "out.zarr", expected_features=["a", "b", "c"])
    assert res.report.feature_names == ["a", "b", "c"]


def test_expected_features_missing(abc_csv, tmp_path):
    with pytest.raises(IngestError, match=r"missing \['d'\].*unexpected \['c'\].*"
                                          r"Expected order: \['a', 'b', 'd'\]"):
        ingest(abc_csv, tmp_path / "out.zarr", expected_features=["a", "b", "d"])


def test_expected_features_unexpected(abc_csv, tmp_path):
    with pytest.raises(IngestError, match=r"unexpected \['c'\].*columns=\['a', 'b'\]"):
        ingest(abc_csv, tmp_path / "out.zarr", expected_features=["a", "b"])
    # the suggested fix works
    res = ingest(abc_csv, tmp_path / "out.zarr", expected_features=["a", "b"],
                 columns=["a", "b"])
    assert res.report.feature_names == ["a", "b"]


def test_expected_features_order(abc_csv, tmp_path):
    with pytest.raises(IngestError, match=r"different order.*Expected order: "
                                          r"\['c', 'a', 'b'\].*columns=\['c', 'a', 'b'\]"):
        ingest(abc_csv, tmp_path / "out.zarr", expected_features=["c", "a", "b"])
    assert not (tmp_path / "out.zarr").exists()


def test_npy_feature_count_mismatch(tmp_path):
    np.save(tmp_path / "d.npy", _data(d=3))
    with pytest.raises(IngestError, match=r"Feature count mismatch.*3 selected features, "
                                          r"expected_features lists 4"):
        ingest(tmp_path / "d.npy", tmp_path / "out.zarr",
               expected_features=["a", "b", "c", "d"])
    with pytest.raises(IngestError, match=r"name them with feature_names"):
        ingest(tmp_path / "d.npy", tmp_path / "out.zarr", expected_features=["a", "b", "c"])
    res = ingest(tmp_path / "d.npy", tmp_path / "out.zarr", expected_features=["a", "b", "c"],
                 feature_names=["a", "b", "c"])
    assert res.report.feature_names == ["a", "b", "c"]
    # named by position with the expected names (how scoring stages a .npy partition)
    with pytest.raises(IngestError, match=r"Feature count mismatch: .*d.npy has 3 columns, "
                                          r"expected_features lists 4\. Its columns carry no names"):
        ingest(tmp_path / "d.npy", tmp_path / "out2.zarr", expected_features=list("abcd"),
               feature_names=list("abcd"))
    assert not (tmp_path / "out2.zarr").exists()


# ---------------------------------------------------------------------------
# atomic placement


def test_overwrite_refused_then_replaced_atomically(tmp_path):
    np.save(tmp_path / "one.npy", np.ones((5, 2)))
    np.save(tmp_path / "two.npy", np.full((7, 3), 2.0))
    ingest(tmp_path / "one.npy", tmp_path / "out.zarr")
    with pytest.raises(IngestError, match=r"already exists.*overwrite=True"):
        ingest(tmp_path / "two.npy", tmp_path / "out.zarr")
    assert np.array_equal(_read(tmp_path / "out.zarr")[0], np.ones((5, 2)))
    ingest(tmp_path / "two.npy", tmp_path / "out.zarr", overwrite=True)
    assert np.array_equal(_read(tmp_path / "out.zarr")[0], np.full((7, 3), 2.0))
    assert _leftovers(tmp_path, ["one.npy", "two.npy", "out.zarr"]) == []


def test_dest_that_is_or_holds_the_source_is_refused(tmp_path):
    np.save(tmp_path / "d.npy", np.ones((3, 2)))
    with pytest.raises(IngestError, match=r"is \(or contains\) the source"):
        ingest(tmp_path / "d.npy", tmp_path / "d.npy", overwrite=True)
    with pytest.raises(IngestError, match=r"is \(or contains\) the source"):
        ingest(tmp_path / "d.npy", tmp_path, overwrite=True)
    assert np.array_equal(np.load(tmp_path / "d.npy"), np.ones((3, 2)))


def test_failed_overwrite_keeps_the_old_array(tmp_path):
    np.save(tmp_path / "one.npy", np.ones((5, 2)))
    ingest(tmp_path / "one.npy", tmp_path / "out.zarr")
    bad = _write_text(tmp_path / "bad.csv", "a,b\n1,2\nnan,3\n")
    with pytest.raises(IngestError, match=r"1 of 2 rows"):
        ingest(bad, tmp_path / "out.zarr", overwrite=True)
    assert np.array_equal(_read(tmp_path / "out.zarr")[0], np.ones((5, 2)))
    assert _leftovers(tmp_path, ["one.npy", "bad.csv", "out.zarr"]) == []


def test_bad_row_in_last_batch_leaves_nothing_behind(tmp_path):
    X = _data(n=300, d=2)
    src = _write_csv(tmp_path / "d.csv", X)
    with open(src, "a") as f:
        f.write("1.0,nan\n")
    dest = tmp_path / "nested" / "deeper" / "out.zarr"
    # tiny blocks and chunks: several chunks are written before the bad row shows up
    with pytest.raises(IngestError, match=r"1 of 301 rows.*row indices 300 "):
        ingest(src, dest, block_size=256, chunk_rows=16)
    assert not dest.exists()
    assert _leftovers(tmp_path, ["d.csv"]) == []  # no temp dir, no created parents


def _arrive_while_streaming(monkeypatch, arrive):
    """Run ``arrive()`` after the rows are written, before publication; return the dirs written to."""
    import importlib

    package = importlib.import_module("pipeline.ingest")
    real, seen = package.stream_rows, []

    def stream_then_arrive(reader, plan, path, **kw):
        out = real(reader, plan, path, **kw)
        seen.append(path)
        arrive()
        return out

    monkeypatch.setattr(package, "stream_rows", stream_then_arrive)
    return seen


def test_dest_that_appears_while_ingesting_is_kept(tmp_path, monkeypatch):
    from gmm_engine.atomic import TempName, parse_temp_name

    np.save(tmp_path / "d.npy", np.ones((5, 2)))
    dest = tmp_path / "out.zarr"
    seen = _arrive_while_streaming(monkeypatch, lambda: dest.mkdir())
    with pytest.raises(IngestError, match=r"out.zarr appeared while ingesting; pass overwrite=True "
                                          r"\(`gmm ingest --overwrite`\)"):
        ingest(tmp_path / "d.npy", dest)
    # built under the one temporary-name convention, next to dest, and removed
    (tmp,) = seen
    assert tmp.parent == tmp_path and parse_temp_name(tmp.name) == TempName("out.zarr", "tmp")
    assert dest.is_dir() and os.listdir(dest) == []
    assert _leftovers(tmp_path, ["d.npy", "out.zarr"]) == []


def test_overwrite_rechecks_the_dest_at_the_swap(tmp_path, monkeypatch):
    import shutil

    np.save(tmp_path / "d.npy", np.ones((5, 2)))
    dest = tmp_path / "out.zarr"
    ingest(tmp_path / "d.npy", dest)

    def replaced_by_something_else():
        shutil.rmtree(dest)
        dest.mkdir()
        (dest / "notes.txt").write_text("keep me")

    _arrive_while_streaming(monkeypatch, replaced_by_something_else)
    with pytest.raises(IngestError, match=r"is not a Zarr store, so overwrite=True will not replace it"):
        ingest(tmp_path / "d.npy", dest, overwrite=True)
    assert (dest / "notes.txt").read_text() == "keep me"
    assert _leftovers(tmp_path, ["d.npy", "out.zarr"]) == []


# ---------------------------------------------------------------------------
# streaming: batch boundaries change nothing


def test_multi_batch_csv_and_parquet_identical(tmp_path):
    X = _data(n=500, d=3)
    X[[10, 250, 499], 2] = np.nan
    csv = _write_csv(tmp_path / "d.csv", X, ["a", "b", "c"])
    pq.write_table(_table(X, ["a", "b", "c"]), tmp_path / "d.parquet", row_group_size=64)
    keep = np.isfinite(X).all(axis=1)
    outs = {}
    for tag, src, kw in [
        ("csv1", csv, {}),
        ("csvN", csv, {"block_size": 200, "chunk_rows": 37}),
        ("pq1", tmp_path / "d.parquet", {}),
        ("pqN", tmp_path / "d.parquet", {"batch_rows": 9, "chunk_rows": 37}),
    ]:
        res = ingest(src, tmp_path / f"{tag}.zarr", bad_rows="drop", **kw)
        outs[tag] = (_read(res.path)[0], res.report)
    for tag, (Y, rep) in outs.items():
        assert np.array_equal(Y, X[keep]), tag
        assert rep.bad_row_examples == [10, 250, 499], tag
        assert (rep.n_rows_read, rep.n_rows_written) == (500, 497), tag
    assert zarr.open_array(str(tmp_path / "csvN.zarr")).chunks == (37, 3)


def test_progress_bar_runs(tmp_path, capsys):
    src = _write_csv(tmp_path / "d.csv", _data(n=50))
    ingest(src, tmp_path / "out.zarr", progress=True, block_size=128)
    assert "ingest" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# reports and the engine


def test_read_report_round_trip(tmp_path):
    np.save(tmp_path / "d.npy", _data())
    res = ingest(tmp_path / "d.npy", tmp_path / "out.zarr")
    rep = read_report(res.path)
    assert isinstance(rep, ValidationReport) and rep == res.report
    assert ValidationReport.from_dict(rep.to_dict()) == rep
    plain = zarr.create_array(str(tmp_path / "plain.zarr"), shape=(2, 2), dtype="f8")
    plain[:] = 0.0
    with pytest.raises(IngestError, match=r"no ingest report.*pipeline.ingest"):
        read_report(tmp_path / "plain.zarr")


def test_output_feeds_gmm_engine(tmp_path):
    import gmm_engine

    X = np.vstack([RNG.normal(-5, 1, (60, 2)), RNG.normal(5, 1, (60, 2))])
    src = _write_csv(tmp_path / "d.csv", X, ["height", "weight"])
    res = ingest(src, tmp_path / "out.zarr")
    z = gmm_engine.open_zarr_array(res.path)
    assert z.shape == (120, 2)
    gm = gmm_engine.GaussianMixture(2, random_state=0).fit(res.path)
    assert list(gm.feature_names_in_) == ["height", "weight"]
    assert np.allclose(np.sort(gm.means_[:, 0]), [-5, 5], atol=1)


# ---------------------------------------------------------------------------
# URL sources (fsspec memory://)


@pytest.fixture
def memfs():
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/ingest-{uuid.uuid4().hex}"
    yield fs, root
    fs.rm(root, recursive=True)


def test_url_sources_via_fsspec_memory(tmp_path, memfs):
    fs, root = memfs
    X = _data(n=33, d=3)
    csv = _write_csv(tmp_path / "d.csv", X, ["a", "b", "c"])
    fs.pipe(f"{root}/d.csv", csv.read_bytes())
    fs.pipe(f"{root}/d.csv.gz", gzip.compress(csv.read_bytes()))
    pq.write_table(_table(X, ["a", "b", "c"]), tmp_path / "d.parquet")
    fs.pipe(f"{root}/d.parquet", (tmp_path / "d.parquet").read_bytes())
    np.save(tmp_path / "c.npy", X)
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    fs.pipe(f"{root}/c.npy", (tmp_path / "c.npy").read_bytes())
    fs.pipe(f"{root}/f.npy", (tmp_path / "f.npy").read_bytes())
    z = zarr.create_array(f"memory://{root}/src.zarr", shape=X.shape, chunks=(10, 3),
                          dtype="f8")
    z[:] = X
    z.attrs["feature_names"] = ["a", "b", "c"]
    for name in ["d.csv", "d.csv.gz", "d.parquet", "c.npy", "f.npy", "src.zarr"]:
        url = f"memory://{root}/{name}"
        res = ingest(url, tmp_path / f"{name}.out.zarr", batch_rows=10, block_size=300)
        assert np.array_equal(_read(res.path)[0], X), name
        assert res.report.source == url
        expected_names = ["x0", "x1", "x2"] if name.endswith(".npy") else ["a", "b", "c"]
        assert res.report.feature_names == expected_names, name
    assert detect_format(f"memory://{root}/src.zarr") == "zarr"


def test_overwrite_replaces_only_a_zarr_store(tmp_path):
    np.save(tmp_path / "one.npy", np.ones((5, 2)))
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "important.txt").write_text("keep me")
    with pytest.raises(IngestError, match=r"is not a Zarr store, so overwrite=True will not replace it"):
        ingest(tmp_path / "one.npy", keep, overwrite=True)
    assert (keep / "important.txt").read_text() == "keep me"
    ingest(tmp_path / "one.npy", tmp_path / "out.zarr")
    ingest(tmp_path / "one.npy", tmp_path / "out.zarr", overwrite=True)  # an earlier ingest is replaced
    assert _read(tmp_path / "out.zarr")[0].shape == (5, 2)


# ---------------------------------------------------------------------------
# reading into memory (small partitions about to be scored)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "npy", "zarr"])
@pytest.mark.parametrize("bad_rows", ["drop", "marginalize"])
def test_read_rows_gives_what_ingest_writes(tmp_path, fmt, bad_rows):
    """Same rows, same dtype, same report as an ingest to Zarr; nothing written."""
    X = _data(60, 3)
    X[[3, 17], 1] = np.nan
    if bad_rows == "drop":  # 'marginalize' refuses infinities
        X[25, 0] = np.inf
    src = tmp_path / f"src.{fmt}"
    if fmt == "csv":
        _write_csv(src, X)
    elif fmt == "parquet":
        pq.write_table(_table(X), str(src))
    elif fmt == "npy":
        np.save(src, X)
    else:
        zarr.create_array(str(src), data=X, chunks=(16, 3)).attrs["feature_names"] = ["c0", "c1", "c2"]
    before = sorted(os.listdir(tmp_path))
    rows, report = read_rows(str(src), bad_rows=bad_rows)
    assert sorted(os.listdir(tmp_path)) == before
    res = ingest(str(src), tmp_path / "out.zarr", bad_rows=bad_rows)
    stored, _ = _read(res.path)
    np.testing.assert_array_equal(rows, stored)
    assert rows.dtype == stored.dtype
    assert report == res.report


def test_read_rows_refuses_as_ingest_does(tmp_path):
    src = _write_text(tmp_path / "d.csv", BAD_CSV)
    with pytest.raises(IngestError, match=r"4 of 8 rows.*'abc' at row 6.*bad_rows='drop'"):
        read_rows(str(src))
    src = _write_csv(tmp_path / "e.csv", _data(5, 2), names=["a", "b"])
    with pytest.raises(IngestError, match="feature"):
        read_rows(str(src), expected_features=["b", "a"])
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "e.csv"]


# ---------------------------------------------------------------------------
# Arrow columns read from their buffers


@pytest.mark.parametrize("arrow_type", [pa.int8(), pa.int64(), pa.uint32(), pa.uint64(), pa.float16(),
                                        pa.float32(), pa.float64(), pa.bool_(), pa.decimal128(9, 3), pa.null()],
                         ids=str)
@pytest.mark.parametrize("offset", [0, 5], ids=["whole", "sliced"])
def test_arrow_columns_convert_as_pyarrow_would_with_nulls_as_nan(arrow_type, offset):
    # the columns are read from their buffers (pyarrow's to_numpy imports pandas); sliced arrays
    # (an offset into the buffers, as record batches of a file give) and nulls included
    import decimal

    from pipeline.ingest.convert import arrow_column

    raw = [None, 1, 0, 3, None, 7, 2, None, 1, 5, 0, 4, 6]
    if pa.types.is_null(arrow_type):  # an all-null column, as pyarrow writes a column of None to Parquet
        values = [None] * len(raw)
    elif pa.types.is_boolean(arrow_type):
        values = [None if v is None else bool(v % 2) for v in raw]
    elif pa.types.is_decimal(arrow_type):
        values = [None if v is None else decimal.Decimal(v) / 8 for v in raw]
    elif pa.types.is_floating(arrow_type):
        values = [None if v is None else v / 8 for v in raw]
    else:
        values = raw
    arr = pa.array(values, type=arrow_type).slice(offset)
    expected = np.array([np.nan if v is None else float(v) for v in values[offset:]])
    out = np.full((len(arr), 2), -1.0)
    kind = {"bool": "bool", "null": "null"}.get(str(arrow_type), "decimal" if pa.types.is_decimal(arrow_type) else
                                                 "int" if pa.types.is_integer(arrow_type) else "float")
    assert arrow_column(arr, kind, "c", out, 1, 0, tolerant=False) is None
    np.testing.assert_array_equal(out[:, 1], expected)
    assert (out[:, 0] == -1.0).all()  # only its own column written
