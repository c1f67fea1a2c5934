"""gmm_engine.atomic: temporary names, atomic files, directory publishing, sweeping leftovers."""

import errno
import json
import os
import time

import pytest

from gmm_engine import atomic
from gmm_engine.atomic import (
    OLD,
    TMP,
    TempName,
    parse_temp_name,
    publish_dir,
    sweep,
    temp_name,
    write_bytes,
    write_json,
    write_text,
)


# ----------------------------------------------------------------------------
# publish_dir


def test_publish_dir_publishes_only_on_success(tmp_path):
    final = tmp_path / "out" / "p1.zarr"
    with publish_dir(final) as tmp:
        assert not final.exists()
        assert tmp.parent == final.parent
        assert tmp.name.startswith(".p1.zarr.tmp-")
        assert parse_temp_name(tmp.name) == TempName("p1.zarr", TMP)
        assert tmp.is_dir() and list(tmp.iterdir()) == []
        (tmp / "data").write_bytes(b"123")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "more").write_bytes(b"4")
        assert not final.exists()
    assert (final / "data").read_bytes() == b"123"
    assert (final / "sub" / "more").read_bytes() == b"4"
    assert sorted(os.listdir(final.parent)) == ["p1.zarr"]


def test_publish_dir_leaves_nothing_on_exception(tmp_path):
    final = tmp_path / "p1.zarr"
    with pytest.raises(RuntimeError, match="boom"):
        with publish_dir(final) as tmp:
            (tmp / "partial").write_bytes(b"half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_publish_dir_cleans_up_on_keyboard_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with publish_dir(tmp_path / "p1.zarr") as tmp:
            (tmp / "partial").write_bytes(b"half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_publish_dir_refuses_existing_final(tmp_path):
    final = tmp_path / "p1.zarr"
    final.mkdir()
    (final / "keep").write_text("old")
    # the caller's hint ends the message (a scores store passes its own)
    hint = "To re-create it, remove it first, or write to a new path"
    with pytest.raises(FileExistsError, match="already exists and is never overwritten.*remove it first"):
        with publish_dir(final, exists_hint=hint):
            pytest.fail("must not start writing")
    assert (final / "keep").read_text() == "old"
    assert os.listdir(tmp_path) == ["p1.zarr"]


def test_publish_dir_default_hint(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FileExistsError, match=r"d already exists and is never overwritten\. Remove it first, "
                       r"or write to a new path") as info:
        with publish_dir(tmp_path / "d"):
            pytest.fail("must not start writing")
    assert info.value.errno == errno.EEXIST and info.value.filename == str(tmp_path / "d")


def test_publish_dir_replaces_only_what_replaceable_allows(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "v").write_text("1")
    seen = []

    def replaceable(path):
        seen.append(path)
        if not (path / "v").is_file():
            raise FileExistsError(f"{path} is not ours to replace")

    with publish_dir(final, replaceable=replaceable) as tmp:
        (tmp / "v").write_text("2")
        assert (final / "v").read_text() == "1"  # the old one stays visible until the swap
    assert (final / "v").read_text() == "2"
    assert seen == [final, final]  # before starting, and again at the moment of the swap
    assert os.listdir(tmp_path) == ["model"]  # the old one was moved aside, then deleted
    (final / "v").unlink()
    with pytest.raises(FileExistsError, match="not ours to replace"):
        with publish_dir(final, replaceable=replaceable):
            pytest.fail("must not start writing")
    assert os.listdir(tmp_path) == ["model"]


def test_publish_dir_refuses_final_created_meanwhile(tmp_path):
    # A concurrent writer publishes first: ours is refused, theirs is intact,
    # and our temporary directory is gone.
    final = tmp_path / "p1.zarr"
    with pytest.raises(FileExistsError, match="already exists"):
        with publish_dir(final) as tmp:
            (tmp / "mine").write_text("mine")
            final.mkdir()
            (final / "theirs").write_text("theirs")
    assert os.listdir(final) == ["theirs"]
    assert os.listdir(tmp_path) == ["p1.zarr"]


def test_publish_dir_refuses_empty_final_created_meanwhile(tmp_path):
    # rename(2) would silently replace an empty directory; we must not.
    final = tmp_path / "p1.zarr"
    with pytest.raises(FileExistsError):
        with publish_dir(final) as tmp:
            (tmp / "mine").write_text("mine")
            final.mkdir()
    assert os.listdir(final) == []
    assert os.listdir(tmp_path) == ["p1.zarr"]


def test_no_replace_rename_closes_the_race_window(tmp_path, monkeypatch):
    # The target appears between the existence check and the rename: only
    # renameat2(RENAME_NOREPLACE) can refuse then.
    if not atomic._get_renameat2():
        pytest.skip("renameat2 is not available here")
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    monkeypatch.setattr(atomic.os.path, "lexists", lambda p: False)
    with pytest.raises(FileExistsError, match="never overwritten"):
        atomic._rename_noreplace(src, dst)
    assert src.exists() and dst.exists()


def test_rename_fallback_without_renameat2_refuses_existing(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_get_renameat2", lambda: False)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    with pytest.raises(FileExistsError, match="never overwritten"):
        atomic._rename_noreplace(src, dst)
    dst.rmdir()
    atomic._rename_noreplace(src, dst)
    assert dst.exists() and not src.exists()


def test_publish_dir_refuses_urls(tmp_path):
    with pytest.raises(ValueError, match="is a URL.*local or network-mounted"):
        with publish_dir("s3://bucket/p1.zarr"):
            pass


# ----------------------------------------------------------------------------
# sweep


def test_sweep_removes_stale_temps(tmp_path):
    keep = tmp_path / "p1.zarr"
    keep.mkdir()
    (tmp_path / "notes.tmp").write_text("not ours")
    (tmp_path / ".p1.zarr.tmp-short").mkdir()  # not our temp pattern
    old_dir = tmp_path / temp_name("p2.zarr")
    old_dir.mkdir()
    (old_dir / "chunk").write_bytes(b"1")
    old_file = tmp_path / temp_name("manifest.json")
    old_file.write_text("{}")
    new_dir = tmp_path / temp_name("p3.zarr")
    new_dir.mkdir()
    past = time.time() - 3600
    for p in (old_dir, old_file):
        os.utime(p, (past, past))

    removed = sweep(tmp_path, older_than_seconds=600)["removed"]
    assert sorted(removed) == sorted([str(old_dir), str(old_file)])
    assert new_dir.exists() and keep.exists()

    removed = sweep(tmp_path)["removed"]
    assert removed == [str(new_dir)]
    assert sorted(os.listdir(tmp_path)) == [".p1.zarr.tmp-short", "notes.tmp", "p1.zarr"]
    assert sweep(tmp_path / "missing")["removed"] == []


def test_sweep_restores_an_old_entry_whose_replacement_never_arrived(tmp_path):
    (tmp_path / "a").mkdir()
    aside = tmp_path / temp_name("a", OLD)
    aside.mkdir()  # the replacement of a arrived: its old copy is only a leftover
    lost = tmp_path / temp_name("b", OLD)
    lost.mkdir()
    (lost / "data").write_text("b's content")  # b was moved aside, its replacement never came
    report = sweep(tmp_path)
    assert report == {"removed": [str(aside)], "restored": [str(tmp_path / "b")], "kept": []}
    assert (tmp_path / "b" / "data").read_text() == "b's content"
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_sweep_keeps_what_the_callback_keeps(tmp_path):
    mine = tmp_path / temp_name("live.zarr")
    mine.mkdir()
    other = tmp_path / temp_name("dead.zarr")
    other.mkdir()
    asked = []

    def keep(path, name):
        asked.append((path, name))
        return name.target == "live.zarr"

    report = sweep(tmp_path, keep=keep)
    assert report == {"removed": [str(other)], "restored": [], "kept": [str(mine)]}
    assert sorted(asked, key=lambda a: a[1].target) == [
        (other, TempName("dead.zarr", TMP)), (mine, TempName("live.zarr", TMP))]
    assert os.listdir(tmp_path) == [mine.name]


def test_temp_names_round_trip(tmp_path):
    for role in (TMP, OLD):
        name = temp_name("p1.zarr", role)
        assert name.startswith(f".p1.zarr.{role}-") and len(name) == len(f".p1.zarr.{role}-") + 32
        assert parse_temp_name(name) == TempName("p1.zarr", role)
    assert temp_name("x") != temp_name("x")
    for ordinary in ("p1.zarr", ".hidden", ".p1.zarr.tmp-short", ".p1.zarr.new-" + "0" * 32, "p1.zarr.tmp-" + "0" * 32):
        assert parse_temp_name(ordinary) is None
    with pytest.raises(ValueError, match="role must be 'tmp' or 'old'"):
        temp_name("x", "bak")


# ----------------------------------------------------------------------------
# write_text / write_json


def test_write_json_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "state.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')  # sorted keys
    write_json(path, {"c": None})
    assert json.loads(path.read_text()) == {"c": None}
    assert os.listdir(path.parent) == ["state.json"]


def test_write_json_failure_keeps_old_content(tmp_path):
    path = tmp_path / "state.json"
    write_json(path, {"ok": True})
    with pytest.raises(ValueError, match="Replace NaN/infinity with None"):
        write_json(path, {"x": float("nan")})
    with pytest.raises(TypeError):
        write_json(path, {"x": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert os.listdir(tmp_path) == ["state.json"]


def test_write_text(tmp_path):
    path = tmp_path / "note.txt"
    write_text(path, "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert os.listdir(tmp_path) == ["note.txt"]


def test_write_bytes_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "blob.npy"
    assert write_bytes(path, b"one") == path
    write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["blob.npy"]
    with pytest.raises(ValueError, match="is a URL"):
        write_bytes("s3://bucket/blob.npy", b"x")
