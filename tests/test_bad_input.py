"""Bad input at the product's edges: each refused with a clear error, nothing lost,
other partitions unaffected."""

import ast
import re
from pathlib import Path

import pytest

from conftest import write_zarr
from gmm_engine import GaussianMixture
from pipeline.demo_data import write_partition
from pipeline.manifest import Manifest
from pipeline.registry import ModelRegistry
from pipeline.partitions import discover_partitions
from pipeline.scoring import score_partition
from pipeline.training import register_model

NAMES = ["a", "b", "c"]
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names")


@pytest.fixture(scope="module")
def model(tmp_path_factory, blobs):
    X, _ = blobs
    root = tmp_path_factory.mktemp("m")
    data = write_zarr(root / "train.zarr", X, NAMES)
    gm = GaussianMixture(3, random_state=0).fit(data)
    reg = ModelRegistry(root / "models")
    register_model(gm, data, reg, contamination=0.01)
    return reg.load(), X


def _score_all(ws, model):
    found = discover_partitions(str(ws / "incoming"))
    results = {
        p.id: score_partition(p, model, outputs_dir=ws / "scores", staging_dir=ws / "staging",
                              manifest_path=ws / "manifest.sqlite", run_id="run")
        for p in found.partitions
    }
    return results, found.rejected


@pytest.fixture
def ws(tmp_path, model):
    for d in ("incoming", "scores", "staging"):
        (tmp_path / d).mkdir()
    _, X = model
    write_partition(tmp_path / "incoming", "good-1", X[:300], NAMES, "parquet")
    write_partition(tmp_path / "incoming", "good-2", X[300:600], NAMES, "csv")
    return tmp_path


def _check_others_fine(ws, results, bad):
    for pid in ("good-1", "good-2"):
        assert results[pid].status == "scored", results[pid]
    assert Manifest(ws / "manifest.sqlite").scored_ids() == {"good-1", "good-2"}
    assert not (ws / "scores" / f"{bad}.zarr").exists()
    assert Manifest(ws / "manifest.sqlite").failures(bad)


def test_empty_partition(ws, model):
    (ws / "incoming" / "empty.csv").write_text("a,b,c\n")
    results, _ = _score_all(ws, model[0])
    assert results["empty"].status == "failed" and "no rows" in results["empty"].error.lower()
    _check_others_fine(ws, results, "empty")


def test_corrupt_zarr_chunk_fails_only_that_partition(ws, model):
    _, X = model
    write_partition(ws / "incoming", "broken", X[:4000], NAMES, "zarr")
    chunks = sorted(p for p in (ws / "incoming" / "broken.zarr").rglob("*") if p.is_file() and "c" in p.parts)
    assert chunks, "expected chunk files"
    chunks[0].write_bytes(b"\x00garbage\xff" * 7)
    source_bytes = chunks[0].read_bytes()
    results, _ = _score_all(ws, model[0])
    assert results["broken"].status == "failed"
    assert re.search(r"damaged chunk: rows 0\.\.\d+ cannot be decoded", results["broken"].error)
    _check_others_fine(ws, results, "broken")
    assert chunks[0].read_bytes() == source_bytes  # the source is left as it was


def test_non_numeric_column(ws, model):
    (ws / "incoming" / "text.csv").write_text("a,b,c\n1,2,x\n3,4,y\n")
    results, _ = _score_all(ws, model[0])
    assert results["text"].status == "failed"
    assert "Non-numeric columns in" in results["text"].error and "'c' (text)" in results["text"].error
    _check_others_fine(ws, results, "text")


def test_unsafe_names_are_rejected_not_read(ws, model):
    (ws / "incoming" / "a..b.csv").write_text("a,b,c\n1,2,3\n")
    (ws / "incoming" / "has space.csv").write_text("a,b,c\n1,2,3\n")
    results, rejected = _score_all(ws, model[0])
    names = dict(rejected)
    assert set(results) == {"good-1", "good-2"}
    assert "has space.csv" in names and "a..b.csv" in names
    assert Manifest(ws / "manifest.sqlite").scored_ids() == {"good-1", "good-2"}


# ---------------------------------------------------------------------------
# no pickle in any format we write or read


def _python_files():
    for pkg in ("gmm_engine", "pipeline", "flows"):
        yield from (ROOT / pkg).rglob("*.py")


def test_no_pickle_in_our_formats():
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(m.split(".")[0] in ("pickle", "cloudpickle", "dill", "joblib") for m in mods):
                    offenders.append(f"{path}:{node.lineno} imports pickle")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    offenders.append(f"{path}:{node.lineno} allow_pickle is not False")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" and \
                    getattr(getattr(node.func, "value", None), "id", None) == "np":
                if not any(k.arg == "allow_pickle" for k in node.keywords):
                    offenders.append(f"{path}:{node.lineno} np.load without allow_pickle=False")
    assert not offenders, offenders
