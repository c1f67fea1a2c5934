"""Scoring partitions with gaps: ``bad_rows: marginalize``.

A partition scored under ``bad_rows='marginalize'`` keeps its rows with NaN
entries (ingest counts them; infinities, non-numeric cells and rows with no
value at all are still refused).  Each row is scored by the marginal
mixture density of the features it has
(``GaussianMixture(missing='marginalize')``, the same one-pass kernels),
its store records how many features it had (``n_observed``), and:

* its anomaly flag compares it with the threshold of its own missing-value
  pattern (:class:`pipeline.threshold.PatternThresholds`: the same
  contamination, on the marginal density), since fewer features give larger
  log-densities;
* the drift tests count the complete rows only: the training reference is
  a distribution of log-densities of every feature;
* its statistics (for model updates) are the missing-data EM statistics of
  all its rows (conditional expectations of the missing features).

Only a :class:`gmm_engine.GaussianMixture` marginalises; a
``BayesianGaussianMixture`` is refused with the fix.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from .registry import LoadedModel
from .threshold import PatternThresholds, missing_patterns

__all__ = ["MARGINALIZE", "MarginalScoring", "marginal_scoring", "check_marginalizes"]

#: the bad-rows policy that scores rows with missing values
MARGINALIZE = "marginalize"


def check_marginalizes(model: LoadedModel) -> None:
    """Refuse ``bad_rows='marginalize'`` for a model that cannot marginalise missing features."""
    if "missing" not in model.model.get_params():
        raise ValueError(
            f"bad_rows='marginalize' needs a GaussianMixture, but model {model.version} is a "
            f"{type(model.model).__name__}, which does not marginalise missing values: set bad_rows to 'error' "
            "or 'drop' in the score config, or score with a GaussianMixture version (`gmm models use`)"
        )


@dataclass(frozen=True, eq=False)
class MarginalScoring:
    """What scoring with missing values needs besides the model: its marginalising copy and the thresholds.

    Attributes
    ----------
    model : gmm_engine.GaussianMixture
        A copy of the registered model with ``missing='marginalize'``.
    thresholds : PatternThresholds
        Per missing-value pattern, computed on first use and kept for the run.
    """

    model: object
    thresholds: PatternThresholds

    def row_thresholds(self, staged, in_memory: bool):
        """The anomaly threshold of every row of the staged Zarr array: (n,) NumPy, or dask when not in memory.

        The lazy form reads the staged rows once more (their patterns first,
        then the lookup runs with the scores).
        """
        if in_memory:
            return self.thresholds.for_rows(np.asarray(staged[...]))
        import dask
        import dask.array as da

        from gmm_engine import zarr_to_dask

        X = zarr_to_dask(staged)
        found = dask.compute(*[dask.delayed(_chunk_masks)(b) for b in X.to_delayed().ravel()])
        masks = np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, X.shape[1]), bool)
        keys = _keys(masks)
        order = np.argsort(keys)  # searchsorted's order: the keys' bytes
        keys, values = keys[order], self.thresholds.for_masks(masks)[order]
        return da.map_blocks(_lookup, X, keys=keys, values=values, drop_axis=1, dtype=np.float64)


def marginal_scoring(model: LoadedModel) -> MarginalScoring:
    """The :class:`MarginalScoring` of a registered model (refused for a model that cannot marginalise)."""
    check_marginalizes(model)
    scorer = copy.copy(model.model).set_params(missing=MARGINALIZE)
    contamination = float(model.metadata["anomaly"]["contamination"])
    return MarginalScoring(scorer, PatternThresholds(model.model, model.threshold, contamination))


def _chunk_masks(block) -> np.ndarray:
    return missing_patterns(np.asarray(block))[0]


def _keys(masks) -> np.ndarray:
    """One comparable key per pattern: the packed missing mask as a fixed-width byte string."""
    packed = np.packbits(np.asarray(masks, dtype=bool), axis=1, bitorder="little")
    return packed.view(np.dtype((np.void, packed.shape[1]))).ravel()


def _lookup(block, *, keys, values):
    masks, inverse = missing_patterns(np.asarray(block))
    at = np.searchsorted(keys, _keys(masks))  # keys are sorted and hold every pattern of the partition
    return values[at][inverse]
