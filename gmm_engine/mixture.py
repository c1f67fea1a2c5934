"""``GaussianMixture``: scikit-learn's estimator, fitted out of core on Dask.

The estimator composes the engine's parts; each lives in its own module:

=======================  ==========================================================
:mod:`._input`           what X may be: the training data and the scoring input
:mod:`._initialization`  the starting parameters of each ``init_params``
:mod:`._sample_start`    starts found on a sample of the rows (``init_size``)
:mod:`._em`              the EM loop and the ``n_init`` loop
:mod:`._squarem`         the accelerated EM loop (``acceleration='squarem'``)
:mod:`._passes`          the count of passes over the data (``n_passes_``)
:mod:`._weights`         ``sample_weight``: accepted forms and checks
:mod:`._online`          stepwise EM: the running state of ``partial_fit``
:mod:`._partial_fit`     ``partial_fit`` and ``partial_fit_statistics``
:mod:`._missing`         ``missing='marginalize'``: NaN entries marginalised
:mod:`._chunked`         passes over chunks: the interface, NumPy threads, the fold
:mod:`._dask_data`       passes over a dask array (plan: ``_dask_plan``)
:mod:`._blocks`          per-block scoring, mapped over the rows
:mod:`._prediction`      scores, labels, posteriors, criteria, draws of a fit
:mod:`._fitted`          the one writer of the fitted attributes; checked readers
:mod:`._criteria`        log-likelihood, BIC and AIC from one pass
:mod:`._candidates`      joint fits: several estimators sharing every pass
:mod:`._persist`         the model directory format
:mod:`._estimator_api`   get_params / set_params / repr / tags
=======================  ==========================================================

Fitting (``fit``, ``resume``, ``initialize``) validates the parameters,
X and ``sample_weight``, scans X (and lazy weights) once for NaN, inf and
invalid weights (which also gives the statistics the initialisers need),
runs, and only then sets the fitted attributes, all at once: a failed fit
leaves the previous model as it was.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings

import numpy as np

from . import _covariance, _persist
from ._criteria import InformationCriteria
from ._em import EMState, evaluate_start, run_em, run_inits
from ._estimator_api import EstimatorAPI
from ._fitted import em_state, fitted_covariance_type, set_fitted
from ._initialization import initial_params
from ._input import training_data
from ._missing import ImputedData, marginalizes, refuse_unobserved_features
from ._online import FORGETTING, STEPWISE, OnlineState
from ._partial_fit import PartialFit
from ._passes import CountedData
from ._prediction import Prediction
from ._sample_start import (
    SAMPLE_MAX_ITER,
    SAMPLE_TOL_FACTOR,
    Sample,
    sample_probability,
    scan_sample_chunk,
    start_on_sample,
)
from ._squarem import run_squarem
from ._stats import refuse_bad_rows, summary_chunk
from ._validation import (
    check_init_array,
    check_is_fitted,
    check_means,
    check_random_state,
    check_weights,
    validate_params,
)
from .exceptions import ConvergenceWarning, compatible

logger = logging.getLogger("gmm_engine")

__all__ = ["GaussianMixture", "InformationCriteria", "load_model"]


class GaussianMixture(PartialFit, Prediction, EstimatorAPI):
    """Gaussian mixture fitted by EM with one pass over chunked data per iteration.

    A drop-in for :class:`sklearn.mixture.GaussianMixture` (same parameters,
    defaults, attributes, methods, warnings and error messages) that also
    accepts dask arrays, dask DataFrames, Zarr arrays and paths or URLs of
    Zarr arrays, and never gathers the data on the client.  Each EM iteration is one pass
    over the chunks: every chunk yields its sufficient statistics and
    log-likelihood, a tree reduction merges them, and the M-step is a pure
    function of the merged statistics.  Dask input is computed on the
    active ``distributed.Client`` when there is one, else on the threaded
    scheduler; in-memory input runs on local threads.  A dask array of
    in-memory chunks (``da.from_array(X)``) is sent to the cluster once per
    fit, not with every pass.

    Beyond scikit-learn: ``sample_weight`` (integer weights are repeated
    rows, zero weights removed rows) on fitting, scoring and the
    information criteria, :meth:`partial_fit`, stepwise (online) EM
    on the sufficient statistics, one pass per batch, and missing values
    (NaN entries) fitted and scored by marginalisation (``missing``).

    Parameters
    ----------
    n_components : int, default=1
        The number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        Each component has its own general covariance matrix ('full'), all
        share one ('tied'), each has its own diagonal ('diag') or a single
        variance ('spherical').
    tol : float, default=1e-3
        EM stops when the mean log-likelihood changes by less than this.
    reg_covar : float, default=1e-6
        Non-negative value added to the diagonal of every covariance.
    max_iter : int, default=100
        The number of EM iterations to perform.  With ``acceleration``, the
        number of EM passes over the data (each is one EM iteration's work:
        an E-step and an M-step), so it still bounds the reads of the data.
    n_init : int, default=1
        The number of initialisations; the best lower bound is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, \
default='kmeans'
        'kmeans' runs k-means|| then Lloyd passes over the chunks;
        'k-means++' draws greedy k-means++ centres (one pass per centre);
        'random' draws random responsibilities; 'random_from_data' takes
        random rows as means (the same rows as scikit-learn for the same
        ``random_state``).
    init_size : int, default=None
        None reads every row to initialise (scikit-learn's way).  An int
        (MiniBatchKMeans's name) finds each start on a uniform sample of
        about that many rows, drawn in the scan that every fit makes: the
        ``init_params`` initialisation, then EM (as ``acceleration``, to
        a tenth of ``tol``, at most 1,000 iterations whatever ``max_iter``:
        they read no data), run in memory on the sample, and
        EM on all rows continues from the sample's optimum.  Out of core
        that saves every pass k-means and the first EM iterations would
        make; ``n_passes_`` counts the scan and EM on all rows.  With
        ``sample_weight`` each row is drawn with the same probability and
        keeps its weight.  At least ``n_samples``, every row is held in
        memory for the start (MiniBatchKMeans clips ``init_size`` so).
        Ignored when every ``*_init`` parameter is given, by ``warm_start``
        and by :meth:`partial_fit`; a sample that cannot serve (fewer rows
        than components, components collapsing on it) falls back to the
        start on all rows.  The sample is held by the client: about
        ``init_size * n_features`` values of the input's dtype.
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        (n_components,) if 'spherical', (n_features, n_features) if 'tied',
        (n_components, n_features) if 'diag',
        (n_components, n_features, n_features) if 'full'.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and ``sample``.  Row-level randomness is a
        function of the row index, so the fit does not depend on chunking.
    warm_start : bool, default=False
        Start from the last fit's parameters; ``n_init`` is then ignored.
    verbose : int, default=0
        1 or more shows a progress bar over EM iterations with the current
        mean log-likelihood.  Every iteration is also logged at INFO on the
        ``gmm_engine`` logger.
    verbose_interval : int, default=10
        Kept for scikit-learn compatibility (the bar refreshes every
        iteration).
    persist : bool, default=False
        Keep dask input in (cluster) memory for the whole fit instead of
        reading it from its store on every pass.
    acceleration : {None, 'squarem'}, default=None
        None runs plain EM (scikit-learn's iterations, bit for bit).
        'squarem' extrapolates every two EM steps (Varadhan & Roland's
        SQUAREM, in cycles of three passes) and keeps an extrapolation only
        when the log-likelihood did not fall, so the lower bound of every
        accepted step is at least the previous one.  The step length is
        bounded, starting at plain EM's, growing fourfold after each step
        kept at the bound and shrinking after one refused there (the
        reference implementation's schedule), so that the early steps do not
        leap from the basin plain EM climbs; slow EM (overlapping
        components) then needs several times fewer passes to the same
        lower bound.  ``n_iter_``, ``lower_bounds_`` and ``max_iter`` then
        count EM passes, ``tol`` applies to the EM steps of the path.
    learning_decay : float, default=0.7
        :meth:`partial_fit`'s step ``eta_t = (learning_offset + t) **
        -learning_decay`` towards each batch's statistics, in (0.5, 1]
        (LatentDirichletAllocation's name and meaning).
    learning_offset : float, default=10.0
        Non-negative; larger values make the early steps smaller.
    half_life : float, default=None
        When set (rows), :meth:`partial_fit` forgets instead: the running
        statistics are multiplied by ``2 ** (-n_batch / half_life)``
        (``n_batch`` the batch's rows, counted by weight) before the
        batch's are added, so data ``half_life`` rows old weighs half: for
        a stream that drifts.
    missing : {'error', 'marginalize'}, default='error'
        'error' refuses rows with NaN, naming them (scikit-learn's
        behaviour).  'marginalize' treats NaN entries as missing features
        (Ghahramani & Jordan, 1994): every score, label and posterior is
        that of a row's observed features (their marginal density), and
        EM climbs the exact observed-data log-likelihood.  Infinities,
        rows with every feature missing and features never observed stay
        refused; the initialisation reads a missing entry as its
        feature's mean.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
        Shape set by ``covariance_type`` (see ``precisions_init``).
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
        Upper-triangular ``U`` with ``precision = U U^T``.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood of the training data under the parameters before
        the last M-step (scikit-learn's definition).
    lower_bounds_ : list of float
        One per iteration of the best initialisation (with ``acceleration``:
        per EM pass; a rejected extrapolation repeats the previous value).
    n_passes_ : int
        Passes over the training data the fit made, initialisation (the
        scan for NaN and inf, k-means, every ``n_init`` start) included; a
        resumed fit adds its own to those of the checkpoint.  Out of core
        each pass is a full read of the data.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when the input had string feature names (DataFrame columns or
        a Zarr array's ``feature_names`` attribute).
    online_state_ : OnlineState or None
        The running statistics of :meth:`partial_fit` (with the step
        count, rows and weight seen and the mode), replaced by every step
        and saved with the model; ``fit`` leaves the statistics of its
        last pass here, so a later ``partial_fit`` weighs the training
        data in.  None after ``initialize`` or a fit with ``max_iter=0``.

    Notes
    -----
    Fitted arrays are float64 whatever the input dtype; the arithmetic is
    float64 with statistics accumulated around the current means, so data
    far from the origin and float32 input keep full accuracy.
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        init_size=None,
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        persist=False,
        acceleration=None,
        learning_decay=0.7,
        learning_offset=10.0,
        half_life=None,
        missing="error",
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.init_size = init_size
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.persist = persist
        self.acceleration = acceleration
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.half_life = half_life
        self.missing = missing

    # -- fitting -------------------------------------------------------------

    def fit(self, X, y=None, sample_weight=None, *, on_iteration=None):
        """Estimate the parameters with EM; see :meth:`fit_predict`.

        Parameters
        ----------
        X : array-like, dask array, dask DataFrame, zarr array, or path/URL of a \
Zarr array, of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like, dask array, zarr array or path of shape \
(n_samples,), or float, default=None
            Row weights: every statistic of a row is multiplied by its
            weight (integer weights fit as repeated rows, zero weights as
            removed rows), and the initialisation draws rows in proportion
            to them.  A dask array is rechunked like X's rows.  Refused
            with scikit-learn's messages when NaN, infinite, negative, all
            zero or of the wrong shape.
        on_iteration : callable, optional
            Called after every EM iteration (every EM pass with
            ``acceleration``) with an ``EMState`` (parameters, iteration
            count, lower bounds, passes so far): the hook for checkpoints.

        Returns
        -------
        self : GaussianMixture
        """
        validate_params(self)
        warm = self._will_warm_start()
        data, names = self._training_data(X, warm=warm, sample_weight=sample_weight)
        return self._fit_data(data, names, warm, on_iteration)

    def _fit_data(self, data, names, warm, on_iteration):
        """:meth:`fit` on validated training data (``CountedData``): the scan, the starts, EM.

        A joint fit (:mod:`._candidates`) enters here with a lane of shared
        passes, so that each of its candidates runs this very code.
        """
        self._check_n_samples(data)
        inits = self._check_init_params(data.n_features)
        summary, sample = (self._scan(data), None) if warm else self._scan_for_starts(data, inits)
        if warm:
            n_init = 1

            def start(init):  # the last fit's parameters, with a fresh iteration budget
                last = em_state(self)
                return EMState(last.params, 0, last.lower_bound)
        else:
            n_init = self.n_init
            start = self._starts(data, summary, inits, sample)
        best = run_inits(n_init, start, lambda init, s: self._run(data, s, init, n_init, on_iteration))
        return self._finish(best, names, data)

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit (with ``sample_weight``, see :meth:`fit`), then return the most likely component of every row of X.

        Returns
        -------
        labels : ndarray of shape (n_samples,), or a lazy dask array for dask input
        """
        self.fit(X, sample_weight=sample_weight)
        return self.predict(X)

    def initialize(self, X, y=None, sample_weight=None):
        """Set the initial parameters only: where :meth:`fit` would start EM.

        Each of the ``n_init`` initialisations (drawn in turn from one
        random stream, as :meth:`fit` draws them) is rated by the mean
        log-likelihood of X under its parameters, one E-step pass each, and
        the best is kept.  ``warm_start`` and ``max_iter`` play no part.

        Parameters
        ----------
        X, sample_weight : as for :meth:`fit`
        y : Ignored

        Returns
        -------
        self : GaussianMixture
            Fitted with ``n_iter_ = 0``, ``converged_ = False``,
            ``lower_bounds_ = []`` and ``lower_bound_`` the initial mean
            log-likelihood (-inf with ``n_init=1``, which needs no rating
            pass).  :meth:`resume` from ``checkpoint.state_from_estimator``
            of it equals a fit from the same initialisation.
        """
        validate_params(self)
        data, names = self._training_data(X, sample_weight=sample_weight)
        self._check_n_samples(data)
        inits = self._check_init_params(data.n_features)
        summary, sample = self._scan_for_starts(data, inits)

        def rate(init, state):
            state = evaluate_start(data, state.params)
            logger.info("initialisation %d/%d: mean log-likelihood %.6g", init + 1, self.n_init, state.lower_bound)
            return state

        best = run_inits(self.n_init, self._starts(data, summary, inits, sample),
                         rate if self.n_init > 1 else (lambda init, state: state))
        return set_fitted(self, dataclasses.replace(best, n_passes=data.passes), names)

    def resume(self, X, state, *, sample_weight=None, on_iteration=None):
        """Continue an interrupted fit from a checkpointed :class:`EMState`.

        The iteration budget ``max_iter`` counts the iterations already in
        ``state``; on the same data the result equals an uninterrupted fit.

        Parameters
        ----------
        X, sample_weight : as for :meth:`fit` (the interrupted fit's)
        state : EMState
            As passed to ``on_iteration`` during the interrupted fit.  With
            ``acceleration='squarem'``, a SQUAREM cycle it holds continues
            where it stopped; ``n_passes_`` adds this fit's passes to the
            state's.

        Returns
        -------
        self : GaussianMixture
        """
        validate_params(self)
        data, names = self._training_data(X, sample_weight=sample_weight, passes=state.n_passes)
        # the same checks as fit: too few rows, then (in the first pass) NaN or inf
        self._check_n_samples(data)
        if (
            state.params.n_features != data.n_features
            or state.params.covariance_type != self.covariance_type
            or state.params.n_components != self.n_components
        ):
            raise ValueError(
                "The checkpoint does not match this estimator and data: it has "
                f"{state.params.n_features} features, {state.params.n_components} components "
                f"and covariance_type={state.params.covariance_type!r}; the data has "
                f"{data.n_features} features and the estimator n_components="
                f"{self.n_components}, covariance_type={self.covariance_type!r}. Resume "
                "with the estimator parameters and data of the interrupted fit."
            )
        # the scan's refusals, from the first EM pass's own read of the rows (no pass of their own)
        data.check_first_pass(lambda summary: self._checked_summary(summary, data))
        state = self._run(data, state, 0, 1, on_iteration)
        data.check_unread()  # no EM pass was left to make
        return self._finish(state, names, data)

    def _training_data(self, X, warm=False, sample_weight=None, passes=0):
        """ChunkedData for X and its weights (passes counted from ``passes``), and the input's feature names.

        Nothing fitted changes here: ``n_features_in_`` and
        ``feature_names_in_`` are set with the parameters when the fit
        succeeds, so a failed fit never leaves them disagreeing with
        ``means_``.  With ``warm=True`` (a warm start will follow), X must
        fit the current parameters.
        """
        data, names = training_data(X, persist=self.persist,
                                    check_features=self._check_warm_start if warm else None,
                                    sample_weight=sample_weight, missing=marginalizes(self))
        return CountedData(data, passes), names

    def _will_warm_start(self):
        # Continue only from a fit that finished: a fit that raised (say, a
        # collapsed component) leaves no parameters to continue from.
        return bool(self.warm_start and hasattr(self, "converged_") and hasattr(self, "means_"))

    def _check_warm_start(self, n_features):
        """Refuse to continue a fit whose parameters do not fit X and the estimator.

        The chunk kernels trust the parameter shapes; a mismatch would read
        past the rows instead of failing.
        """
        K = self.n_components
        expected = _covariance.get(self.covariance_type).param_shape(K, n_features)
        means_shape, cov_shape = np.shape(self.means_), np.shape(self.covariances_)
        # shapes alone cannot tell 'diag' from 'tied' when K == D
        fitted_type = fitted_covariance_type(self)
        if means_shape != (K, n_features) or cov_shape != expected or fitted_type != self.covariance_type:
            raise ValueError(
                "warm_start=True continues the previous fit, which has "
                f"{means_shape[0]} components, {means_shape[1]} features and "
                f"covariance_type={fitted_type!r} (covariances of shape {cov_shape}), "
                f"but now n_components={K}, covariance_type="
                f"{self.covariance_type!r} and X has {n_features} features (covariances of "
                f"shape {expected}). Pass data and parameters that match the previous fit, "
                "or set warm_start=False to start afresh."
            )

    def _check_init_params(self, n_features):
        """The user's initial parameters, validated (before any pass over the data)."""
        K = self.n_components
        cov = _covariance.get(self.covariance_type)
        weights = None if self.weights_init is None else check_weights(self.weights_init, K)
        means = None if self.means_init is None else check_means(self.means_init, K, n_features)
        precisions = None
        if self.precisions_init is not None:
            precisions = check_init_array(self.precisions_init, allow_nd=cov.init_allows_nd)
            precisions = cov.check_precisions(precisions, K, n_features)
        return weights, means, precisions

    def _check_n_samples(self, data):
        """scikit-learn's check that there are at least as many rows as components."""
        if data.n_samples < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components "
                f"but got n_components = {self.n_components}, n_samples = {data.n_samples}"
            )

    def _scan(self, data):
        """One pass over the training data: refuse NaN and inf, with their row positions, and bad weights.

        Also gives the per-feature (weighted) mean and variance the
        initialisers need.  With weights, fewer rows of positive weight
        than components are refused as too few rows are.  With
        ``missing='marginalize'`` only rows that cannot be marginalised, and
        features never observed, are refused.
        """
        return self._checked_summary(data.map_reduce(summary_chunk, data.missing), data)

    def _scan_for_starts(self, data, inits):
        """:meth:`_scan`, drawing in the same pass the ``init_size`` sample the starts will fit on.

        Returns
        -------
        summary : DataSummary
        sample : Sample or None
            None when the starts read the data itself: no ``init_size``,
            or every initial parameter given.
        """
        given = all(v is not None for v in inits)
        probability = None if given else sample_probability(self.init_size, data.n_samples)
        if probability is None:
            return self._scan(data), None
        key = int(check_random_state(self.random_state).randint(0, 2**63 - 1, dtype=np.int64))
        scanned = data.map_reduce(scan_sample_chunk, data.missing, key, probability)
        summary = self._checked_summary(scanned.summary, data)
        return summary, Sample.from_rows(scanned.sample, data.missing)

    def _checked_summary(self, summary, data):
        """The scan's refusals (bad rows, unobserved features, too few weighted rows); ``summary`` when none."""
        refuse_bad_rows(summary, data)
        if data.missing:
            refuse_unobserved_features(summary)
        if summary.weights is not None and summary.weights.n_positive < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components "
                f"but got n_components = {self.n_components}, n_samples = "
                f"{summary.weights.n_positive} (rows with a positive sample_weight)"
            )
        return summary

    def _starts(self, data, summary, inits, sample=None):
        """``start(init) -> EMState``: initialisations drawn in turn from one random stream.

        With missing values the starts read each missing entry as its
        feature's mean (:class:`~gmm_engine._missing.ImputedData`).  With
        a ``sample`` (``init_size``) each start is the optimum of EM on the
        sample from the initialisation drawn on it
        (:mod:`gmm_engine._sample_start`).
        """
        rs = check_random_state(self.random_state)
        weights_init, means_init, precisions_init = inits

        def initialize(on, on_summary):
            return initial_params(
                ImputedData(on, on_summary.mean) if on.missing else on, on_summary,
                n_components=self.n_components,
                covariance_type=self.covariance_type,
                init_params=self.init_params,
                reg_covar=self.reg_covar,
                rs=rs,
                weights_init=weights_init,
                means_init=means_init,
                precisions_init=precisions_init,
            )

        def start(init):
            if sample is not None:
                state = start_on_sample(sample, self.n_components, initialize,
                                        lambda d, st: self._em(d, st, tol=self.tol * SAMPLE_TOL_FACTOR,
                                                               max_iter=SAMPLE_MAX_ITER))
                if state is not None:
                    return state
            return EMState(initialize(data, summary), 0, -math.inf)

        return start

    def _em(self, data, state, on_iteration=None, tol=None, max_iter=None):
        """The estimator's EM loop (plain, or ``acceleration``'s) from ``state`` on ``data``."""
        run = run_em if self.acceleration is None else run_squarem
        return run(data, state, reg_covar=self.reg_covar, tol=self.tol if tol is None else tol,
                   max_iter=self.max_iter if max_iter is None else max_iter, on_iteration=on_iteration)

    def _run(self, data, start, init, n_init, on_iteration):
        """EM from ``start`` (accelerated if asked), with the progress bar ``verbose`` asks for.

        Every state passed on carries the fit's pass count so far.
        """
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            desc = f"EM init {init + 1}/{n_init}" if n_init > 1 else "EM"
            bar = tqdm(total=self.max_iter, desc=desc, unit="iter", leave=True)

        def hook(state):
            state = dataclasses.replace(state, n_passes=data.passes)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loglik=f"{state.lower_bound:.6g}", change=f"{state.change:.2g}")
            if on_iteration is not None:
                on_iteration(state)

        try:
            return self._em(data, start, on_iteration=hook)
        finally:
            if bar is not None:
                bar.close()

    def _online_mode(self) -> str:
        return STEPWISE if self.half_life is None else FORGETTING

    def _finish(self, state, names, data):
        """Warn if EM stopped short, then set every fitted attribute from ``state`` and the pass count.

        The statistics of the last pass become the running state of
        :meth:`partial_fit`.
        """
        state = dataclasses.replace(state, n_passes=data.passes)
        if self.max_iter == 0:
            # no EM ran: scikit-learn's lower_bound_ is -inf then
            state = dataclasses.replace(state, lower_bound=-math.inf)
        elif not state.converged:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                compatible(ConvergenceWarning),
            )
        return set_fitted(self, state, names, online=OnlineState.from_fit(state.stats, self._online_mode()))

    # -- persistence ---------------------------------------------------------

    def save(self, path, *, metadata=None, overwrite=False):
        """Write the fitted model to a directory (JSON + .npy; never pickle).

        Parameters
        ----------
        path : str or PathLike
        metadata : dict, optional
            JSON-serialisable information stored with the model.
        overwrite : bool, default=False
            Replace a model directory already at ``path``.  Anything else
            there (a file, a directory that is not a saved model, a model
            directory holding other files) is left alone and refused with
            ``FileExistsError``.

        Returns
        -------
        pathlib.Path

        Warns
        -----
        UserWarning
            When a parameter cannot be stored (``random_state`` given as a
            ``RandomState`` instance): it is saved as None.
        """
        check_is_fitted(self)
        return _persist.save_model(self, path, metadata=metadata, overwrite=overwrite)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`, verifying checksums, shapes and dtypes.

        Raises
        ------
        ModelFormatError
            The directory is missing, corrupt, tampered with or not a model.
        """
        est, _ = _persist.load_model(cls, path)
        return est


def load_model(path):
    """Load a saved model and the metadata stored with it.

    The document's ``estimator`` says which class to rebuild: a
    ``GaussianMixture`` or a ``BayesianGaussianMixture``.

    Returns
    -------
    model : GaussianMixture or BayesianGaussianMixture
    metadata : dict

    Raises
    ------
    ModelFormatError
        The directory is missing, corrupt, tampered with or not a model.
    """
    if _persist.model_kind(_persist.read_model_document(path)) == _persist.VARIATIONAL:
        from ._persist_variational import load_variational
        from .bayesian_mixture import BayesianGaussianMixture  # it imports this module

        return load_variational(BayesianGaussianMixture, path)
    return _persist.load_model(GaussianMixture, path)
