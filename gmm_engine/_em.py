"""The EM driver: one pass over the chunks per iteration, and the n_init loop.

Each pass computes, under the current parameters, the merged sufficient
statistics and the total log-likelihood.  The M-step turns the statistics
into the next parameters; the log-likelihood divided by the row count
(the sum of the row weights, with ``sample_weight``) is scikit-learn's
lower bound for the parameters *before* that M-step, so one pass gives
both the update and the convergence test.  The last pass's statistics
stay with the state: they start the running statistics of ``partial_fit``
at no extra cost.

:func:`run_inits` is scikit-learn's ``n_init`` loop, written once: starts
drawn in turn (from one random stream), each run (EM for ``fit``, one
evaluating pass for ``initialize``), the highest lower bound kept.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from ._chunked import ChunkedData
from ._params import GMMParams, m_step
from ._stats import SufficientStatistics, estep_chunk

logger = logging.getLogger("gmm_engine")


@dataclass(frozen=True)
class EMState:
    """Where EM stands after an iteration: enough to checkpoint and resume.

    Attributes
    ----------
    params : GMMParams
        Parameters after the iteration's M-step.
    n_iter : int
        Iterations done, counted from the initialisation.
    lower_bound : float
        Mean log-likelihood of the parameters before this M-step.
    lower_bounds : tuple of float
        One per iteration so far.
    change : float
        ``lower_bound`` minus the previous one.
    converged : bool
    seconds : float
        Wall time of the iteration.
    n_passes : int
        Passes over the data of the fit so far, initialisation included
        (set by the estimator, which counts them; 0 where nobody counted).
    acceleration : object, optional
        With ``acceleration='squarem'``: the :class:`~gmm_engine._squarem.SquaremCycle`
        the next pass continues (one EM pass is then one iteration); None
        for plain EM.
    stats : SufficientStatistics or None
        The statistics of the iteration's pass (under the parameters before
        its M-step; ``params`` is their M-step); None for a start.  Not
        part of a checkpoint, nor of equality.
    """

    params: GMMParams
    n_iter: int
    lower_bound: float
    lower_bounds: tuple = field(default_factory=tuple)
    change: float = math.nan
    converged: bool = False
    seconds: float = 0.0
    n_passes: int = 0
    acceleration: object = None
    stats: SufficientStatistics | None = field(default=None, compare=False, repr=False)


def run_em(
    data: ChunkedData,
    start: EMState,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    on_iteration=None,
) -> EMState:
    """Iterate EM from ``start`` until ``|change| < tol`` or ``max_iter`` in total.

    Parameters
    ----------
    data : ChunkedData
    start : EMState
        Initial parameters with ``n_iter=0`` and ``lower_bound=-inf``, or a
        checkpointed state to resume from (same data, same result as an
        uninterrupted run).
    reg_covar, tol : float
    max_iter : int
        Total iteration budget, counting those already in ``start``.
    on_iteration : callable, optional
        Called with each new :class:`EMState`.

    Returns
    -------
    EMState
        The last state; ``converged`` says whether ``tol`` was met.
    """
    state = start
    while state.n_iter < max_iter and not state.converged:
        t0 = time.perf_counter()
        stats = data.map_reduce(estep_chunk, state.params.kernel_params(missing=data.missing))
        lower_bound = stats.loglik / stats.sum_weights
        params = m_step(stats, reg_covar)
        change = lower_bound - state.lower_bound
        state = EMState(
            params=params,
            n_iter=state.n_iter + 1,
            lower_bound=lower_bound,
            lower_bounds=state.lower_bounds + (lower_bound,),
            change=change,
            converged=abs(change) < tol,
            seconds=time.perf_counter() - t0,
            stats=stats,
        )
        logger.info(
            "EM iteration %d: mean log-likelihood %.6f, change %.3g, %.2f s",
            state.n_iter, lower_bound, change, state.seconds,
        )
        if on_iteration is not None:
            on_iteration(state)
    return state


def evaluate_start(data: ChunkedData, params: GMMParams) -> EMState:
    """``params`` as an EM start, rated by the mean log-likelihood of the data (one E-step pass).

    Returns
    -------
    EMState
        ``n_iter=0``, ``lower_bound`` the mean log-likelihood under ``params``
        (what EM's first iteration would report), not converged.
    """
    stats = data.map_reduce(estep_chunk, params.kernel_params(missing=data.missing))
    return EMState(params, 0, stats.loglik / stats.sum_weights)


def run_inits(n_init: int, start, run) -> EMState:
    """The best of ``n_init`` runs, chosen as scikit-learn's ``fit`` chooses.

    Parameters
    ----------
    n_init : int
    start : callable
        ``start(init) -> EMState``: the ``init``-th starting point.  Called
        in order, so starts drawn from one random stream are scikit-learn's.
    run : callable
        ``run(init, state) -> EMState``: EM from the start, or its rating.

    Returns
    -------
    EMState
        The run with the highest ``lower_bound`` (the first of equals); a
        later run replaces one whose bound is -inf, so that runs without a
        bound (``max_iter=0``) keep the last, as scikit-learn does.
    """
    best = None
    for init in range(n_init):
        state = start(init)
        logger.info("Initialization %d", init)
        state = run(init, state)
        if best is None or state.lower_bound > best.lower_bound or best.lower_bound == -math.inf:
            best = state
    return best
