"""Stepwise (online) EM: the running statistics of ``partial_fit``, one frozen value.

Cappé & Moulines (2009); shared/EM-NOTES.md, "Stepwise (online) EM".
A batch's statistics ``s_t`` (total weight ``w_t``, under the current
parameters) move the running statistics ``S`` in one of two modes:

* ``'stepwise'`` (``half_life=None``): ``S <- (1 - eta_t) S + eta_t s_t / w_t``
  with ``eta_t = (learning_offset + t) ** -learning_decay``; ``S`` is kept
  per unit weight.
* ``'forgetting'`` (``half_life`` rows): ``S <- lambda S + s_t`` with
  ``lambda = 2 ** (-w_t / half_life)`` (the rows of the batch, counted by
  their weights), so data ``half_life`` rows old weighs half; ``S`` is
  un-normalised, its weight the discounted rows.

Before they are combined, ``S`` is re-expressed around the batch's shift
(the current means) exactly (:meth:`SufficientStatistics.rebased`).  The
M-step of the new ``S`` gives the next parameters.  ``t`` counts the
updates (1 for the first); with no running statistics yet (the first
``partial_fit``, or a model from ``initialize``) ``S`` becomes the batch's.
A fit leaves the statistics of its last pass as ``S`` with ``t = 0``, so
an update weighs the training data in.

Everything here is a value: :class:`OnlineState` is replaced, never
changed, and stored with the model (:func:`to_files`, :func:`from_files`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._stats import SufficientStatistics

STEPWISE = "stepwise"
FORGETTING = "forgetting"
MODES = (STEPWISE, FORGETTING)


@dataclass(frozen=True, eq=False)
class OnlineState:
    """The running state of ``partial_fit``: ``GaussianMixture.online_state_``.

    Attributes
    ----------
    stats : SufficientStatistics
        The running statistics, around the means they were last combined
        at (the parameters before the last M-step): per unit weight in
        'stepwise' mode (``stats.sum_weights == 1``), the discounted totals
        in 'forgetting' mode.
    n_steps : int
        Stepwise updates taken (``partial_fit`` calls and
        ``partial_fit_statistics``); 0 after ``fit``.
    n_rows_seen : int
        Rows behind ``stats``, the fit's included, not discounted.
    sum_weights_seen : float
        Their total weight, not discounted.
    mode : {'stepwise', 'forgetting'}
    """

    stats: SufficientStatistics
    n_steps: int
    n_rows_seen: int
    sum_weights_seen: float
    mode: str

    @classmethod
    def from_fit(cls, stats: SufficientStatistics | None, mode: str) -> "OnlineState | None":
        """The state a fit leaves: the statistics of its last pass (None when it made none)."""
        if stats is None:
            return None
        state = cls(stats, 0, int(stats.n_samples), float(stats.sum_weights), FORGETTING)
        return state.in_mode(mode)

    def in_mode(self, mode: str) -> "OnlineState":
        """The state expressed for ``mode``.

        'stepwise' statistics are per unit weight; 'forgetting' ones weigh
        the rows seen (``sum_weights_seen``) until discounted: switching
        rescales ``stats`` so, and changes nothing else.
        """
        if mode == self.mode:
            return self
        total = self.stats.sum_weights
        target = 1.0 if mode == STEPWISE else self.sum_weights_seen
        return OnlineState(self.stats.scaled(target / total), self.n_steps, self.n_rows_seen,
                           self.sum_weights_seen, mode)


def step_size(t: int, learning_offset: float, learning_decay: float) -> float:
    """``eta_t = (learning_offset + t) ** -learning_decay`` (LatentDirichletAllocation's schedule)."""
    return float((learning_offset + t) ** -learning_decay)


def forgetting_factor(batch_weight: float, half_life: float) -> float:
    """``lambda = 2 ** (-batch_weight / half_life)``: what the running statistics keep of their weight."""
    return float(2.0 ** (-batch_weight / half_life))


def updated(state: OnlineState | None, batch: SufficientStatistics, *, half_life, learning_offset,
            learning_decay) -> OnlineState:
    """The running state after one stepwise update with a batch's statistics.

    Parameters
    ----------
    state : OnlineState or None
        None: no running statistics (the batch's become them).
    batch : SufficientStatistics
        Under the current parameters, around their means.
    half_life : float or None
        None: 'stepwise' mode with ``learning_offset`` and
        ``learning_decay``; a number of rows: 'forgetting' mode.

    Returns
    -------
    OnlineState
        Its ``stats`` around ``batch.shift``.
    """
    if not batch.sum_weights > 0:
        raise ValueError("the batch's statistics have no weight (sum_weights must be > 0)")
    mode = STEPWISE if half_life is None else FORGETTING
    t = (0 if state is None else state.n_steps) + 1
    new = batch.scaled(1.0 / batch.sum_weights) if mode == STEPWISE else batch
    if state is not None:
        old = state.in_mode(mode).stats.rebased(batch.shift)
        if mode == STEPWISE:
            eta = step_size(t, learning_offset, learning_decay)
            new = old.scaled(1.0 - eta).merge(new.scaled(eta))
        else:
            new = old.scaled(forgetting_factor(batch.sum_weights, half_life)).merge(new)
    rows = batch.n_samples + (0 if state is None else state.n_rows_seen)
    weight = batch.sum_weights + (0.0 if state is None else state.sum_weights_seen)
    return OnlineState(new, t, int(rows), float(weight), mode)


def check_statistics(stats, params) -> SufficientStatistics:
    """Refuse statistics that were not computed under ``params`` (a GMMParams) by their shape or shift.

    Statistics under the current parameters are around its means (what
    ``score_rows(..., with_stats=True)`` and the E-step give).
    """
    if not isinstance(stats, SufficientStatistics):
        raise TypeError(
            f"stats must be gmm_engine.SufficientStatistics, got {type(stats).__name__}: pass what "
            "gmm_engine.scoring.score_rows(model, X, with_stats=True) returns (merged)."
        )
    K, D = params.means.shape
    if stats.covariance_type != params.covariance_type or stats.shift.shape != (K, D):
        raise ValueError(
            f"The statistics are for covariance_type={stats.covariance_type!r} with "
            f"{stats.n_components} components and {stats.n_features} features; the model has "
            f"covariance_type={params.covariance_type!r}, {K} components and {D} features."
        )
    if not np.array_equal(stats.shift, params.means):
        raise ValueError(
            "The statistics were not computed under this model's current parameters (their "
            "shift is not its means_): score the rows with this model "
            "(score_rows(model, X, with_stats=True)) and update it with those."
        )
    if not stats.sum_weights > 0:
        raise ValueError("The statistics hold no rows (sum_weights must be > 0).")
    return stats


# ---------------------------------------------------------------------------
# the model directory's 'online' section: JSON scalars and .npy arrays


def to_files(state: OnlineState) -> tuple[dict, dict]:
    """``(section, arrays)``: the JSON section and the arrays (name -> ndarray) of ``state``."""
    arrays, scalars = state.stats.to_arrays()
    section = {
        "mode": state.mode,
        "n_steps": int(state.n_steps),
        "n_rows_seen": int(state.n_rows_seen),
        "sum_weights_seen": float(state.sum_weights_seen),
        "stats": scalars,
    }
    return section, {f"online_{name}": arr for name, arr in arrays.items()}


def array_names() -> tuple:
    """The names of the arrays :func:`to_files` writes (``online_`` and the statistic's)."""
    return tuple(f"online_{name}" for name in ("shift", "nk", "sums", "scatter"))


def from_files(section: dict, read) -> OnlineState:
    """The state back from its section and ``read(name) -> ndarray`` (checksums verified by the reader).

    Raises
    ------
    ValueError
        The section does not describe a state; the message says what.
    """
    if not isinstance(section, dict) or section.get("mode") not in MODES:
        raise ValueError(f"the online section has no valid mode (one of {MODES})")
    ints = [section.get(k) for k in ("n_steps", "n_rows_seen")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
        raise ValueError("n_steps and n_rows_seen of the online section must be non-negative integers")
    seen = section.get("sum_weights_seen")
    if isinstance(seen, bool) or not isinstance(seen, (int, float)) or not math.isfinite(seen):
        raise ValueError("sum_weights_seen of the online section must be a finite number")
    arrays = {name[len("online_"):]: read(name) for name in array_names()}
    stats = SufficientStatistics.from_arrays(arrays, section.get("stats") or {})
    return OnlineState(stats, section["n_steps"], section["n_rows_seen"], float(seen), section["mode"])
