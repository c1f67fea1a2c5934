"""Tests for pipeline.plots: valid, non-blank PNGs, geometry, validation, atomic writes, threads.

The covariance expansion the projection relies on (gmm_engine.full_covariances)
is tested in test_covariance_registry.py.
"""

import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.patches import Ellipse

from gmm_engine import COVARIANCE_TYPES, _covariance, atomic
from pipeline import plots
from pipeline.plots import style

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ONE_PANEL = (550, 880)  # rows, columns: 8 x 5 in at 110 dpi
TWO_PANELS = (770, 880)  # 8 x 7 in at 110 dpi
COV_TYPES = COVARIANCE_TYPES


def assert_png(path, shape):
    path = Path(path)
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = imread(path)
    assert img.shape[:2] == shape
    assert float(img[..., :3].var()) > 0, "image is blank"
    return img


def no_temp_files(directory):
    return [p.name for p in Path(directory).iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


# ---------------------------------------------------------------------------
# fixtures


def selection_table(heldout=True):
    rows = []
    for j, ctype in enumerate(COV_TYPES):
        for k in range(1, 6):
            rows.append(
                {
                    "n_components": k,
                    "covariance_type": ctype,
                    "bic": 1000.0 / k + 12.0 * k + 25.0 * j,
                    "aic": 900.0 / k + 6.0 * k + 10.0 * j,
                    "heldout_loglik": (-7.0 - 1.0 / k - 0.02 * j) if heldout else None,
                }
            )
    return rows


def random_params(covariance_type, K, D, rng):
    """Means and ``covariances_`` of the type: random SPD matrices reduced by the registry."""
    means = rng.normal(scale=4.0, size=(K, D))
    A = rng.normal(size=(K, D, D))
    full = A @ np.swapaxes(A, 1, 2) + 0.5 * np.eye(D)
    return means, _covariance.get(covariance_type).from_full(full)


def mixture_sample(means, rng, n_per=300):
    K, D = means.shape
    X = np.concatenate([m + rng.normal(size=(n_per, D)) for m in means])
    labels = np.repeat(np.arange(K), n_per)
    return X, labels


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------------------
# geometry


def rotated(theta_deg, major_var, minor_var):
    t = math.radians(theta_deg)
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return R @ np.diag([major_var, minor_var]) @ R.T


@pytest.mark.parametrize(
    "theta, expected_angle",
    [(0.0, 0.0), (30.0, 30.0), (90.0, 90.0), (120.0, -60.0), (-45.0, -45.0)],
)
def test_ellipse_geometry_known_rotations(theta, expected_angle):
    cov = rotated(theta, 9.0, 1.0)
    width, height, angle = plots.ellipse_geometry(cov, n_std=1.0)
    assert width == pytest.approx(6.0)
    assert height == pytest.approx(2.0)
    assert angle == pytest.approx(expected_angle, abs=1e-9)
    width2, height2, angle2 = plots.ellipse_geometry(cov, n_std=2.0)
    assert (width2, height2) == pytest.approx((12.0, 4.0))
    assert angle2 == pytest.approx(angle)


def test_ellipse_geometry_matches_eigendecomposition(rng):
    for _ in range(20):
        A = rng.normal(size=(2, 2))
        cov = A @ A.T + 0.01 * np.eye(2)
        n_std = float(rng.uniform(0.5, 3.0))
        width, height, angle = plots.ellipse_geometry(cov, n_std)
        evals, evecs = np.linalg.eigh(cov)
        assert width == pytest.approx(2 * n_std * math.sqrt(evals[1]))
        assert height == pytest.approx(2 * n_std * math.sqrt(evals[0]))
        # the major axis is parallel to the leading eigenvector (sign is irrelevant)
        direction = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
        assert abs(direction @ evecs[:, 1]) == pytest.approx(1.0)
        assert -90.0 < angle <= 90.0
        # and the drawn boundary is the n_std Mahalanobis contour
        t = np.linspace(0, 2 * np.pi, 16)
        a, b = width / 2, height / 2
        pts = np.stack([a * np.cos(t), b * np.sin(t)], axis=1)
        R = np.array([direction, [-direction[1], direction[0]]]).T
        boundary = pts @ R.T
        maha = np.einsum("ni,ij,nj->n", boundary, np.linalg.inv(cov), boundary)
        np.testing.assert_allclose(maha, n_std**2, rtol=1e-9)


def test_ellipse_geometry_degenerate_and_bad_input():
    width, height, angle = plots.ellipse_geometry(np.array([[4.0, 0.0], [0.0, 0.0]]), 1.0)
    assert (width, height, angle) == pytest.approx((4.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        plots.ellipse_geometry(np.array([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        plots.ellipse_geometry(np.eye(3))
    with pytest.raises(ValueError, match="n_std must be > 0"):
        plots.ellipse_geometry(np.eye(2), n_std=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        plots.ellipse_geometry(np.array([[1.0, np.inf], [np.inf, 1.0]]))


def test_projection_axes_by_dimension(rng):
    W, origin, labels = plots.projection_axes(rng.normal(size=(50, 1)))
    np.testing.assert_array_equal(W, [[1.0, 0.0]])
    np.testing.assert_array_equal(origin, [0.0])
    assert "padding" in labels[1]

    X2 = rng.normal(size=(50, 2)) + 10.0
    W, origin, labels = plots.projection_axes(X2)
    np.testing.assert_array_equal(W, np.eye(2))
    np.testing.assert_array_equal(origin, [0.0, 0.0])
    assert labels == ["feature 0", "feature 1"]

    # D = 5: strongly anisotropic data whose top two axes are known
    scales = np.array([10.0, 5.0, 1.0, 0.5, 0.1])
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    X5 = (rng.normal(size=(4000, 5)) * scales) @ Q.T + 3.0
    W, origin, labels = plots.projection_axes(X5)
    np.testing.assert_allclose(W.T @ W, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(origin, X5.mean(axis=0))
    for j in range(2):
        assert abs(W[:, j] @ Q[:, j]) > 0.99
        assert W[np.argmax(np.abs(W[:, j])), j] > 0  # sign convention
    assert labels[0].startswith("PC1 (") and "% of variance" in labels[0]
    with pytest.raises(ValueError, match="at least 2 rows"):
        plots.projection_axes(np.ones((1, 4)))


def test_projection_ellipses_match_eigendecomposition(tmp_path, monkeypatch):
    """With D == 2 the data axes are used, so drawn ellipses are those of the covariances."""
    means = np.array([[0.0, 0.0], [6.0, 2.0]])
    covs = np.array([rotated(35.0, 4.0, 0.25), rotated(-70.0, 1.0, 0.64)])
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.multivariate_normal(m, c, 200) for m, c in zip(means, covs)])

    drawn = []
    real_save = style.save_png

    def capture(fig, path):
        drawn.extend(p for ax in fig.axes for p in ax.patches if isinstance(p, Ellipse))
        return real_save(fig, path)

    monkeypatch.setattr(style, "save_png", capture)
    plots.plot_projection(X, means, covs, "full", tmp_path / "p.png")
    assert len(drawn) == 4  # 1- and 2-sigma per component
    for k in range(2):
        evals, evecs = np.linalg.eigh(covs[k])
        ells = [e for e in drawn if np.allclose(e.center, means[k])]
        assert sorted(e.width for e in ells) == pytest.approx(
            [2 * n * math.sqrt(evals[1]) for n in (1, 2)]
        )
        assert sorted(e.height for e in ells) == pytest.approx(
            [2 * n * math.sqrt(evals[0]) for n in (1, 2)]
        )
        major = evecs[:, 1]
        for e in ells:
            d = np.array([math.cos(math.radians(e.angle)), math.sin(math.radians(e.angle))])
            assert abs(d @ major) == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# the four plots write valid PNGs


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("D", [1, 2, 5])
def test_plot_projection_all_types_and_dims(tmp_path, covariance_type, D):
    rng = np.random.default_rng(D)
    K = 3
    means, cov = random_params(covariance_type, K, D, rng)
    X, labels = mixture_sample(means, rng, n_per=200)
    is_anomaly = np.zeros(len(X), dtype=bool)
    is_anomaly[::50] = True
    out = plots.plot_projection(
        X, means, cov, covariance_type, tmp_path / f"proj_{covariance_type}_{D}.png",
        labels=labels, is_anomaly=is_anomaly, weights=np.full(K, 1 / K),
    )
    assert out == tmp_path / f"proj_{covariance_type}_{D}.png"
    assert_png(out, ONE_PANEL)
    assert no_temp_files(tmp_path) == []


def test_plot_projection_subsample_dask_and_minimal_args(tmp_path, rng):
    da = pytest.importorskip("dask.array")
    means, cov = random_params("diag", 2, 4, rng)
    X, _ = mixture_sample(means, rng, n_per=2000)
    dX = da.from_array(X, chunks=(700, 4))
    out = plots.plot_projection(dX, means, cov, "diag", tmp_path / "dask.png", max_points=500)
    img_dask = assert_png(out, ONE_PANEL)
    out = plots.plot_projection(X, means, cov, "diag", tmp_path / "np.png", max_points=500)
    img_np = assert_png(out, ONE_PANEL)
    # same seed, same rows: the picture must not depend on the container
    np.testing.assert_array_equal(img_dask, img_np)
    other = plots.plot_projection(X, means, cov, "diag", tmp_path / "s1.png", max_points=500,
                                  random_state=1)
    assert not np.array_equal(imread(other), img_np)


def test_plot_projection_non_component_labels(tmp_path, rng):
    means, cov = random_params("spherical", 2, 3, rng)
    X, labels = mixture_sample(means, rng, n_per=100)
    names = np.where(labels == 0, "north", "south")
    assert_png(plots.plot_projection(X, means, cov, "spherical", tmp_path / "l.png", labels=names),
               ONE_PANEL)


@pytest.mark.parametrize("heldout", [True, False])
@pytest.mark.parametrize("criterion", ["bic", "aic"])
def test_plot_selection(tmp_path, heldout, criterion):
    table = selection_table(heldout)
    out = plots.plot_selection(table, tmp_path / "sel.png", criterion=criterion, selected=(3, "tied"))
    assert_png(out, TWO_PANELS if heldout else ONE_PANEL)


def test_plot_selection_default_selection_and_failed_fits(tmp_path):
    table = selection_table()
    table[0]["bic"] = None  # a failed fit
    table[1]["bic"] = float("nan")
    out = plots.plot_selection(table, tmp_path / "sel.png")
    assert_png(out, TWO_PANELS)
    dict_sel = plots.plot_selection(table, tmp_path / "sel2.png", selected=table[5])
    assert_png(dict_sel, TWO_PANELS)


def test_plot_loglik_trace(tmp_path):
    lb = -8.0 + 1.5 * (1.0 - np.exp(-np.arange(12) / 2.0))
    out = plots.plot_loglik_trace(lb, tmp_path / "trace.png", tol=1e-3, title="fit 1")
    img = assert_png(out, TWO_PANELS)
    # with a decrease, an exact zero change and no tol; and a single iteration
    odd = [-9.0, -8.0, -8.0, -8.0000001, -7.9]
    img2 = assert_png(plots.plot_loglik_trace(odd, tmp_path / "odd.png"), TWO_PANELS)
    assert not np.array_equal(img, img2)
    assert_png(plots.plot_loglik_trace([-3.0], tmp_path / "one.png", tol=1e-4), TWO_PANELS)


def test_loglik_trace_ticks_read_as_values_without_an_offset(tmp_path, monkeypatch):
    """A converged fit's bounds differ in the fourth decimal: the ticks show them whole, no '-1.0263e1' offset."""
    labels = []
    real_save = style.save_png

    def capture(fig, path):
        fig.canvas.draw()
        bounds = fig.axes[0]
        labels.append(([t.get_text() for t in bounds.get_yticklabels()],
                       bounds.yaxis.get_major_formatter().get_offset()))
        return real_save(fig, path)

    monkeypatch.setattr(style, "save_png", capture)
    plots.plot_loglik_trace([-10.26414, -10.26348, -10.26328], tmp_path / "t.png", tol=1e-3)
    ticks, offset = labels[0]
    assert offset == ""
    assert all(t.replace("\u2212", "-").startswith("-10.26") for t in ticks if t), ticks


def test_projection_title_says_when_the_rows_are_a_sample_of_more(tmp_path, monkeypatch):
    titles = []
    real_save = style.save_png

    def capture(fig, path):
        titles.append(fig.axes[0].get_title())
        return real_save(fig, path)

    monkeypatch.setattr(style, "save_png", capture)
    args = _proj_args()
    plots.plot_projection(path=tmp_path / "a.png", **args)
    plots.plot_projection(path=tmp_path / "b.png", sample_of=2_000_000, **args)
    plots.plot_projection(path=tmp_path / "c.png", sample_of=2_000_000, max_points=10, **args)
    assert titles[0].endswith("(all 40 rows)")
    assert titles[1].endswith("(random 40 of 2,000,000 rows)")
    assert titles[2].endswith("(random 10 of 2,000,000 rows)")
    with pytest.raises(ValueError, match="sample_of=39 is smaller than the 40 rows of X"):
        plots.plot_projection(path=tmp_path / "d.png", sample_of=39, **args)


def test_plot_score_histogram(tmp_path, rng):
    scores = rng.normal(-7.0, 1.0, 5000)
    truth = np.zeros(5000, dtype=bool)
    truth[:60] = True
    scores[truth] -= 8.0
    thr = float(np.quantile(scores, 0.01))
    plain = assert_png(plots.plot_score_histogram(scores, thr, tmp_path / "h.png"), ONE_PANEL)
    with_truth = assert_png(
        plots.plot_score_histogram(scores, thr, tmp_path / "ht.png", is_anomaly_truth=truth,
                                   bins=40, title="day 3"),
        ONE_PANEL,
    )
    assert not np.array_equal(plain, with_truth)
    # constant scores and a threshold outside the data range still plot
    assert_png(plots.plot_score_histogram(np.full(10, -2.0), -50.0, tmp_path / "c.png"), ONE_PANEL)


def test_score_histogram_legend_counts_rows_at_or_below_threshold(tmp_path, monkeypatch):
    """Same convention as pipeline.threshold: score <= threshold is an anomaly."""
    texts = []
    real_save = style.save_png

    def capture(fig, path):
        texts.extend(t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts())
        return real_save(fig, path)

    monkeypatch.setattr(style, "save_png", capture)
    truth = np.array([True, False, False, False])
    plots.plot_score_histogram([1.0, 2.0, 3.0, 4.0], 2.0, tmp_path / "h.png", is_anomaly_truth=truth)
    assert any("flagged 50.00% (2 of 4 rows)" in t for t in texts), texts
    assert any("recall 100.0%, precision 50.0%" in t for t in texts), texts


# ---------------------------------------------------------------------------
# validation


def _proj_args(**over):
    rng = np.random.default_rng(0)
    means, cov = random_params("full", 2, 3, rng)
    args = dict(X=rng.normal(size=(40, 3)), means=means, covariances=cov, covariance_type="full")
    args.update(over)
    return args


BAD_CALLS = [
    ("selection-empty", lambda p: plots.plot_selection([], p), "table is empty"),
    ("selection-criterion", lambda p: plots.plot_selection(selection_table(), p, criterion="hqic"),
     "criterion must be 'bic' or 'aic'"),
    ("selection-missing-key",
     lambda p: plots.plot_selection([{"n_components": 2, "covariance_type": "full"}], p),
     r"lacks key 'bic'"),
    ("selection-type",
     lambda p: plots.plot_selection([{"n_components": 2, "covariance_type": "xx", "bic": 1.0}], p),
     "Unknown covariance_type 'xx'"),
    ("selection-duplicate",
     lambda p: plots.plot_selection(selection_table() + selection_table()[:1], p),
     "more than one row for n_components=1"),
    ("selection-not-in-table",
     lambda p: plots.plot_selection(selection_table(), p, selected=(9, "full")),
     "is not a row of the table"),
    ("selection-all-nan",
     lambda p: plots.plot_selection([{"n_components": 1, "covariance_type": "full", "bic": None}], p),
     "no row has a finite bic"),
    ("selection-bad-k",
     lambda p: plots.plot_selection([{"n_components": 0, "covariance_type": "full", "bic": 1.0}], p),
     "must be an int >= 1"),
    ("trace-empty", lambda p: plots.plot_loglik_trace([], p), "lower_bounds is empty"),
    ("trace-nan", lambda p: plots.plot_loglik_trace([-1.0, np.nan], p), "non-finite"),
    ("trace-tol-inf", lambda p: plots.plot_loglik_trace([-1.0, -0.5], p, tol=np.inf),
     "tol must be finite"),
    ("trace-tol-neg", lambda p: plots.plot_loglik_trace([-1.0, -0.5], p, tol=-1e-3),
     "tol must be > 0"),
    ("trace-2d", lambda p: plots.plot_loglik_trace(np.ones((2, 2)), p), "must be 1-D"),
    ("hist-empty", lambda p: plots.plot_score_histogram([], 0.0, p), "scores is empty"),
    ("hist-threshold-nan", lambda p: plots.plot_score_histogram([1.0, 2.0], np.nan, p),
     "threshold must be finite"),
    ("hist-scores-inf", lambda p: plots.plot_score_histogram([1.0, -np.inf], 0.0, p), "non-finite"),
    ("hist-truth-length",
     lambda p: plots.plot_score_histogram([1.0, 2.0], 0.0, p, is_anomaly_truth=[True]),
     "is_anomaly_truth has shape"),
    ("hist-truth-values",
     lambda p: plots.plot_score_histogram([1.0, 2.0], 0.0, p, is_anomaly_truth=[0, 2]),
     "must be boolean"),
    ("hist-bins", lambda p: plots.plot_score_histogram([1.0, 2.0], 0.0, p, bins=0),
     "bins must be a positive integer"),
    ("proj-type", lambda p: plots.plot_projection(path=p, **_proj_args(covariance_type="blocky")),
     "Unknown covariance_type 'blocky'"),
    ("proj-features", lambda p: plots.plot_projection(path=p, **_proj_args(X=np.ones((10, 4)))),
     "X has 4 features but means has 3"),
    ("proj-empty", lambda p: plots.plot_projection(path=p, **_proj_args(X=np.ones((0, 3)))),
     "nothing to plot"),
    ("proj-1d-X", lambda p: plots.plot_projection(path=p, **_proj_args(X=np.ones(3))),
     "X must be 2-D"),
    ("proj-cov-shape",
     lambda p: plots.plot_projection(path=p, **_proj_args(covariances=np.ones((2, 3)))),
     r"needs \(2, 3, 3\)"),
    ("proj-labels", lambda p: plots.plot_projection(path=p, labels=np.zeros(5), **_proj_args()),
     "labels has shape"),
    ("proj-anomaly",
     lambda p: plots.plot_projection(path=p, is_anomaly=np.zeros(3, bool), **_proj_args()),
     "is_anomaly has shape"),
    ("proj-weights", lambda p: plots.plot_projection(path=p, weights=[1.0], **_proj_args()),
     "weights has 1 entries"),
    ("proj-nan-X",
     lambda p: plots.plot_projection(path=p, **_proj_args(X=np.full((5, 3), np.nan))),
     "X contains 15 non-finite"),
    ("proj-max-points", lambda p: plots.plot_projection(path=p, max_points=0, **_proj_args()),
     "max_points must be a positive integer"),
    ("path-suffix", lambda p: plots.plot_loglik_trace([-1.0], p.with_suffix(".jpg")),
     r"does not end in '\.png'"),
]


@pytest.mark.parametrize("call, match", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_value_error(tmp_path, call, match):
    target = tmp_path / "out.png"
    with pytest.raises(ValueError, match=match):
        call(target)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


# ---------------------------------------------------------------------------
# atomic writes, file hygiene, threads


def test_directory_as_path_is_rejected(tmp_path):
    folder = tmp_path / "report.png"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        plots.plot_loglik_trace([-1.0], folder)
    assert list(folder.iterdir()) == []


def test_failed_render_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "trace.png"
    plots.plot_loglik_trace([-2.0, -1.0], target)
    before = target.read_bytes()

    def boom(self, *args, **kwargs):
        raise RuntimeError("disk full")

    # the render itself fails (save_png renders with the Agg canvas's PNG writer)
    monkeypatch.setattr(FigureCanvasAgg, "print_png", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.plot_loglik_trace([-3.0, -2.0, -1.0], target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.png"]


def test_overwrite_creates_parents_and_respects_umask(tmp_path):
    target = tmp_path / "report" / "run-1" / "trace.png"
    plots.plot_loglik_trace([-2.0, -1.0], target)
    first = target.read_bytes()
    plots.plot_loglik_trace([-2.0, -1.5, -1.0], str(target))
    assert target.read_bytes() != first
    assert sorted(p.name for p in target.parent.iterdir()) == ["trace.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_write_goes_through_the_atomic_convention(tmp_path, monkeypatch):
    """The PNG is published by gmm_engine.atomic: its temporary name, cleaned up on failure."""
    target = tmp_path / "trace.png"
    renamed = []

    def failing_replace(src, dst):
        renamed.append((Path(src), Path(dst)))
        raise OSError("rename refused")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename refused"):
        plots.plot_loglik_trace([-2.0, -1.0], target)
    [(src, dst)] = renamed
    assert dst == target and src.parent == tmp_path
    assert atomic.parse_temp_name(src.name) == atomic.TempName("trace.png", "tmp")
    assert list(tmp_path.iterdir()) == []


def test_covariance_styles_follow_the_registry():
    assert tuple(style.TYPE_STYLE) == COVARIANCE_TYPES
    assert plots.COVARIANCE_TYPES == COVARIANCE_TYPES
    colours = [c for c, _ in style.TYPE_STYLE.values()]
    markers = [m for _, m in style.TYPE_STYLE.values()]
    assert len(set(colours)) == len(colours) and len(set(markers)) == len(markers)


def _render_all(directory, tag):
    rng = np.random.default_rng(7)
    means, cov = random_params("full", 3, 4, rng)
    X, labels = mixture_sample(means, rng, n_per=150)
    scores = rng.normal(-6.0, 1.0, 2000)
    return [
        lambda: plots.plot_selection(selection_table(), directory / f"sel_{tag}.png", selected=(2, "full")),
        lambda: plots.plot_loglik_trace(-5.0 + np.log1p(np.arange(15.0)) / 10, directory / f"trace_{tag}.png",
                                        tol=1e-3),
        lambda: plots.plot_score_histogram(scores, -8.0, directory / f"hist_{tag}.png"),
        lambda: plots.plot_projection(X, means, cov, "full", directory / f"proj_{tag}.png", labels=labels),
    ]


def test_thread_safe_rendering_matches_serial(tmp_path):
    serial = [job() for job in _render_all(tmp_path, "serial")]
    jobs = _render_all(tmp_path, "t0") + _render_all(tmp_path, "t1")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(job) for job in jobs]
        threaded = [f.result() for f in futures]
    for i, path in enumerate(threaded):
        reference = imread(serial[i % 4])
        np.testing.assert_array_equal(imread(path), reference, err_msg=path.name)
    assert no_temp_files(tmp_path) == []
    assert len(list(tmp_path.iterdir())) == 12


def test_module_never_imports_pyplot(tmp_path):
    code = (
        "import sys; from pipeline import plots; "
        f"plots.plot_loglik_trace([-2.0, -1.0], {str(tmp_path / 't.png')!r}); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_weights_plot_draws_and_refuses_bad_input(tmp_path):
    from pipeline.plots import plot_weights

    out = plot_weights([0.5, 0.3, 0.19, 0.005, 0.005, 0.0], tmp_path / "w.png", floor=0.01)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="non-negative"):
        plot_weights([0.5, -0.1], tmp_path / "x.png", floor=0.01)
    with pytest.raises(ValueError, match=r"floor must be in \[0, 1\)"):
        plot_weights([1.0], tmp_path / "x.png", floor=1.5)
    assert not (tmp_path / "x.png").exists()
