"""The demo's generator: a fresh work directory, raw Parquet training rows, truth beside them."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from pipeline.demo_data import DEMO_MARKER, anomaly_metrics, arrivals_dir, reset_demo_workdir, write_demo_data


def _small(root, **kw):
    opts = dict(n_rows=5_000, n_features=3, n_components=2, covariance_type="full", anomaly_fraction=0.01,
                n_partitions=2, partition_rows=500, seed=3, chunk_rows=2_000)
    return write_demo_data(root, **{**opts, **kw})


def test_training_rows_are_raw_parquet_in_row_groups_with_truth(tmp_path):
    d = _small(tmp_path / "w")
    f = pq.ParquetFile(d.train_path)
    assert f.metadata.num_rows == 5_000 and f.metadata.num_row_groups == 3  # 2,000 rows at a time
    assert f.schema_arrow.names == d.feature_names == ["sensor_00", "sensor_01", "sensor_02"]
    truth = zarr.open_array(d.truth_path, mode="r")[:]
    assert truth.shape == (5_000,) and set(np.unique(truth)) <= {-1, 0, 1}
    assert 0 < d.n_anomalies == int((truth == -1).sum()) < 200
    assert [p[0] for p in d.partitions] == ["part-0001", "part-0002"]


def test_a_rerun_starts_from_an_empty_work_directory_but_keeps_prefect(tmp_path):
    root = tmp_path / "w"
    _small(root)
    (root / "scores").mkdir()
    (root / "scores" / "part-0001.zarr").mkdir()  # a store of the earlier run's model and data
    (root / "prefect").mkdir()
    (root / "prefect" / "prefect.db").write_text("in use")
    d = _small(root, seed=4, n_partitions=1)
    assert not (root / "scores").exists() and (root / "prefect" / "prefect.db").read_text() == "in use"
    # the new run's partition waits to arrive (one scheduled tick at a time); incoming/ starts empty
    assert sorted(p.name for p in arrivals_dir(root).iterdir()) == ["part-0001.parquet"]
    assert list((root / "incoming").iterdir()) == []
    assert (root / DEMO_MARKER).is_file() and d.n_rows == 5_000


def test_a_directory_the_demo_did_not_make_is_refused_and_kept(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "thesis.tex").write_text("years of work")
    (root / "data").mkdir()  # empty workspace folders are fine, files are not
    with pytest.raises(FileExistsError, match=r"not made by `gmm demo` \(it holds thesis.tex\).*new or empty --workdir"):
        reset_demo_workdir(root)
    assert (root / "thesis.tex").read_text() == "years of work"
    empty = tmp_path / "fresh"
    for d in ("data", "incoming", "prefect"):
        (empty / d).mkdir(parents=True)
    assert reset_demo_workdir(empty) == empty and (empty / DEMO_MARKER).is_file()


def test_anomaly_metrics_against_the_injected_truth(tmp_path):
    from pipeline.scores_store import write_scores

    root = tmp_path / "w"
    _small(root, n_partitions=1)
    truth = np.load(root / "data" / "partition_truth" / "part-0001.npy")
    flags = truth.copy()
    flags[np.flatnonzero(~truth)[:3]] = True  # three false alarms
    n = len(truth)
    write_scores(root / "scores" / "part-0001.zarr", log_likelihood=np.zeros(n), component=np.zeros(n, np.int64),
                 responsibility=np.ones(n), is_anomaly=flags, attrs={})
    m = anomaly_metrics(root, ["part-0001"])
    assert m["recall"] == 1.0 and m["precision"] == pytest.approx(truth.sum() / (truth.sum() + 3))
