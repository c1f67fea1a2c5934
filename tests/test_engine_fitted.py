"""The fitted state: checked before the kernels read it, kept as it was fitted.

The kernels do no bounds checks, so fitted attributes replaced after the
fit (truncated, reshaped) are refused with a message naming each
disagreeing attribute, by every method that reads them.  Changing
``covariance_type`` or ``n_components`` with ``set_params`` after a fit
changes what the next fit does, not the fitted model: scoring, sampling,
parameter counts and saving keep the type and count it was fitted with.
"""

from __future__ import annotations

import re

import dask.array as da
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from conftest import quiet, three_clusters
from gmm_engine import GaussianMixture

#: three separated clusters, 300 rows in 3-D
CLUSTERS = three_clusters()



@pytest.fixture(scope="module")
def fitted3():
    return GaussianMixture(3, random_state=0).fit(CLUSTERS)


def _copy(gm):
    out = GaussianMixture(**gm.get_params())
    for k, v in vars(gm).items():
        if k.endswith("_") and not k.startswith("__"):
            setattr(out, k, v.copy() if isinstance(v, np.ndarray) else v)
    out._fitted_covariance_type = gm._fitted_covariance_type
    return out


@pytest.mark.parametrize(
    "attr, cut, pattern",
    [
        ("means_", slice(0, 2), r"means_ has shape \(2, 3\), expected \(3, 3\)"),
        ("weights_", slice(0, 2), r"means_ has shape \(3, 3\), expected \(2, 3\)"),
        ("precisions_cholesky_", slice(0, 1), r"precisions_cholesky_ has shape \(1, 3, 3\), expected \(3, 3, 3\)"),
    ],
)
@pytest.mark.parametrize("method", ["score_samples", "predict", "predict_proba", "score", "bic", "lazy"])
def test_truncated_fitted_attributes_raise(fitted3, attr, cut, pattern, method):
    gm = _copy(fitted3)
    setattr(gm, attr, getattr(gm, attr)[cut])
    with pytest.raises(ValueError, match="The fitted parameters of this GaussianMixture do not agree") as info:
        if method == "lazy":
            gm.predict(da.from_array(CLUSTERS, chunks=(100, 3)))
        else:
            getattr(gm, method)(CLUSTERS)
    assert re.search(pattern, str(info.value))
    assert "refit the model" in str(info.value)


def test_truncated_covariances_refused_by_sample(fitted3):
    gm = _copy(fitted3)
    gm.covariances_ = gm.covariances_[:2]
    gm.score_samples(CLUSTERS)  # scoring does not read covariances_
    with pytest.raises(ValueError, match=r"covariances_ has shape \(2, 3, 3\), expected \(3, 3, 3\)"):
        gm.sample(5)


def test_means_of_wrong_rank_refused(fitted3):
    gm = _copy(fitted3)
    gm.means_ = gm.means_.ravel()
    with pytest.raises(ValueError, match=r"means_ has shape \(9,\), expected \(3, 3\)"):
        gm.score_samples(CLUSTERS)


@pytest.mark.parametrize("fitted_type, new_type", [("full", "diag"), ("tied", "full"), ("diag", "spherical"), ("spherical", "tied")])
def test_changed_covariance_type_keeps_scoring_the_fitted_model(fitted_type, new_type, tmp_path):
    kwargs = dict(n_components=3, covariance_type=fitted_type, init_params="random_from_data", random_state=0)
    gm = quiet(GaussianMixture(**kwargs).fit, CLUSTERS)
    sk = quiet(SkGaussianMixture(**kwargs).fit, CLUSTERS)
    before = {m: getattr(gm, m)(CLUSTERS) for m in ("score_samples", "predict", "predict_proba")}
    bic, n_par, draws = gm.bic(CLUSTERS), gm._n_parameters(), gm.sample(7)
    assert n_par == sk._n_parameters()
    gm.set_params(covariance_type=new_type)
    for m, value in before.items():
        np.testing.assert_array_equal(getattr(gm, m)(CLUSTERS), value, err_msg=m)
    assert gm._n_parameters() == n_par and gm.bic(CLUSTERS) == bic
    np.testing.assert_array_equal(gm.sample(7)[0], draws[0])
    np.testing.assert_allclose(gm.score_samples(CLUSTERS), sk.score_samples(CLUSTERS), rtol=1e-6)
    # saved and loaded, it is still the fitted model, with the parameters as set
    back = GaussianMixture.load(gm.save(tmp_path / "m"))
    assert back.covariance_type == new_type
    np.testing.assert_array_equal(back.score_samples(CLUSTERS), before["score_samples"])
    # and a warm start refuses to continue it with the other type
    with pytest.raises(ValueError, match="warm_start=True continues the previous fit"):
        back.set_params(warm_start=True).fit(CLUSTERS)


def test_changed_n_components_keeps_the_fitted_count(fitted3):
    gm = _copy(fitted3).set_params(n_components=2)
    sk = quiet(SkGaussianMixture(3, random_state=0).fit, CLUSTERS).set_params(n_components=2)
    assert gm.predict_proba(CLUSTERS).shape == sk.predict_proba(CLUSTERS).shape == (300, 3)
    assert gm.predict_proba(da.from_array(CLUSTERS, chunks=(100, 3))).compute().shape == (300, 3)
