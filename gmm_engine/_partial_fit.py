"""``partial_fit``: stepwise (online) EM on the sufficient statistics, one pass per batch.

:class:`PartialFit` is the part of ``GaussianMixture`` that learns from a
stream (the arithmetic: :mod:`gmm_engine._online`, shared/EM-NOTES.md):

* the first call on an unfitted estimator fits the batch: the
  initialisation ``init_params`` (or the ``*_init`` parameters) draws,
  then EM on the batch, to convergence within ``max_iter`` and ``tol``
  (see :data:`FIRST_BATCH_EM`); the statistics of its last pass start the
  running statistics, whose M-step is the model;
* every later call (and after ``fit``, which leaves the statistics of its
  last pass) makes ONE pass over the batch: the E-step under the current
  parameters (which for lazy input also checks the rows and weights), the
  running statistics re-expressed around the current means and moved
  towards the batch's, and the M-step;
* :meth:`PartialFit.partial_fit_statistics` is that step from statistics
  computed elsewhere under the current parameters (the pipeline's scored
  partitions), without reading any rows.

Each step replaces the fitted attributes and ``online_state_`` at once,
through the one writer :func:`~gmm_engine._fitted.set_fitted`:
``n_iter_`` counts the steps, ``lower_bound_`` is the batch's mean
log-likelihood under the parameters before the step (``lower_bounds_``
holds only it: nothing accumulates between steps), ``converged_`` is
False.  A failed step (bad input, a collapsed component) changes nothing.
"""

from __future__ import annotations

import math

from . import _online
from ._em import EMState, run_em, run_inits
from ._fitted import fitted_params, set_fitted
from ._input import fitted_data
from ._params import m_step
from ._stats import checked_estep_chunk, estep_chunk, refuse_bad_rows
from ._validation import PARAMETER_CONSTRAINTS, check_is_fitted, validate_params
from .exceptions import InvalidParameterError

#: The first call on an unfitted estimator runs EM on its batch until it
#: converges (``max_iter``, ``tol``), not a single iteration.  Measured on
#: streams of 60 batches of 1,000 rows (3 overlapping components, 4
#: features; tests/test_engine_online.py, 10 seeds per type): one EM
#: iteration from the k-means start of the first batch ended up to 0.76
#: nats/row (full), 0.07 (tied), 0.13 (diag) below batch EM on the same rows,
#: because the later steps (eta from 0.18 down to 0.05) move the model a
#: fraction of an EM iteration each and cannot finish the fit the start left
#: undone; from a converged first batch the gap is below 0.01 in 37 of 40
#: runs.  The 3 others (0.13-0.15) are data on which EM itself needs 34-145
#: iterations over all the rows from the first batch's fit: one pass per
#: batch cannot get there in 60 steps.
FIRST_BATCH_EM = True


class PartialFit:
    """``partial_fit`` and ``partial_fit_statistics`` of ``GaussianMixture``."""

    def partial_fit(self, X, y=None, sample_weight=None):
        """One stepwise-EM update from a batch of rows: one pass over them.

        Parameters
        ----------
        X : as for :meth:`fit`
            The batch (one row suffices after the first call).
        y : Ignored
        sample_weight : as for :meth:`fit`, optional
            Weights of the batch's rows: a batch's statistics, and its
            weight in the step, are weighted.

        Returns
        -------
        self : GaussianMixture

        Notes
        -----
        Without ``half_life`` the running statistics ``S`` (per unit
        weight) move by ``eta_t = (learning_offset + t) ** -learning_decay``
        towards the batch's: ``S <- (1 - eta_t) S + eta_t s_t / w_t``; with
        it they are forgotten: ``S <- 2 ** (-w_t / half_life) S + s_t``.
        The first call on an unfitted estimator fits its batch (EM to
        convergence, from ``init_params`` or the ``*_init`` parameters).
        After :meth:`fit` the running statistics are the fit's, so the
        training data weighs in.  The state is ``online_state_``, saved
        with the model: ``partial_fit`` continues after ``save``/``load``.
        """
        validate_params(self)
        if not hasattr(self, "means_"):
            return self._first_batch(X, sample_weight)
        data = fitted_data(X, self, sample_weight=sample_weight)
        kp = fitted_params(self, covariances=False).kernel_params(missing=data.missing)
        if data.values_checked:
            batch = data.map_reduce(estep_chunk, kp)
        else:  # lazy input: the E-step pass checks the rows and weights it reads
            checked = data.map_reduce(checked_estep_chunk, kp)
            refuse_bad_rows(checked.checks, data)
            batch = checked.stats
        return self._step(batch, self.half_life, getattr(self, "feature_names_in_", None))

    def partial_fit_statistics(self, stats, *, half_life=None):
        """One stepwise update from statistics computed under the current parameters.

        What :meth:`partial_fit` does after its E-step, for statistics that
        were gathered elsewhere: for example the merged statistics of
        scored partitions (``gmm_engine.scoring.score_rows(model, X,
        with_stats=True)``), so an update never reads the rows again.

        Parameters
        ----------
        stats : SufficientStatistics
            Under this model's current parameters (around its ``means_``);
            statistics under other parameters are refused.
        half_life : float, optional
            Forget the running statistics with this half-life (rows) for
            this update; None: the estimator's own schedule (its
            ``half_life``, or the stepwise step when that is None too).
            With running statistics from :meth:`fit` weighted ``lambda = 2
            ** (-stats.sum_weights / half_life)``, the update is one EM
            iteration over the training rows weighted ``lambda`` and the
            new rows (exactly so when the fit had converged).

        Returns
        -------
        self : GaussianMixture
        """
        validate_params(self)
        check_is_fitted(self)
        if half_life is not None and not any(c.ok(half_life) for c in PARAMETER_CONSTRAINTS["half_life"]):
            raise InvalidParameterError(
                "The 'half_life' parameter of partial_fit_statistics must be a float in the range "
                f"(0.0, inf) or None. Got {half_life!r} instead."
            )
        _online.check_statistics(stats, fitted_params(self, covariances=False))
        mode_half_life = self.half_life if half_life is None else half_life
        return self._step(stats, mode_half_life, getattr(self, "feature_names_in_", None))

    def _first_batch(self, X, sample_weight):
        """Initialise from the batch and fit it (see :data:`FIRST_BATCH_EM`); its last pass starts ``S``."""
        data, names = self._training_data(X, sample_weight=sample_weight)
        self._check_n_samples(data)
        inits = self._check_init_params(data.n_features)
        summary = self._scan(data)
        max_iter = max(1, self.max_iter) if FIRST_BATCH_EM else 1

        def run(init, start):
            return run_em(data, start, reg_covar=self.reg_covar, tol=self.tol, max_iter=max_iter)

        best = run_inits(self.n_init, self._starts(data, summary, inits), run)
        return self._step(best.stats, self.half_life, names, first=True)

    def _step(self, batch, half_life, names, first=False):
        """The running state moved by ``batch``, its M-step, and the fitted attributes, all at once."""
        previous = None if first else getattr(self, "online_state_", None)
        online = _online.updated(
            previous, batch, half_life=half_life,
            learning_offset=self.learning_offset, learning_decay=self.learning_decay,
        )
        params = m_step(online.stats, self.reg_covar)
        lower_bound = batch.mean_loglik
        state = EMState(params, online.n_steps, lower_bound, (lower_bound,), change=math.nan, converged=False)
        return set_fitted(self, state, names, online=online)
