"""Direct reads of local Zarr chunk files equal Zarr's own reads, and damaged chunks are named."""

import os

import numpy as np
import pytest
import zarr

from gmm_engine import GaussianMixture
from gmm_engine._zarr_io import ZarrChunkError, ZarrRows
from gmm_engine.mixture import zarr_to_dask


def compressors(codec):
    from zarr.codecs import BloscCodec, ZstdCodec

    return {"none": None, "lz4": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")], "zstd": [ZstdCodec()]}[codec]


def _array(tmp_path, codec, n=1003, D=5, rows=128, dtype="f4", fill=0.0, name="a.zarr"):
    z = zarr.create_array(str(tmp_path / name), shape=(n, D), chunks=(rows, D), dtype=dtype, fill_value=fill,
                          compressors=compressors(codec), overwrite=True)
    X = np.random.default_rng(0).normal(size=(n, D)).astype(dtype)
    z[:] = X
    return z, X


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd"])
@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_every_row_range_equals_zarr(tmp_path, codec, dtype):
    z, X = _array(tmp_path, codec, dtype=dtype)
    rows = ZarrRows(z)
    assert rows.direct == (codec != "zstd")  # zstd: read by Zarr itself
    for a, b in [(0, 1003), (0, 128), (5, 9), (127, 129), (1000, 1003), (256, 640), (1002, 1003), (7, 7)]:
        np.testing.assert_array_equal(rows[a:b], X[a:b])
        np.testing.assert_array_equal(rows[a:b, :], X[a:b])
    np.testing.assert_array_equal(rows[3:9, 1:3], X[3:9, 1:3])  # not whole rows: Zarr reads it
    np.testing.assert_array_equal(zarr_to_dask(z).compute(), X)


def test_unwritten_chunks_are_the_fill_value(tmp_path):
    z = zarr.create_array(str(tmp_path / "f.zarr"), shape=(300, 2), chunks=(100, 2), dtype="f8", fill_value=-1.5,
                          compressors=None)
    z[:100] = 7.0
    rows = ZarrRows(z)
    assert rows.direct and not os.path.exists(tmp_path / "f.zarr" / "c" / "1" / "0")
    np.testing.assert_array_equal(rows[50:250], z[50:250])


def test_other_layouts_are_read_by_zarr(tmp_path):
    z = zarr.create_array(str(tmp_path / "cols.zarr"), shape=(50, 4), chunks=(10, 2), dtype="f8", compressors=None)
    z[:] = np.arange(200.0).reshape(50, 4)
    assert not ZarrRows(z).direct
    np.testing.assert_array_equal(ZarrRows(z)[10:30], z[10:30])
    s = zarr.create_array(str(tmp_path / "sh.zarr"), shape=(64, 2), chunks=(8, 2), shards=(32, 2), dtype="f8",
                          compressors=None)
    s[:] = np.arange(128.0).reshape(64, 2)
    assert not ZarrRows(s).direct
    np.testing.assert_array_equal(ZarrRows(s)[5:40], s[5:40])


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_a_damaged_chunk_is_named(tmp_path, codec):
    z, _ = _array(tmp_path, codec)
    chunk = tmp_path / "a.zarr" / "c" / "2" / "0"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    with pytest.raises(ZarrChunkError, match=r"a.zarr has a damaged chunk 'c/2/0' \(rows 256..383\).*Re-create"):
        ZarrRows(z)[200:300]
    with pytest.raises(ZarrChunkError, match="damaged chunk 'c/2/0'"):
        GaussianMixture(2, random_state=0).fit(z)


@pytest.mark.filterwarnings("ignore::gmm_engine.ConvergenceWarning")
def test_fit_on_a_direct_read_array_equals_the_in_memory_fit(tmp_path):
    z, X = _array(tmp_path, "lz4", n=3000, D=3, rows=256, dtype="f8")
    a = GaussianMixture(3, random_state=0, max_iter=20, tol=0).fit(z)
    b = GaussianMixture(3, random_state=0, max_iter=20, tol=0).fit(X)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-12)
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-13)
