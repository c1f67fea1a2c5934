"""load_kernels: every kernel signature the estimators and the scoring call is compiled or loaded by it, none later.

Run in a process of its own: in the test session other tests have loaded
signatures already, which would hide one that load_kernels leaves out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHECK = r"""
import json, sys, warnings
import numpy as np
from numba.core.registry import CPUDispatcher

import gmm_engine
from gmm_engine import COVARIANCE_TYPES, BayesianGaussianMixture, GaussianMixture
from gmm_engine.scoring import score_rows


def signatures():
    out = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("gmm_engine.") and module is not None:
            for attr, value in vars(module).items():
                if isinstance(value, CPUDispatcher):
                    out[f"{name}.{attr}"] = {str(s) for s in value.signatures}
    return out


gmm_engine.load_kernels()
before = signatures()
warnings.simplefilter("ignore")
rng = np.random.default_rng(7)
X = np.vstack([rng.normal(size=(150, 3)), rng.normal(size=(150, 3)) + 4])
X_missing = X.copy()
X_missing[rng.random(X.shape) < 0.05] = np.nan
X_missing[np.isnan(X_missing).all(axis=1), 0] = 0.0
for dtype in (np.float32, np.float64):
    for missing, data in (("error", X), ("marginalize", X_missing)):
        rows = data.astype(dtype)
        for covariance_type in COVARIANCE_TYPES:
            for init_params in ("kmeans", "k-means++", "random", "random_from_data"):
                gm = GaussianMixture(3, covariance_type=covariance_type, missing=missing, max_iter=2,
                                     init_params=init_params, random_state=1).fit(rows)
            gm.score_samples(rows)
            gm.predict_proba(rows)
            gm.predict(rows)
            score_rows(gm, rows, with_stats=True, n_observed=missing == "marginalize")
    for covariance_type in COVARIANCE_TYPES:
        bgm = BayesianGaussianMixture(n_components=4, covariance_type=covariance_type, max_iter=2,
                                      random_state=1).fit(X.astype(dtype))
        bgm.score_samples(X.astype(dtype))
        bgm.predict_proba(X.astype(dtype))
after = signatures()
new = {k: sorted(v - before.get(k, set())) for k, v in after.items() if v - before.get(k, set())}
print(json.dumps({"loaded": sum(map(len, before.values())), "new": new}))
"""


def test_no_kernel_compiles_after_load_kernels():
    result = subprocess.run([sys.executable, "-c", _CHECK], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] > 0
    assert not report["new"], f"compiled after load_kernels: {report['new']}"
