"""Zarr input: arrays that are not 2-D and groups are refused in words that say what to pass;
direct reads of local Zarr chunk files equal Zarr's own reads, and damaged chunks are named."""

import os
import re

import numpy as np
import pytest
import zarr

from conftest import sklearn_error, three_clusters, zarr_one_chunk
from gmm_engine import GaussianMixture, zarr_to_dask
from gmm_engine._zarr_io import ZarrChunkError, ZarrRows, zstd_content_size

#: three separated clusters, 300 rows in 3-D
CLUSTERS = three_clusters()


def compressors(codec):
    from zarr.codecs import BloscCodec, ZstdCodec

    return {"none": None, "lz4": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")], "zstd": [ZstdCodec()]}[codec]


def _array(tmp_path, codec, n=1003, D=5, rows=128, dtype="f4", fill=0.0, name="a.zarr"):
    z = zarr.create_array(str(tmp_path / name), shape=(n, D), chunks=(rows, D), dtype=dtype, fill_value=fill,
                          compressors=compressors(codec), overwrite=True)
    X = np.random.default_rng(0).normal(size=(n, D)).astype(dtype)
    z[:] = X
    return z, X


# ---------------------------------------------------------------------------
# Zarr arrays that are not 2-D, and Zarr groups


@pytest.mark.parametrize("shape", [(30,), (10, 3, 2)], ids=["1d", "3d"])
@pytest.mark.parametrize("as_path", [True, False], ids=["path", "array"])
def test_zarr_not_2d_has_sklearn_message(tmp_path, shape, as_path):
    arr = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    path = zarr_one_chunk(tmp_path / "a.zarr", arr)
    Xin = path if as_path else zarr.open_array(path, mode="r")
    first_line = str(sklearn_error({}, arr)).split("\n")[0]
    with pytest.raises(ValueError, match=f"^{re.escape(first_line)}"):
        GaussianMixture().fit(Xin)
    gm = GaussianMixture(random_state=0).fit(CLUSTERS[:, :2] if len(shape) == 3 else CLUSTERS[:, :1])
    with pytest.raises(ValueError, match=f"^{re.escape(first_line)}"):
        gm.predict(Xin)


def test_zarr_group_path_names_its_arrays(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("X", shape=(10, 2), dtype="f8")
    g.create_array("labels", shape=(10,), dtype="i8")
    g.create_group("meta")
    msg = re.escape(f"{tmp_path / 'g.zarr'} is a Zarr group, not an array (its arrays: 'X', 'labels'; its groups: 'meta')")
    with pytest.raises(ValueError, match=msg) as info:
        GaussianMixture().fit(str(tmp_path / "g.zarr"))
    assert f"for example {tmp_path / 'g.zarr'}/X" in str(info.value)
    with pytest.raises(ValueError, match="is a Zarr group, not an array"):
        GaussianMixture().fit(zarr.open_group(str(tmp_path / "g.zarr"), mode="r"))
    gm = GaussianMixture(random_state=0).fit(CLUSTERS[:, :2])
    with pytest.raises(ValueError, match="is a Zarr group, not an array"):
        gm.score_samples(str(tmp_path / "g.zarr"))


def test_empty_zarr_group(tmp_path):
    zarr.open_group(str(tmp_path / "e.zarr"), mode="w")
    with pytest.raises(ValueError, match=r"is a Zarr group, not an array \(it holds no arrays\)"):
        GaussianMixture().fit(str(tmp_path / "e.zarr"))


# ---------------------------------------------------------------------------
# direct reads of local chunk files


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd"])
@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_every_row_range_equals_zarr(tmp_path, codec, dtype):
    z, X = _array(tmp_path, codec, dtype=dtype)
    rows = ZarrRows(z)
    assert rows.direct
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


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd"])
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


def _raw_zstd_frame(data: bytes) -> bytes:
    """One zstd frame holding ``data`` in a raw block, with no content size in its header."""
    header = bytes([0x00, 2 << 3])  # no content size, not single segment; 4 KiB window
    block = (1 | (len(data) << 3)).to_bytes(3, "little")  # last block, raw
    return b"\x28\xb5\x2f\xfd" + header + block + data


def test_zstd_headers_are_read():
    from numcodecs.zstd import Zstd

    for n in (0, 1, 255, 256, 300, 65_791, 70_000, 5_000_000):
        assert zstd_content_size(bytes(Zstd().encode(np.zeros(n, np.uint8)))) == n
    assert zstd_content_size(bytes(Zstd(checksum=True).encode(np.zeros(1000, np.uint8)))) == 1000
    assert zstd_content_size(_raw_zstd_frame(b"x" * 100)) is None
    with pytest.raises(ValueError, match="not a zstd frame"):
        zstd_content_size(b"\x00" * 16)


def test_zstd_chunks_with_checksums_or_without_declared_size_are_read(tmp_path):
    from zarr.codecs import ZstdCodec

    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=(300, 2), chunks=(100, 2), dtype="f8",
                          compressors=[ZstdCodec(level=3, checksum=True)])
    X = np.random.default_rng(2).normal(size=(300, 2))
    z[:] = X
    assert ZarrRows(z).direct
    np.testing.assert_array_equal(ZarrRows(z)[30:270], X[30:270])
    # another writer may leave the size out of the frame header: decoded, then checked
    z2, X2 = _array(tmp_path, "zstd", n=256, D=5, rows=128, name="n.zarr")
    (tmp_path / "n.zarr" / "c" / "1" / "0").write_bytes(_raw_zstd_frame(X2[128:].tobytes()))
    np.testing.assert_array_equal(ZarrRows(z2)[0:256], X2)
    (tmp_path / "n.zarr" / "c" / "1" / "0").write_bytes(_raw_zstd_frame(X2[128:200].tobytes()))
    with pytest.raises(ZarrChunkError, match=r"damaged chunk 'c/1/0'.*decompresses to 1440 bytes.*says 2560"):
        ZarrRows(z2)[0:256]


def test_zstd_chunk_of_the_wrong_size_is_named(tmp_path):
    from numcodecs.zstd import Zstd

    z, X = _array(tmp_path, "zstd", n=256, D=5, rows=128)
    (tmp_path / "a.zarr" / "c" / "0" / "0").write_bytes(bytes(Zstd().encode(X[:100])))
    with pytest.raises(ZarrChunkError, match=r"damaged chunk 'c/0/0'.*zstd header says 2000 bytes.*says 2560"):
        ZarrRows(z)[0:10]
