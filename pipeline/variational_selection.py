"""Model selection by variational Bayes: ``gmm select`` with ``method: variational``.

Instead of a grid of (K, covariance type) compared by a criterion, one
Dirichlet-process mixture (:class:`gmm_engine.BayesianGaussianMixture`)
is fitted with a generous ``n_components``; the prior lets the data switch
unneeded components off (their weights fall to ~``prior / n_rows``), and
the number of components whose weight exceeds a floor is the selection.

The fit is made in two steps, because variational EM does not merge a
true component that a generous start split in two (a local optimum of the
lower bound, scikit-learn's too): on a uniform sample of ``sample_rows``
training rows first (where splitting a component costs more than it
explains), then continued on every training row with ``warm_start=True``
(see :meth:`gmm_engine.BayesianGaussianMixture.effective_n_components`).
The rows are those ``gmm select`` prepares for any method (sample, split,
trim: :func:`pipeline.selection.prepare_selection_data`).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from gmm_engine import EFFECTIVE_WEIGHT_FLOOR, BayesianGaussianMixture, ConvergenceWarning, open_zarr_array

from .data import fit_input

logger = logging.getLogger(__name__)

#: the GaussianMixture parameters of the model config that the variational mixture shares
_SHARED = ("tol", "reg_covar", "n_init", "init_params", "random_state")


@dataclass(frozen=True)
class VariationalSettings:
    """How the variational mixture is fitted and read (``SelectConfig.variational``)."""

    n_components: int = 12
    covariance_type: str = "full"
    weight_floor: float = EFFECTIVE_WEIGHT_FLOOR
    max_iter: int = 500
    sample_rows: int = 20_000
    weight_concentration_prior_type: str = "dirichlet_process"
    weight_concentration_prior: float | None = None


@dataclass(frozen=True)
class VariationalResult:
    """The fitted mixture and what it selects.

    Attributes
    ----------
    model_dir : str
        The saved ``BayesianGaussianMixture``.
    n_components : int
        The effective number of components (weights above the floor).
    weights : list of float
        Every fitted component's weight, largest first.
    """

    model_dir: str
    n_components: int
    covariance_type: str
    fitted_n_components: int
    weight_floor: float
    weights: list
    lower_bound: float
    n_iter: int
    converged: bool
    heldout_loglik: float
    n_rows: int
    sample_rows: int
    seconds: float
    warning: str | None

    def to_dict(self) -> dict:
        return asdict(self)

    def winner(self) -> dict:
        """The selection in the form the grid's winner takes (what the flow registers and reports)."""
        return {"n_components": self.n_components, "covariance_type": self.covariance_type,
                "model_dir": self.model_dir, "method": "variational", "status": "ok",
                "fitted_n_components": self.fitted_n_components, "heldout_loglik": self.heldout_loglik}


def _sample(path: str, rows: int, seed: int):
    """A uniform sample of ``rows`` rows of the Zarr array at ``path`` (in memory, with feature names)."""
    z = open_zarr_array(path)
    idx = np.sort(np.random.default_rng(seed).choice(z.shape[0], size=rows, replace=False))
    values = z.get_orthogonal_selection((idx, slice(None)))
    names = z.attrs.get("feature_names")
    if not names:
        return values
    import pandas as pd

    return pd.DataFrame(values, columns=list(names), copy=False)


def fit_variational(train: str, holdout: str, settings: VariationalSettings, base_params: dict, out_dir, *,
                    local_max_bytes: int = 256 << 20) -> VariationalResult:
    """Fit the Dirichlet-process mixture on the selection rows and read off its effective components.

    Parameters
    ----------
    train, holdout : str
        Zarr arrays of the selection's training and held-out rows.
    base_params : dict
        The model config's parameters; ``tol``, ``reg_covar``, ``n_init``,
        ``init_params`` and ``random_state`` are used.
    out_dir : path
        Receives the saved model.
    local_max_bytes : int
        Training rows up to this size are fitted in memory on local threads,
        larger ones out of core on the current Dask scheduler.

    Returns
    -------
    VariationalResult
    """
    t0 = time.perf_counter()
    params = {k: base_params[k] for k in _SHARED if k in base_params}
    seed = params.get("random_state") or 0
    bgm = BayesianGaussianMixture(
        n_components=settings.n_components, covariance_type=settings.covariance_type, max_iter=settings.max_iter,
        weight_concentration_prior_type=settings.weight_concentration_prior_type,
        weight_concentration_prior=settings.weight_concentration_prior, **params,
    )
    n = int(open_zarr_array(train).shape[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if n > settings.sample_rows:
            bgm.fit(_sample(train, settings.sample_rows, seed))
            bgm.set_params(warm_start=True)
            logger.info("variational mixture fitted on %d sampled rows; continuing on all %d", settings.sample_rows, n)
        bgm.fit(fit_input(train, local_max_bytes))
    bgm.set_params(warm_start=False)
    converged = bool(bgm.converged_) and not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    effective = bgm.effective_n_components(settings.weight_floor)
    model_dir = Path(out_dir) / f"variational-K{settings.n_components}-{settings.covariance_type}"
    bgm.save(model_dir)
    warning = None
    if effective >= settings.n_components:
        warning = (f"every one of the {settings.n_components} components holds more than {settings.weight_floor:g} of "
                   "the weight: the data may need more; raise variational.n_components")
        logger.warning("%s", warning)
    if not converged:
        logger.warning("the variational mixture did not converge in %d iterations: raise variational.max_iter",
                       settings.max_iter)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        held = float(bgm.score(holdout))
    seconds = time.perf_counter() - t0
    logger.info("variational selection: %d of %d components above the floor %g (%.1f s)", effective,
                settings.n_components, settings.weight_floor, seconds)
    return VariationalResult(
        str(model_dir), int(effective), settings.covariance_type, settings.n_components, settings.weight_floor,
        [float(w) for w in np.sort(bgm.weights_)[::-1]], float(bgm.lower_bound_), int(bgm.n_iter_), converged,
        held, n, min(n, settings.sample_rows), round(seconds, 3), warning,
    )


def variational_markdown(result: VariationalResult, trim: dict | None = None) -> str:
    """``model_selection.md`` of a variational selection: the weights table and what was selected."""
    lines = [
        "# Model selection (variational)",
        "",
        f"A Dirichlet-process mixture with {result.fitted_n_components} {result.covariance_type} components, "
        f"fitted on {result.sample_rows:,} sampled rows and continued on all {result.n_rows:,} selection rows, "
        f"uses **{result.n_components}** (weight above {result.weight_floor:g}).",
        "",
        f"- lower bound {result.lower_bound:.6g} after {result.n_iter} iterations"
        f"{'' if result.converged else ' (did not converge: raise variational.max_iter)'}",
        f"- held-out mean log-likelihood {result.heldout_loglik:.6g}",
    ]
    if trim and trim.get("trim_threshold") is not None:
        lines.append(f"- {trim['n_trimmed_train']:,} training rows trimmed as anomalies before the fit")
    if result.warning:
        lines.append(f"- **warning**: {result.warning}")
    lines += ["", "| component | weight | used |", "|---|---|---|"]
    lines += [f"| {i} | {w:.4g} | {'yes' if w > result.weight_floor else 'no'} |"
              for i, w in enumerate(result.weights, start=1)]
    return "\n".join(lines) + "\n"


def variational_summary(result: VariationalResult, prep: dict, seconds: float, registered: dict | None) -> dict:
    """``summary.json`` of a variational ``gmm select`` run."""
    return {
        "method": "variational",
        "selected": {"n_components": result.n_components, "covariance_type": result.covariance_type,
                     "model_dir": result.model_dir},
        "registered": None if registered is None else registered["version"],
        "variational": result.to_dict(),
        "warning": result.warning,
        "seconds": round(float(seconds), 3),
        "sample": {k: prep[k] for k in ("n_train", "n_holdout", "n_trimmed_train", "n_trimmed_holdout",
                                        "trim_threshold")},
    }
