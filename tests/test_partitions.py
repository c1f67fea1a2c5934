"""Partition ids, discovery of incoming partitions, and safe child paths."""

import os
import re
import uuid

import fsspec
import numpy as np
import pytest

from pipeline.partitions import (
    PARTITION_ID_PATTERN,
    Discovery,
    Partition,
    UnsafePartitionName,
    discover_partitions,
    safe_child,
    validate_partition_id,
)

PATTERN_IN_MESSAGE = re.escape(PARTITION_ID_PATTERN)


# ----------------------------------------------------------------------------
# validate_partition_id


@pytest.mark.parametrize(
    "name",
    ["a", "0", "2026-01-31", "day=2026-01-31", "part_000.v2", "A-b_c.d=e", "x" * 200],
)
def test_valid_ids_are_returned_unchanged(name):
    assert validate_partition_id(name) == name


@pytest.mark.parametrize(
    "name, why",
    [
        ("..", "'..'"),
        ("../x", "path separator|'..'"),
        ("a/../../etc", "path separator|'..'"),
        ("a..b", r"'\.\.'"),
        ("/abs", "absolute path"),
        ("/etc/passwd", "absolute path"),
        ("C:x", "absolute path"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("", "empty"),
        (".hidden", r"starts with '\.'"),
        (".", r"starts with '\.'"),
        ("has space", "whitespace"),
        ("tab\there", "whitespace"),
        ("x" * 201, "201 characters"),
        ("nul\x00byte", "NUL"),
        ("-leading-dash", "start with a letter or digit"),
        ("_underscore", "start with a letter or digit"),
        ("semi;colon", "disallowed character"),
        ("star*", "disallowed character"),
        ("ünïcode", "disallowed character"),
    ],
)
def test_unsafe_ids_are_refused_with_name_reason_and_pattern(name, why):
    with pytest.raises(UnsafePartitionName, match=PATTERN_IN_MESSAGE) as info:
        validate_partition_id(name)
    message = str(info.value)
    assert repr(name) in message
    assert re.search(why, message), message
    assert isinstance(info.value, ValueError)


def test_non_string_id_is_refused():
    with pytest.raises(UnsafePartitionName, match="not a str"):
        validate_partition_id(3)


# ----------------------------------------------------------------------------
# discover_partitions (local)


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def incoming(tmp_path):
    inc = tmp_path / "incoming"
    inc.mkdir()
    _touch(inc / "p1.csv", b"a,b\n1,2\n")
    _touch(inc / "p2.csv.gz", b"gz")
    _touch(inc / "p3.parquet", b"pq")
    _touch(inc / "p4.pq", b"pq")
    np.save(inc / "p5.npy", np.zeros((3, 2)))
    _touch(inc / "p6.zarr" / "zarr.json", b"{}")
    _touch(inc / "UPPER.CSV", b"u")
    # silently ignored
    _touch(inc / ".hidden.csv")
    _touch(inc / "_SUCCESS")
    _touch(inc / "_p7.csv")
    _touch(inc / "p8.csv.tmp")
    _touch(inc / "p9.parquet.partial")
    _touch(inc / "p10.inprogress")
    _touch(inc / "p11.csv.crdownload")
    _touch(inc / ".p12.zarr" / "zarr.json", b"{}")
    # rejected
    _touch(inc / "notes.txt")
    _touch(inc / "noext")
    _touch(inc / "dup.csv")
    _touch(inc / "dup.parquet")
    _touch(inc / "twice.csv")
    _touch(inc / "twice.csv.gz")
    _touch(inc / "Case.csv")
    _touch(inc / "case.npy")
    _touch(inc / "bad name.csv")
    _touch(inc / "fake.zarr", b"not a dir")
    _touch(inc / "dir.csv" / "inner", b"")
    (inc / "plaindir").mkdir()
    return inc


def test_discovery_finds_each_format_and_sorts_by_id(incoming):
    found = discover_partitions(str(incoming))
    assert isinstance(found, Discovery)
    assert found.ids == ["UPPER", "p1", "p2", "p3", "p4", "p5", "p6"]
    by_id = {p.id: p for p in found.partitions}
    assert {k: p.format for k, p in by_id.items()} == {
        "UPPER": "csv",
        "p1": "csv",
        "p2": "csv",
        "p3": "parquet",
        "p4": "parquet",
        "p5": "npy",
        "p6": "zarr",
    }
    p1 = by_id["p1"]
    assert isinstance(p1, Partition)
    assert p1.url == str(incoming / "p1.csv")
    assert os.path.isabs(p1.url)
    assert p1.size_bytes == len(b"a,b\n1,2\n")
    assert p1.modified == pytest.approx(os.stat(incoming / "p1.csv").st_mtime)
    assert by_id["p6"].size_bytes is None
    assert by_id["p6"].url == str(incoming / "p6.zarr")


def test_discovery_rejects_with_reasons_and_ignores_in_progress(incoming):
    found = discover_partitions(incoming)
    rejected = dict(found.rejected)
    assert set(rejected) == {
        "notes.txt",
        "noext",
        "dup.csv",
        "dup.parquet",
        "twice.csv",
        "twice.csv.gz",
        "Case.csv",
        "case.npy",
        "bad name.csv",
        "fake.zarr",
        "dir.csv",
        "plaindir",
    }
    assert "unknown suffix" in rejected["notes.txt"]
    assert "unknown suffix" in rejected["noext"]
    assert "unknown suffix for a directory" in rejected["plaindir"]
    for name in ("dup.csv", "dup.parquet"):
        assert "ambiguous" in rejected[name] and "dup.csv, dup.parquet" in rejected[name]
    assert "ambiguous" in rejected["twice.csv"] and "ambiguous" in rejected["twice.csv.gz"]
    assert "ambiguous" in rejected["Case.csv"] and "ambiguous" in rejected["case.npy"]
    assert "whitespace" in rejected["bad name.csv"]
    assert "must be a directory" in rejected["fake.zarr"]
    assert "must be a file" in rejected["dir.csv"]
    names = {n for n, _ in found.rejected} | {os.path.basename(p.url) for p in found.partitions}
    for ignored in ("_SUCCESS", "_p7.csv", "p8.csv.tmp", "p9.parquet.partial", "p10.inprogress",
                    "p11.csv.crdownload", ".hidden.csv", ".p12.zarr"):
        assert ignored not in names


def test_discovery_of_empty_directory(tmp_path):
    found = discover_partitions(tmp_path)
    assert found.partitions == [] and found.rejected == []


def test_missing_incoming_says_how_to_fix(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="does not exist: create it.*or fix the path"):
        discover_partitions(missing)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        discover_partitions(f)


def test_file_url_is_local(incoming):
    found = discover_partitions("file://" + str(incoming))
    assert found.ids[:2] == ["UPPER", "p1"]
    assert found.partitions[1].url == str(incoming / "p1.csv")


def test_broken_symlink_is_rejected(tmp_path):
    os.symlink(tmp_path / "gone.csv", tmp_path / "link.csv")
    found = discover_partitions(tmp_path)
    assert found.partitions == []
    assert found.rejected == [("link.csv", "it is a broken symbolic link")]


# ----------------------------------------------------------------------------
# discover_partitions (fsspec memory://)


@pytest.fixture
def memory_incoming():
    root = f"/inc-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{root}/m1.csv", b"a\n1\n")
    fs.pipe(f"{root}/m2.parquet", b"pq")
    fs.pipe(f"{root}/m3.zarr/zarr.json", b"{}")
    fs.pipe(f"{root}/.hidden.csv", b"h")
    fs.pipe(f"{root}/m4.csv.tmp", b"t")
    fs.pipe(f"{root}/m5.csv", b"x")
    fs.pipe(f"{root}/m5.npy", b"x")
    fs.pipe(f"{root}/weird.json", b"{}")
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


def test_discovery_over_memory_url(memory_incoming):
    found = discover_partitions(memory_incoming)
    assert found.ids == ["m1", "m2", "m3"]
    by_id = {p.id: p for p in found.partitions}
    assert by_id["m1"].url == f"{memory_incoming}/m1.csv"
    assert by_id["m1"].size_bytes == 4
    assert by_id["m1"].modified is not None
    assert by_id["m3"].format == "zarr" and by_id["m3"].size_bytes is None
    with fsspec.open(by_id["m1"].url, "rb") as fh:  # the URL can be opened as is
        assert fh.read() == b"a\n1\n"
    rejected = dict(found.rejected)
    assert set(rejected) == {"m5.csv", "m5.npy", "weird.json"}
    assert "ambiguous" in rejected["m5.csv"]


def test_missing_memory_url(memory_incoming):
    with pytest.raises(FileNotFoundError, match="memory://does-not-exist.*create it.*or fix the URL"):
        discover_partitions("memory://does-not-exist")


# ----------------------------------------------------------------------------
# safe_child


def test_safe_child_returns_path_inside_base(tmp_path):
    assert safe_child(tmp_path, "p1.zarr") == tmp_path / "p1.zarr"
    assert safe_child(str(tmp_path / "not-yet"), "p1") == tmp_path / "not-yet" / "p1"


@pytest.mark.parametrize("name", ["..", "../x", "/etc", "a/b", "", ".hidden"])
def test_safe_child_refuses_unsafe_names(tmp_path, name):
    with pytest.raises(UnsafePartitionName, match=PATTERN_IN_MESSAGE):
        safe_child(tmp_path, name)


def test_safe_child_refuses_symlink_pointing_outside(tmp_path):
    base = tmp_path / "outputs"
    base.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, base / "p1.zarr")
    with pytest.raises(UnsafePartitionName, match="outside .*symbolic link"):
        safe_child(base, "p1.zarr")
    # A dangling link to outside is refused as well: writing through it would escape.
    os.symlink(tmp_path / "nowhere", base / "p2.zarr")
    with pytest.raises(UnsafePartitionName, match="outside"):
        safe_child(base, "p2.zarr")


def test_safe_child_accepts_symlinked_base(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "alias")
    assert safe_child(tmp_path / "alias", "p1") == tmp_path / "alias" / "p1"
