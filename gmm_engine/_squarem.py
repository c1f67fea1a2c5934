"""SQUAREM: EM with fewer passes over the data (Varadhan & Roland, 2008).

With ``F`` one EM pass (parameters to next parameters), a cycle from
``theta0`` is::

    theta1 = F(theta0), theta2 = F(theta1)
    r = theta1 - theta0, v = theta2 - theta1 - r
    alpha = clip(-|r| / |v|, -step_max, -1)
    theta' = theta0 - 2 alpha r + alpha^2 v
    theta3 = F(theta')                      (the stabilising EM step)

in unconstrained coordinates: centred log-weights (renormalised on the
way back), means as they are, and the registry's coordinates of the
covariances (Cholesky factors for full and tied, log-variances for diag
and spherical; ``CovarianceType.to_coordinates``), means and Cholesky
factors in units of the per-feature spread of ``theta2``
(:func:`feature_scale`).  That is a linear change of coordinates, so it
changes only the step length ``alpha`` (a ratio of norms), which then does
not depend on the units of the features (on covertype, whose features
span units from tens to thousands, it cut the EM passes to plain EM's
lower bound from 63 to 38, measured before the step bound below).

The step length is bounded as in Varadhan's reference implementation
(the R package SQUAREM, ``step.max0 = 1``, ``mstep = 4``;
:meth:`SquaremCycle.after_step`): ``step_max`` starts at 1 (the first
cycle is two plain EM steps) and is multiplied by :data:`STEP_GROWTH`
each time a step at the bound is kept; a step refused at the bound
divides it (never below 1) and the cycle ends as plain EM's, which counts
as a step of length 1 (so a refusal at 4 leaves 4).  Unbounded from the first
cycle, the long early steps leapt out of the basin plain EM climbs in:
on river's shuttle data (49,097 x 9, K=7 full, seeds 0-7) they ended at
another optimum than plain EM's in 6 of 8 starts, twice at a lower
log-likelihood, and the median ROC-AUC of the scores as outlier scores
fell from plain EM's 0.907 to 0.781.  Bounded, SQUAREM ends at plain EM's
optimum from all 8 starts (lower bounds within 0.004, the same ROC-AUC
to 0.002), and still reaches plain EM's bound on covertype in under half
its passes.

Each pass's log-likelihood is that of the parameters it ran with, so the
safeguard costs no pass: ``theta3`` is accepted when ``loglik(theta')`` did not fall
below ``loglik(theta1)`` (then ``loglik(theta3) >= loglik(theta')`` by EM's
monotonicity); otherwise the cycle continues from ``theta2``, which EM
already guarantees.  An extrapolation that is not a valid mixture (a
covariance not positive definite, non-finite values) is not evaluated:
the cycle continues from ``theta2`` at no cost, as it does when
``alpha = -1`` (then ``theta'`` is ``theta2``: plain EM).

Counting and convergence, one :class:`~gmm_engine.EMState` per pass:

* ``n_iter`` counts passes (EM maps), so ``max_iter`` bounds the reads of
  the data whatever the acceleration does.
* ``params`` is always an EM step's result (``theta1``, ``theta2`` or
  ``theta3``, never an untested extrapolation), and ``lower_bound`` the
  mean log-likelihood of the parameters that step started from: the
  state is a valid plain-EM state to stop at, save or continue with plain
  EM.  A rejected extrapolation repeats the previous lower bound, so
  ``lower_bounds`` is non-decreasing wherever EM itself is.
* Convergence is plain EM's rule, ``|change| < tol``, tested on the EM
  steps of the path (the passes at ``theta0`` and ``theta1``), never on an
  extrapolation.
* The state's ``acceleration`` (a :class:`SquaremCycle`) holds what the
  rest of the cycle needs; checkpoints store it
  (:mod:`gmm_engine.checkpoint`), so resuming mid-cycle equals an
  uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from . import _covariance
from ._chunked import ChunkedData
from ._em import EMState
from ._params import GMMParams, m_step
from ._stats import estep_chunk
from .exceptions import ComponentCollapseError

logger = logging.getLogger("gmm_engine")


#: which pass of a cycle comes next
EVALUATE_THETA0, EVALUATE_THETA1, EVALUATE_TRIAL = 0, 1, 2

#: the bound on ``|alpha|`` at the start (R's ``step.max0``)
STEP_MAX0 = 1.0
#: the bound's factor up after a step kept at it, and down after one refused there (R's ``mstep``)
STEP_GROWTH = 4.0


@dataclass(frozen=True, eq=False)
class SquaremCycle:
    """Where a SQUAREM cycle stands between two passes.

    Attributes
    ----------
    phase : {0, 1, 2}
        The next pass evaluates ``theta0`` (the state's ``params``), ``theta1``
        (the state's ``params``, with ``theta0`` kept here) or the
        extrapolation ``trial`` (the state's ``params`` being ``theta2``,
        the fallback).
    theta0 : GMMParams or None
        Phase 1 only.
    trial : GMMParams or None
        Phase 2 only: ``theta'``, a valid mixture not yet evaluated.
    alpha : float
        The step length of ``trial`` (phase 2), else NaN.
    n_accepted, n_rejected, n_skipped : int
        Extrapolations accepted, rejected (log-likelihood fell, or the EM
        step from it collapsed a component), and not tried (``alpha = -1``
        or not a valid mixture), over the run so far.
    step_max : float
        The bound on ``|alpha|`` for the next extrapolation (>= 1).
    """

    phase: int = EVALUATE_THETA0
    theta0: GMMParams | None = None
    trial: GMMParams | None = None
    alpha: float = math.nan
    n_accepted: int = 0
    n_rejected: int = 0
    n_skipped: int = 0
    step_max: float = STEP_MAX0

    def after_step(self, alpha: float, kept: bool) -> float:
        """The bound after a cycle whose step of length ``alpha`` was kept or refused (not evaluated: refused).

        R's ``squarem1``: a refusal at the bound divides the bound (never
        below ``step.max0``) and the cycle's step becomes plain EM's
        (``alpha = 1``); then a step at the bound multiplies it.
        """
        bound = self.step_max
        if not kept:
            if alpha == -bound:
                bound = max(STEP_MAX0, bound / STEP_GROWTH)
            alpha = -1.0
        return bound * STEP_GROWTH if alpha == -bound else bound

    def parts(self) -> dict:
        """The parameter sets the cycle holds, by role: what a checkpoint stores beside the model."""
        return {role: p for role, p in (("theta0", self.theta0), ("trial", self.trial)) if p is not None}

    def to_document(self) -> dict:
        """JSON-ready scalars; the parameter sets (:meth:`parts`) are stored beside them."""
        return {
            "method": "squarem",
            "phase": self.phase,
            "alpha": self.alpha if math.isfinite(self.alpha) else None,
            "n_accepted": self.n_accepted,
            "n_rejected": self.n_rejected,
            "n_skipped": self.n_skipped,
            "step_max": self.step_max,
            "parts": sorted(self.parts()),
        }

    @classmethod
    def from_document(cls, doc: dict, parts: dict) -> "SquaremCycle":
        """The inverse of :meth:`to_document`; raises ValueError naming what is wrong."""
        if not isinstance(doc, dict) or doc.get("method") != "squarem":
            raise ValueError(f"not a SQUAREM cycle: {doc!r}")
        counts = [doc.get(k) for k in ("phase", "n_accepted", "n_rejected", "n_skipped")]
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise ValueError(f"the phase and counts must be non-negative integers: {doc!r}")
        phase = counts[0]
        needed = {EVALUATE_THETA0: set(), EVALUATE_THETA1: {"theta0"}, EVALUATE_TRIAL: {"trial"}}.get(phase)
        if needed is None or set(parts) != needed or set(doc.get("parts") or ()) != needed:
            raise ValueError(f"phase {phase!r} with parameter sets {sorted(parts)}: not a cycle state")
        alpha = doc.get("alpha")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))):
            raise ValueError(f"alpha must be a number or null, got {alpha!r}")
        # checkpoints written before the bound existed resume with it at its start
        step_max = doc.get("step_max", STEP_MAX0)
        if isinstance(step_max, bool) or not isinstance(step_max, (int, float)) or not step_max >= STEP_MAX0 \
                or not math.isfinite(step_max):
            raise ValueError(f"step_max must be a finite number >= {STEP_MAX0}, got {step_max!r}")
        return cls(
            phase, parts.get("theta0"), parts.get("trial"),
            math.nan if alpha is None else float(alpha), *counts[1:], step_max=float(step_max),
        )


# ---------------------------------------------------------------------------
# unconstrained coordinates


def feature_scale(params: GMMParams) -> np.ndarray:
    """Per-feature standard deviation of the mixture ``params`` (D,): the unit of its coordinates.

    Measuring means and covariance factors in these units makes the step
    length (a ratio of norms) independent of the units of the features,
    as EM itself is.
    """
    K, D = params.means.shape
    cov = _covariance.get(params.covariance_type)
    variances = np.diagonal(cov.to_full(params.covariances, K, D), axis1=1, axis2=2)
    w = params.weights / params.weights.sum()
    centre = w @ params.means
    total = w @ (variances + (params.means - centre) ** 2)
    return np.sqrt(np.maximum(total, np.finfo(np.float64).tiny))


def to_vector(params: GMMParams, scale: np.ndarray) -> np.ndarray:
    """Centred log-weights, means and covariance coordinates in units of ``scale``: one flat vector."""
    logw = np.log(params.weights)
    cov = _covariance.get(params.covariance_type)
    return np.concatenate([
        logw - logw.mean(), (params.means / scale).ravel(), cov.to_coordinates(params.covariances, scale),
    ])


def from_vector(z: np.ndarray, covariance_type: str, K: int, D: int, scale: np.ndarray) -> GMMParams | None:
    """The mixture at coordinates ``z`` (:func:`to_vector`), or None when it is not a valid one."""
    if not np.all(np.isfinite(z)):
        return None
    cov = _covariance.get(covariance_type)
    logw = z[:K]
    weights = np.exp(logw - logw.max())
    weights /= weights.sum()
    covariances = cov.from_coordinates(z[K + K * D:], K, D, scale)
    if covariances is None or not np.all(weights > 0.0):
        return None
    try:
        prec_chol = cov.precision_cholesky(covariances)
    except ComponentCollapseError:
        return None
    means = z[K : K + K * D].reshape(K, D) * scale
    return GMMParams(covariance_type, weights, means, covariances, prec_chol)


def extrapolate(theta0: GMMParams, theta1: GMMParams, theta2: GMMParams, step_max: float = math.inf):
    """``(theta', alpha)`` of the cycle, ``|alpha| <= step_max``.

    ``theta'`` is None for ``alpha = -1`` (plain EM's step) or an invalid mixture.
    """
    scale = feature_scale(theta2)
    z0, z1, z2 = (to_vector(p, scale) for p in (theta0, theta1, theta2))
    r = z1 - z0
    v = z2 - z1 - r
    nr, nv = float(np.linalg.norm(r)), float(np.linalg.norm(v))
    if not (math.isfinite(nr) and math.isfinite(nv) and nv > 0.0):
        return None, -1.0
    alpha = max(min(-nr / nv, -1.0), -step_max)
    if alpha == -1.0:  # theta' = theta2: nothing to gain over plain EM
        return None, alpha
    K, D = theta2.means.shape
    return from_vector(z0 - 2.0 * alpha * r + alpha * alpha * v, theta2.covariance_type, K, D, scale), alpha


# ---------------------------------------------------------------------------
# the driver


def _em_pass(data: ChunkedData, params: GMMParams, reg_covar: float):
    """(mean log-likelihood of ``params``, ``F(params)``, the pass's statistics): one pass over the data."""
    stats = data.map_reduce(estep_chunk, params.kernel_params(missing=data.missing))
    return stats.loglik / stats.sum_weights, m_step(stats, reg_covar), stats


def run_squarem(
    data: ChunkedData,
    start: EMState,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    on_iteration=None,
) -> EMState:
    """SQUAREM-accelerated EM from ``start``: :func:`~gmm_engine._em.run_em`'s contract, per pass.

    Parameters
    ----------
    data : ChunkedData
    start : EMState
        An initial state, or a checkpointed one; a state without a
        :class:`SquaremCycle` (a start, a plain-EM checkpoint) begins a
        cycle at its parameters.
    reg_covar, tol : float
    max_iter : int
        Total pass budget (EM maps), counting the passes already in ``start``.
    on_iteration : callable, optional
        Called with the :class:`EMState` after every pass.

    Returns
    -------
    EMState
        The last state; its ``params`` are an EM step's result.
    """
    state = start
    cycle = start.acceleration if isinstance(start.acceleration, SquaremCycle) else SquaremCycle()
    while state.n_iter < max_iter and not state.converged:
        t0 = time.perf_counter()
        if cycle.phase == EVALUATE_TRIAL:
            state, cycle, what = _trial_pass(data, state, cycle, reg_covar)
        else:
            state, cycle, what = _em_step_pass(data, state, cycle, reg_covar, tol)
        state = dataclasses.replace(state, seconds=time.perf_counter() - t0, acceleration=cycle)
        logger.info(
            "EM pass %d (%s): mean log-likelihood %.6f, change %.3g, %.2f s",
            state.n_iter, what, state.lower_bound, state.change, state.seconds,
        )
        if on_iteration is not None:
            on_iteration(state)
    return state


def _em_step_pass(data, state, cycle, reg_covar, tol):
    """The pass at ``theta0`` or ``theta1``: a plain EM step, with plain EM's convergence test."""
    x = state.params
    lower_bound, nxt, stats = _em_pass(data, x, reg_covar)
    change = lower_bound - state.lower_bound
    converged = abs(change) < tol
    if cycle.phase == EVALUATE_THETA0 or converged:
        cycle = dataclasses.replace(cycle, phase=EVALUATE_THETA1, theta0=x, trial=None, alpha=math.nan)
        what = "EM step"
    else:  # x is theta1, nxt is theta2
        trial, alpha = extrapolate(cycle.theta0, x, nxt, cycle.step_max)
        if trial is None:
            # alpha = -1 is theta2 itself, kept; an invalid mixture is a step refused
            cycle = dataclasses.replace(cycle, phase=EVALUATE_THETA0, theta0=None, alpha=math.nan,
                                        n_skipped=cycle.n_skipped + 1,
                                        step_max=cycle.after_step(alpha, kept=alpha == -1.0))
            what = "EM step, no extrapolation" + (" (alpha = -1)" if alpha == -1.0 else " (not a valid mixture)")
        else:
            cycle = dataclasses.replace(cycle, phase=EVALUATE_TRIAL, theta0=None, trial=trial, alpha=alpha)
            what = f"EM step, extrapolation alpha = {alpha:.3g} next"
    new = EMState(
        params=nxt,
        n_iter=state.n_iter + 1,
        lower_bound=lower_bound,
        lower_bounds=state.lower_bounds + (lower_bound,),
        change=change,
        converged=converged,
        stats=stats,
    )
    return new, cycle, what


def _trial_pass(data, state, cycle, reg_covar):
    """The pass at ``theta'``: accept ``theta3 = F(theta')`` if the log-likelihood did not fall."""
    reference = state.lower_bound  # loglik(theta1); state.params is theta2
    try:
        lower_bound, theta3, stats = _em_pass(data, cycle.trial, reg_covar)
    except ComponentCollapseError:
        lower_bound, theta3, stats = -math.inf, None, None
    after = dataclasses.replace(cycle, phase=EVALUATE_THETA0, trial=None, alpha=math.nan)
    if theta3 is not None and lower_bound >= reference:
        new = EMState(
            params=theta3,
            n_iter=state.n_iter + 1,
            lower_bound=lower_bound,
            lower_bounds=state.lower_bounds + (lower_bound,),
            change=lower_bound - reference,
            stats=stats,
        )
        after = dataclasses.replace(after, n_accepted=cycle.n_accepted + 1,
                                    step_max=cycle.after_step(cycle.alpha, kept=True))
        return new, after, f"extrapolation alpha = {cycle.alpha:.3g} accepted"
    # continue from theta2: the state stays (with the statistics theta2 came from), one more pass spent
    new = EMState(
        params=state.params,
        n_iter=state.n_iter + 1,
        lower_bound=reference,
        lower_bounds=state.lower_bounds + (reference,),
        change=0.0,
        stats=state.stats,
    )
    what = (f"extrapolation alpha = {cycle.alpha:.3g} rejected (mean log-likelihood {lower_bound:.6f} "
            f"< {reference:.6f}), continuing from the EM step")
    after = dataclasses.replace(after, n_rejected=cycle.n_rejected + 1,
                                step_max=cycle.after_step(cycle.alpha, kept=False))
    return new, after, what
