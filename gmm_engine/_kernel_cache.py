"""Every compiled kernel signature the estimators call, compiled or loaded once.

The kernels are numba functions cached on disk beside their modules
(``__pycache__``): the first call of each signature in a new install
compiles it (~50 s for all of them on these 2-core machines), later
processes load it (~1 s for all).  :func:`load_kernels` makes those
first calls on a tiny mixture, so an install can pay the compilation
(``make install`` does) and a long-lived process (the CLI's warm runner)
the loading, before a person waits on either.
"""

from __future__ import annotations

import warnings

import numpy as np


def load_kernels() -> None:
    """Compile, or load from numba's cache, the kernels the estimators and the scoring call.

    ``GaussianMixture``'s ``fit`` (every ``init_params``), ``score_samples``,
    ``predict_proba`` and :func:`gmm_engine.scoring.score_rows` (with the
    statistics and the observed counts), complete rows and
    ``missing='marginalize'``; ``BayesianGaussianMixture``'s ``fit``,
    ``score_samples`` and ``predict_proba``; every covariance type, float32
    and float64.
    """
    from ._covariance import NAMES
    from .bayesian_mixture import BayesianGaussianMixture
    from .exceptions import ConvergenceWarning
    from .mixture import GaussianMixture
    from .scoring import score_rows

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(40, 2)), rng.normal(size=(40, 2)) + 5])
    X_missing = X.copy()
    X_missing[::7, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 3 iterations: only the calls matter
        for dtype in (np.float64, np.float32):
            for missing, data in (("error", X), ("marginalize", X_missing)):
                rows = data.astype(dtype)
                for covariance_type in NAMES:
                    gm = GaussianMixture(2, covariance_type=covariance_type, max_iter=3, random_state=0,
                                         missing=missing).fit(rows)
                    gm.score_samples(rows)
                    gm.predict_proba(rows)
                    score_rows(gm, rows, with_stats=True, n_observed=missing == "marginalize")
                for init_params in ("k-means++", "random", "random_from_data"):
                    GaussianMixture(2, init_params=init_params, max_iter=1, random_state=0,
                                    missing=missing).fit(rows)
            rows = X.astype(dtype)
            for covariance_type in NAMES:
                bgm = BayesianGaussianMixture(n_components=3, covariance_type=covariance_type, max_iter=3,
                                              random_state=0).fit(rows)
                bgm.score_samples(rows)
                bgm.predict_proba(rows)
