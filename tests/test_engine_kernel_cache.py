"""load_kernels: every kernel signature the estimators call is compiled or loaded by it, none later."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

import gmm_engine
from gmm_engine import COVARIANCE_TYPES, GaussianMixture


def _signatures() -> dict[str, set]:
    """Every numba dispatcher of the engine's modules, with the signatures it has compiled or loaded."""
    out = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("gmm_engine.") and module is not None:
            for attr, value in vars(module).items():
                if isinstance(value, CPUDispatcher):
                    out[f"{name}.{attr}"] = set(value.signatures)
    return out


@pytest.mark.filterwarnings("ignore::gmm_engine.ConvergenceWarning")
def test_no_kernel_compiles_after_load_kernels():
    gmm_engine.load_kernels()
    before = _signatures()
    assert sum(map(len, before.values())) > 0
    rng = np.random.default_rng(7)
    X = np.vstack([rng.normal(size=(150, 3)), rng.normal(size=(150, 3)) + 4])
    X_missing = X.copy()
    X_missing[rng.random(X.shape) < 0.05] = np.nan
    X_missing[np.isnan(X_missing).all(axis=1), 0] = 0.0
    for dtype in (np.float32, np.float64):
        for covariance_type in COVARIANCE_TYPES:
            for missing, data in (("error", X), ("marginalize", X_missing)):
                rows = data.astype(dtype)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    gm = GaussianMixture(3, covariance_type=covariance_type, missing=missing, max_iter=2,
                                         random_state=1).fit(rows)
                gm.score_samples(rows)
                gm.predict_proba(rows)
                gm.predict(rows)
    after = _signatures()
    new = {name: sorted(map(str, after[name] - before.get(name, set())))
           for name in after if after[name] - before.get(name, set())}
    assert not new, f"compiled after load_kernels: {new}"
