"""The variational EM driver: one pass over the chunks per iteration, as :mod:`gmm_engine._em`.

Each pass runs the fused E-step kernel with the variational constants
(:func:`gmm_engine._variational.kernel_params`) and returns the merged
statistics; the M-step turns them into the next posterior, and the lower
bound of that posterior takes the responsibilities' ``sum r log r`` from
the same statistics.  scikit-learn computes its lower bound the same way
(E-step responsibilities, parameters after the M-step), so one pass gives
both the update and the convergence test.  Unlike the Gaussian mixture's
mean log-likelihood, scikit-learn's variational lower bound is a total
over the rows, and so is ``tol``'s test on it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from . import _covariance
from ._chunked import ChunkedData
from ._initialization import initial_statistics, tied_one_hot_covariance
from ._params import gaussian_estimates
from ._stats import estep_chunk
from ._variational import VariationalParams, VariationalPrior, kernel_params, lower_bound, m_step, posterior, sum_r_log_r

logger = logging.getLogger("gmm_engine")


@dataclass(frozen=True)
class VariationalState:
    """Where variational EM stands after an iteration.

    Attributes
    ----------
    params : VariationalParams
        The posterior after the iteration's M-step.
    n_iter : int
    lower_bound : float
        scikit-learn's lower bound of ``params`` (with the responsibilities
        of the pass before the M-step); -inf for a start.
    lower_bounds : tuple of float
    change : float
    converged : bool
    seconds : float
    n_passes : int
        Passes over the data of the fit so far, initialisation included.
    """

    params: VariationalParams
    n_iter: int
    lower_bound: float
    lower_bounds: tuple = field(default_factory=tuple)
    change: float = math.nan
    converged: bool = False
    seconds: float = 0.0
    n_passes: int = 0


def initial_posterior(data: ChunkedData, summary, prior: VariationalPrior, *, n_components: int,
                      covariance_type: str, init_params: str, reg_covar: float, rs) -> VariationalParams:
    """scikit-learn's ``_initialize``: the posterior from the initial responsibilities of ``init_params``.

    The responsibilities (and the random draws) are those of
    :func:`gmm_engine._initialization.initial_statistics`, so
    'random_from_data' chooses scikit-learn's rows for the same
    ``random_state``.
    """
    stats, chosen = initial_statistics(
        data, summary, n_components=n_components, covariance_type=covariance_type,
        init_params=init_params, rs=rs,
    )
    nk, xk, sk = gaussian_estimates(stats, reg_covar)
    if chosen is not None and _covariance.get(covariance_type).one_hot_start_reads_all_rows:
        # scikit-learn's tied covariance of one-hot responsibilities reads every row
        sk = tied_one_hot_covariance(data, summary, chosen, reg_covar)
    return posterior(nk, xk, sk, prior, covariance_type)


def run_variational(data: ChunkedData, start: VariationalState, prior: VariationalPrior, *, reg_covar: float,
                    tol: float, max_iter: int, on_iteration=None) -> VariationalState:
    """Iterate variational EM from ``start`` until ``|change| < tol`` or ``max_iter`` iterations in total.

    Parameters
    ----------
    data : ChunkedData
    start : VariationalState
        A start (``n_iter=0``; ``lower_bound`` -inf, or the previous fit's
        bound for a warm start, as scikit-learn compares with it).
    prior : VariationalPrior
    reg_covar, tol : float
    max_iter : int
    on_iteration : callable, optional
        Called with each new state.

    Returns
    -------
    VariationalState
    """
    state = start
    while state.n_iter < max_iter and not state.converged:
        t0 = time.perf_counter()
        kp = kernel_params(state.params)
        stats = data.map_reduce(estep_chunk, kp)
        params = m_step(stats, reg_covar, prior)
        bound = lower_bound(params, sum_r_log_r(stats, kp, state.params.gaussian.precisions))
        change = bound - state.lower_bound
        state = VariationalState(
            params=params,
            n_iter=state.n_iter + 1,
            lower_bound=bound,
            lower_bounds=state.lower_bounds + (bound,),
            change=change,
            converged=abs(change) < tol,
            seconds=time.perf_counter() - t0,
        )
        logger.info(
            "variational EM iteration %d: lower bound %.6f, change %.3g, %.2f s",
            state.n_iter, bound, change, state.seconds,
        )
        if on_iteration is not None:
            on_iteration(state)
    return state
