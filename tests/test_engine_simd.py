"""Both vector widths of the kernels give the same fits.

The kernels use 8-lane vectors where the CPU has AVX-512 and 4-lane ones
otherwise (``gmm_engine._simd.W``); a test machine exercises only its own
width unless the other is forced with ``GMM_STREAM_SIMD_LANES``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gmm_engine import COVARIANCE_TYPES, _simd

SCRIPT = r"""
import json, sys
import numpy as np
from gmm_engine import COVARIANCE_TYPES, GaussianMixture, _simd
rng = np.random.default_rng(5)
X = np.vstack([rng.normal(size=(700, 11)) + 3 * k for k in range(3)])
out = {"W": _simd.W}
for ct in COVARIANCE_TYPES:
    gm = GaussianMixture(3, covariance_type=ct, max_iter=15, tol=0, init_params="random_from_data",
                         random_state=0).fit(X)
    out[ct] = {"means": gm.means_.tolist(), "covariances": np.asarray(gm.covariances_).tolist(),
               "lower_bound": gm.lower_bound_, "scores": gm.score_samples(X[:50]).tolist()}
json.dump(out, sys.stdout)
"""


def _fits(lanes=None):
    env = dict(os.environ)
    env.pop("GMM_STREAM_SIMD_LANES", None)
    if lanes is not None:
        env["GMM_STREAM_SIMD_LANES"] = str(lanes)
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.mark.slow
def test_the_other_vector_width_gives_the_same_fit():
    other = 4 if _simd.W == 8 else 8
    native, forced = _fits(), _fits(other)
    assert (native["W"], forced["W"]) == (_simd.W, other)
    for ct in COVARIANCE_TYPES:
        for key in ("means", "covariances", "scores"):
            np.testing.assert_allclose(forced[ct][key], native[ct][key], rtol=1e-11, atol=1e-12, err_msg=f"{ct} {key}")
        assert forced[ct]["lower_bound"] == pytest.approx(native[ct]["lower_bound"], rel=1e-13)


def test_a_bad_forced_width_is_refused():
    env = {**os.environ, "GMM_STREAM_SIMD_LANES": "16"}
    # the package imports its numerical stack on first use (gmm_engine.atomic needs none of it)
    res = subprocess.run([sys.executable, "-c", "from gmm_engine import GaussianMixture"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "GMM_STREAM_SIMD_LANES must be 4 or 8, got '16'" in res.stderr


@pytest.mark.skipif(bool(os.environ.get("GMM_STREAM_SIMD_LANES")), reason="the width is forced in this run")
def test_native_width_matches_the_cpu():
    import llvmlite.binding as llvm

    assert _simd.W == (8 if llvm.get_host_cpu_features().get("avx512f") else 4)
    assert _simd.CACHE
