"""Saving and loading fitted mixtures: round trips and every way loading must refuse."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

import gmm_engine
from conftest import assert_same_params, quiet, three_clusters
from gmm_engine import COVARIANCE_TYPES, GaussianMixture, ModelFormatError, load_model, read_model_document
from gmm_engine._persist import FORMAT, FORMAT_VERSION, _doc_checksum

#: three separated clusters, 300 rows in 3-D
CLUSTERS = three_clusters()
ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")


def _data(n=240, D=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D))
    X[: n // 3] += 5.0
    X[n // 3 : 2 * n // 3, 0] -= 5.0
    return X


@pytest.fixture(scope="module")
def fitted():
    """One fitted model per covariance type (fitted once for the module)."""
    X = _data()
    return {ct: GaussianMixture(3, covariance_type=ct, random_state=0).fit(X) for ct in COVARIANCE_TYPES}


def _entries(path):
    return sorted(p.name for p in path.iterdir())


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def _no_temp_dirs(parent):
    left = _leftovers(parent)
    assert left == [], f"temporary directories left behind: {left}"


# ---------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_identical(fitted, covariance_type, tmp_path):
    gm = fitted[covariance_type]
    path = gm.save(tmp_path / "model")
    assert path == tmp_path / "model"
    assert _entries(path) == [
        "covariances.npy", "means.npy", "model.json", "online_nk.npy", "online_scatter.npy",
        "online_shift.npy", "online_sums.npy", "precisions_cholesky.npy", "weights.npy",
    ]
    back = GaussianMixture.load(path)
    for attr in ARRAYS:
        a, b = getattr(gm, attr), getattr(back, attr)
        assert b.dtype == np.float64 and b.shape == a.shape
        np.testing.assert_array_equal(b, a, err_msg=attr)
    for attr in ("converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_"):
        assert getattr(back, attr) == getattr(gm, attr), attr
    assert back.get_params() == gm.get_params()
    X = _data(seed=1)
    np.testing.assert_array_equal(back.predict(X), gm.predict(X))
    np.testing.assert_array_equal(back.predict_proba(X), gm.predict_proba(X))
    np.testing.assert_array_equal(back.score_samples(X), gm.score_samples(X))
    assert not hasattr(back, "feature_names_in_")
    _no_temp_dirs(tmp_path)


def test_round_trip_non_finite_lower_bound(tmp_path):
    # max_iter=0 leaves lower_bound_ = -inf, which JSON cannot hold as a number
    gm = GaussianMixture(2, max_iter=0, random_state=0).fit(_data())
    back = GaussianMixture.load(gm.save(tmp_path / "m"))
    assert back.lower_bound_ == -np.inf
    assert back.lower_bounds_ == []
    # the document stays standard JSON
    text = (tmp_path / "m" / "model.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


@pytest.mark.parametrize("init_params", ["random_from_data", "k-means++"])
def test_round_trip_initial_parameters_only(tmp_path, init_params):
    # max_iter=0 from one row per component keeps scikit-learn's nk / n weights
    gm = GaussianMixture(3, init_params=init_params, max_iter=0, random_state=0).fit(_data())
    assert gm.weights_.sum() < 1.0
    back = GaussianMixture.load(gm.save(tmp_path / "m"))
    np.testing.assert_array_equal(back.weights_, gm.weights_)
    np.testing.assert_array_equal(back.predict(_data(seed=2)), gm.predict(_data(seed=2)))


def test_feature_names_preserved(tmp_path):
    X = pd.DataFrame(_data(), columns=["alpha", "beta", "gamma"])
    gm = GaussianMixture(2, random_state=0).fit(X)
    back = GaussianMixture.load(gm.save(tmp_path / "m"))
    assert list(back.feature_names_in_) == ["alpha", "beta", "gamma"]
    assert back.feature_names_in_.dtype == object
    np.testing.assert_array_equal(back.predict(X), gm.predict(X))
    with pytest.raises(ValueError, match="The feature names should match those that were passed during fit"):
        back.predict(X.rename(columns={"beta": "delta"}))


def test_metadata_round_trip_via_load_model(fitted, tmp_path):
    meta = {"threshold": -7.25, "source": "s3://bucket/data.zarr", "tags": ["a", "b"], "nested": {"n": 3}}
    path = fitted["diag"].save(tmp_path / "m", metadata=meta)
    model, got = load_model(path)
    assert isinstance(model, GaussianMixture)
    assert got == meta
    np.testing.assert_array_equal(model.means_, fitted["diag"].means_)
    doc = read_model_document(path)
    assert doc["format"] == FORMAT and doc["format_version"] == FORMAT_VERSION
    assert doc["library_version"] == gmm_engine.__version__
    assert doc["metadata"] == meta


def test_load_accepts_str_path_and_saved_random_state(tmp_path):
    gm = GaussianMixture(2, random_state=7, tol=1e-4, reg_covar=1e-5).fit(_data())
    back = GaussianMixture.load(str(gm.save(str(tmp_path / "m"))))
    assert back.random_state == 7 and back.tol == 1e-4 and back.reg_covar == 1e-5
    # sample depends on random_state: the same draws
    np.testing.assert_array_equal(back.sample(5)[0], gm.sample(5)[0])


@pytest.mark.parametrize("bad", [[1, 2], "text", {"a": object()}])
def test_save_refuses_bad_metadata_and_leaves_nothing(fitted, tmp_path, bad):
    with pytest.raises(TypeError, match="metadata must be a JSON-serialisable dict"):
        fitted["full"].save(tmp_path / "m", metadata=bad)
    assert _entries(tmp_path) == []


# every parameter is stored, or a warning says why not


def test_random_state_instance_warns_and_is_saved_as_none(tmp_path):
    gm = GaussianMixture(2, random_state=np.random.RandomState(0)).fit(CLUSTERS)
    with pytest.warns(UserWarning, match=r"The parameter random_state=RandomState\(MT19937\).* cannot be stored"):
        path = gm.save(tmp_path / "m")
    assert GaussianMixture.load(path).random_state is None


def test_int_random_state_saves_without_warning(tmp_path):
    gm = GaussianMixture(2, random_state=np.int64(3)).fit(CLUSTERS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = gm.save(tmp_path / "m")
    assert GaussianMixture.load(path).random_state == 3


def test_initial_parameters_round_trip(tmp_path):
    K, D = 2, 3
    params = dict(
        weights_init=[0.4, 0.6],
        means_init=np.array([[0.0, 0.0, 0.0], [5.0, 3.0, 0.0]], dtype=np.float32),
        precisions_init=np.stack([np.eye(D)] * K),
    )
    gm = GaussianMixture(K, random_state=0, **params).fit(CLUSTERS)
    path = gm.save(tmp_path / "m")
    for name in params:
        assert (path / f"{name}.npy").is_file()
    back = GaussianMixture.load(path)
    got, want = back.get_params(), gm.get_params()
    assert got.keys() == want.keys()
    for name, value in want.items():
        if name in params:
            np.testing.assert_array_equal(got[name], np.asarray(value), err_msg=name)
            assert got[name].dtype == np.asarray(value).dtype, name
        else:
            assert got[name] == value, name
    # refitting the loaded model starts where the original did
    assert_same_params(GaussianMixture(**got).fit(CLUSTERS), gm, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# overwrite and atomicity


def test_save_refuses_to_overwrite(fitted, tmp_path):
    path = fitted["full"].save(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(FileExistsError, match=re.escape("already exists; pass overwrite=True")):
        fitted["tied"].save(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    fitted["tied"].save(path, overwrite=True)
    back = GaussianMixture.load(path)
    assert back.covariance_type == "tied"
    np.testing.assert_array_equal(back.covariances_, fitted["tied"].covariances_)
    assert _entries(tmp_path) == ["m"]
    _no_temp_dirs(tmp_path)


def test_save_creates_parents(fitted, tmp_path):
    path = fitted["spherical"].save(tmp_path / "a" / "b" / "m")
    assert GaussianMixture.load(path).covariance_type == "spherical"
    _no_temp_dirs(tmp_path / "a" / "b")


def test_failed_save_leaves_no_temp_dir(fitted, tmp_path, monkeypatch):
    import gmm_engine.atomic as atomic

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        fitted["full"].save(tmp_path / "m")
    assert _entries(tmp_path) == []


# save(overwrite=True) replaces only a model directory


@pytest.fixture(scope="module")
def small_model():
    return GaussianMixture(2, random_state=0).fit(CLUSTERS)


def test_overwrite_refuses_a_foreign_directory(small_model, tmp_path):
    target = tmp_path / "results"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    (target / "sub").mkdir()
    with pytest.raises(FileExistsError, match=r"is not a gmm-stream model directory that can be replaced: it has no model\.json") as info:
        small_model.save(target, overwrite=True)
    assert "move or delete it yourself, or save to another path" in str(info.value)
    assert (target / "notes.txt").read_text() == "precious" and (target / "sub").is_dir()
    assert _leftovers(tmp_path) == []


def test_overwrite_refuses_a_regular_file(small_model, tmp_path):
    target = tmp_path / "afile"
    target.write_text("data")
    with pytest.raises(FileExistsError, match="it is a file, not a directory"):
        small_model.save(target, overwrite=True)
    assert target.read_text() == "data"
    assert _leftovers(tmp_path) == []


def test_overwrite_refuses_a_model_directory_holding_other_files(small_model, tmp_path):
    target = small_model.save(tmp_path / "m")
    (target / "report.html").write_text("<html/>")
    with pytest.raises(FileExistsError, match=re.escape("it holds files that are not part of the model (report.html)")):
        small_model.save(target, overwrite=True)
    assert (target / "report.html").is_file()
    GaussianMixture.load(target)


def test_overwrite_refuses_a_corrupt_model_directory(small_model, tmp_path):
    target = small_model.save(tmp_path / "m")
    (target / "model.json").write_text("{")
    with pytest.raises(FileExistsError, match="model.json is not valid JSON"):
        small_model.save(target, overwrite=True)
    assert (target / "model.json").read_text() == "{"


def test_overwrite_replaces_an_empty_directory(small_model, tmp_path):
    (tmp_path / "m").mkdir()
    small_model.save(tmp_path / "m", overwrite=True)
    assert GaussianMixture.load(tmp_path / "m").n_components == 2
    assert _leftovers(tmp_path) == []


def test_overwrite_replaces_a_model_directory(small_model, tmp_path):
    target = GaussianMixture(3, random_state=0).fit(CLUSTERS).save(tmp_path / "m")
    small_model.save(target, overwrite=True)
    assert GaussianMixture.load(target).n_components == 2
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# refusing to load


def _save(fitted, tmp_path, ct="full"):
    return fitted[ct].save(tmp_path / "m")


def _rewrite_array(path, fname, data):
    """Replace an array file and make every checksum consistent again."""
    (path / fname).write_bytes(data)
    doc = json.loads((path / "model.json").read_text())
    for entry in doc["arrays"].values():
        if entry["file"] == fname:
            entry["sha256"] = hashlib.sha256(data).hexdigest()
    doc["checksum"] = _doc_checksum(doc)
    (path / "model.json").write_text(json.dumps(doc))


def _edit_doc(path, edit, fix_checksum=True):
    doc = json.loads((path / "model.json").read_text())
    edit(doc)
    if fix_checksum:
        doc["checksum"] = _doc_checksum(doc)
    (path / "model.json").write_text(json.dumps(doc))


def _npy(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _refuses(path, pattern):
    with pytest.raises(ModelFormatError, match=pattern) as info:
        GaussianMixture.load(path)
    msg = str(info.value)
    assert msg.startswith(f"Cannot load model from {path}:")
    assert "To fix:" in msg
    return msg


def test_missing_directory(tmp_path):
    _refuses(tmp_path / "nope", "the directory does not exist")


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "model.json"
    f.write_text("{}")
    _refuses(f, "it is a file, not a model directory")


def test_foreign_directory_without_model_json(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "weights.npy").write_bytes(_npy(np.ones(2) / 2))
    _refuses(tmp_path / "d", "it has no model.json, so it is not a gmm-stream model directory")


@pytest.mark.parametrize("content", ['{"format": "something-else", "format_version": 1}', "[1, 2]", '"x"'])
def test_foreign_directory_wrong_format(tmp_path, content):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "model.json").write_text(content)
    _refuses(tmp_path / "d", "does not declare format 'gmm-stream.gaussian-mixture'")


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b""])
def test_corrupt_json(fitted, tmp_path, content):
    path = _save(fitted, tmp_path)
    (path / "model.json").write_bytes(content)
    _refuses(path, "model.json is not valid JSON")


def test_model_json_edited_fails_checksum(fitted, tmp_path):
    path = _save(fitted, tmp_path)
    _edit_doc(path, lambda d: d["fitted"].__setitem__("n_iter_", 999), fix_checksum=False)
    _refuses(path, "model.json does not match its checksum: it was edited or corrupted")


def test_tampered_npy_fails_checksum(fitted, tmp_path):
    path = _save(fitted, tmp_path)
    data = bytearray((path / "means.npy").read_bytes())
    data[-3] ^= 0x01  # flip one bit of the last value
    (path / "means.npy").write_bytes(bytes(data))
    _refuses(path, re.escape("means.npy does not match its sha256 in model.json"))


def test_missing_npy(fitted, tmp_path):
    path = _save(fitted, tmp_path)
    (path / "covariances.npy").unlink()
    _refuses(path, "covariances.npy is missing")


def test_object_array_refused_even_with_matching_checksum(fitted, tmp_path):
    path = _save(fitted, tmp_path)
    _rewrite_array(path, "weights.npy", _npy(np.array([0.2, 0.3, 0.5], dtype=object), allow_pickle=True))
    _refuses(path, "weights.npy is not a plain numeric .npy array")


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage, not an npy file", _npy(np.ones(3) / 3)[:-4]],
    ids=["empty", "garbage", "truncated"],
)
def test_unreadable_npy_refused_with_matching_checksum(fitted, tmp_path, data):
    path = _save(fitted, tmp_path)
    _rewrite_array(path, "weights.npy", data)
    _refuses(path, "weights.npy is not a plain numeric .npy array")


@pytest.mark.parametrize(
    "fname, arr, pattern",
    [
        ("weights.npy", np.ones(4) / 4, re.escape("weights.npy has shape (4,), expected (3,)")),
        ("means.npy", np.zeros((3, 2)), re.escape("means.npy has shape (3, 2), expected (3, 3)")),
        ("covariances.npy", np.stack([np.eye(3)] * 2), re.escape("covariances.npy has shape (2, 3, 3), expected (3, 3, 3)")),
        ("weights.npy", (np.ones(3) / 3).astype(np.float32), "weights.npy has dtype float32, expected float64"),
        ("means.npy", np.zeros((3, 3), dtype=np.int64), "means.npy has dtype int64, expected float64"),
        ("weights.npy", np.array([0.5, np.nan, 0.5]), "weights.npy contains NaN or infinity"),
        ("weights.npy", np.array([0.5, 0.4, 0.4]), re.escape("weights_ must be non-negative with a sum in (0, 1] (sum 1.3)")),
        ("weights.npy", np.array([1.2, -0.1, -0.1]), "weights_ must be non-negative"),
    ],
)
def test_wrong_shape_dtype_values_with_recomputed_checksums(fitted, tmp_path, fname, arr, pattern):
    path = _save(fitted, tmp_path)
    _rewrite_array(path, fname, _npy(arr))
    _refuses(path, pattern)


def test_inconsistent_covariances_and_precisions_refused(fitted, tmp_path):
    path = _save(fitted, tmp_path)
    cov = np.load(path / "covariances.npy")
    _rewrite_array(path, "covariances.npy", _npy(cov * 2.0))
    _refuses(path, "covariances_ do not match precisions_cholesky_")


def test_lower_triangular_precision_cholesky_refused(fitted, tmp_path):
    path = _save(fitted, tmp_path)
    pc = np.load(path / "precisions_cholesky.npy")
    _rewrite_array(path, "precisions_cholesky.npy", _npy(np.swapaxes(pc, 1, 2).copy()))
    _refuses(path, "precisions_cholesky_ are not upper triangular")


@pytest.mark.parametrize("version", [2, 0, "1", 1.0, True, None])
def test_unsupported_format_version(fitted, tmp_path, version):
    path = _save(fitted, tmp_path)
    _edit_doc(path, lambda d: d.__setitem__("format_version", version))
    _refuses(path, f"format_version {re.escape(repr(version))} is not supported by this release")


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda d: d["params"].__setitem__("covariance_type", ["full"]), "unknown covariance_type"),
        (lambda d: d["params"].__setitem__("covariance_type", "banana"), "unknown covariance_type 'banana'"),
        (lambda d: d["params"].__setitem__("n_components", "x"), "n_components or n_features_in_ is missing or not an integer"),
        (lambda d: d["fitted"].__setitem__("n_features_in_", 3.7), "n_components or n_features_in_ is missing or not an integer"),
        (lambda d: d["params"].__setitem__("tol", "abc"), "The 'tol' parameter of GaussianMixture must be"),
        (lambda d: d["params"].__setitem__("reg_covar", -1.0), "The 'reg_covar' parameter of GaussianMixture must be"),
        (lambda d: d["fitted"].__setitem__("lower_bounds_", 5), "the fitted section"),
        (lambda d: d["fitted"].pop("converged_"), "the fitted section"),
        (lambda d: d["fitted"].__setitem__("feature_names_in_", ["a"]), "feature_names_in_ must be a list of 3 strings"),
        (lambda d: d.__setitem__("params", []), "model.json lacks the 'params' section"),
        (lambda d: d["arrays"]["weights_"].__setitem__("file", "../weights.npy"), "is not a plain file name"),
        (lambda d: d["arrays"].pop("means_"), "model.json has no entry for means_"),
    ],
)
def test_inconsistent_document_refused(fitted, tmp_path, edit, pattern):
    path = _save(fitted, tmp_path)
    _edit_doc(path, edit)
    _refuses(path, pattern)


def _rewrite(path, fname, data):
    (path / fname).write_bytes(data)


def test_tampered_initial_parameter_refused(tmp_path):
    gm = GaussianMixture(2, random_state=0, means_init=[[0.0, 0.0, 0.0], [5.0, 3.0, 0.0]]).fit(CLUSTERS)
    path = gm.save(tmp_path / "m")
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3)))
    _rewrite(path, "means_init.npy", buf.getvalue())
    with pytest.raises(ModelFormatError, match="means_init.npy does not match its sha256"):
        GaussianMixture.load(path)
    # with a matching checksum, an object array is still refused
    buf = io.BytesIO()
    np.save(buf, np.array(["a", "b"]))
    data = buf.getvalue()
    _rewrite(path, "means_init.npy", data)
    _edit_doc(path, lambda d: d["arrays"]["means_init"].__setitem__("sha256", hashlib.sha256(data).hexdigest()))
    with pytest.raises(ModelFormatError, match="means_init.npy has dtype <U1, expected a numeric dtype"):
        GaussianMixture.load(path)


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("n_iter_", "5", "n_iter_ must be a non-negative integer, got '5'"),
        ("n_iter_", 2.5, "n_iter_ must be a non-negative integer, got 2.5"),
        ("n_iter_", True, "n_iter_ must be a non-negative integer, got True"),
        ("n_iter_", -1, "n_iter_ must be a non-negative integer, got -1"),
        ("converged_", 1, "converged_ must be true or false, got 1"),
        ("converged_", "yes", "converged_ must be true or false, got 'yes'"),
        ("lower_bound_", "abc", "lower_bound_ must be a number, got 'abc'"),
        ("lower_bound_", None, "lower_bound_ must be a number, got None"),
        ("lower_bounds_", [1.0, "x"], "lower_bounds_ must be a list of numbers"),
    ],
)
def test_fitted_section_types_checked(small_model, tmp_path, field, value, pattern):
    path = small_model.save(tmp_path / "m")
    _edit_doc(path, lambda d: d["fitted"].__setitem__(field, value))
    with pytest.raises(ModelFormatError, match=re.escape(pattern)) as info:
        GaussianMixture.load(path)
    assert "the fitted section of model.json is invalid" in str(info.value)


def test_fitted_values_have_their_types_after_load(tmp_path):
    gm = quiet(GaussianMixture(2, random_state=0, max_iter=0).fit, CLUSTERS)  # lower_bound_ = -inf
    back = GaussianMixture.load(gm.save(tmp_path / "m"))
    assert type(back.n_iter_) is int and type(back.converged_) is bool
    assert type(back.lower_bound_) is float and back.lower_bound_ == -np.inf


def test_documents_without_the_new_fields_still_load(small_model, tmp_path):
    path = small_model.save(tmp_path / "m")

    def strip(d):
        for key in ("covariance_type", "n_components"):
            d["fitted"].pop(key)
        for name in ("weights_init", "means_init", "precisions_init"):
            d["params"].pop(name)

    _edit_doc(path, strip)
    back = GaussianMixture.load(path)
    np.testing.assert_array_equal(back.score_samples(CLUSTERS), small_model.score_samples(CLUSTERS))
    assert back.means_init is None


def test_load_model_refuses_too(tmp_path):
    with pytest.raises(ModelFormatError, match="the directory does not exist"):
        load_model(tmp_path / "nope")


def test_model_format_error_is_value_error(tmp_path):
    with pytest.raises(ValueError, match="Cannot load model from"):
        GaussianMixture.load(tmp_path / "nope")


def test_copy_of_model_directory_loads(fitted, tmp_path):
    # nothing in the format depends on the directory name or location
    path = _save(fitted, tmp_path, "diag")
    shutil.copytree(path, tmp_path / "elsewhere" / "copy")
    back = GaussianMixture.load(tmp_path / "elsewhere" / "copy")
    np.testing.assert_array_equal(back.means_, fitted["diag"].means_)


def test_npy_headers_are_parsed_under_the_ast_lock(tmp_path, monkeypatch):
    # CPython 3.11 can fail ("SystemError: AST constructor recursion depth mismatch") when
    # threads build syntax trees at once; numpy parses .npy headers with ast.literal_eval,
    # and scoring tasks load models and .npy partitions from several threads
    import ast

    from gmm_engine import npy as _npy
    from pipeline.ingest import ingest

    held = []
    real = ast.literal_eval

    def spy(node):
        held.append(_npy.AST_LOCK.locked())
        return real(node)

    X = np.random.default_rng(0).normal(size=(300, 4))
    GaussianMixture(3, random_state=0).fit(X).save(tmp_path / "m")
    np.save(tmp_path / "p.npy", X)
    monkeypatch.setattr(ast, "literal_eval", spy)
    GaussianMixture.load(tmp_path / "m")
    ingest(tmp_path / "p.npy", tmp_path / "p.zarr", feature_names=list("abcd"))
    assert len(held) >= 5 and all(held), held
