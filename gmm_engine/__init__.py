"""gmm_engine: out-of-core EM for Gaussian mixtures on Dask.

The library layer of gmm-stream.  It imports neither ``pipeline``,
``flows`` nor Prefect.  Its public face is this package's names
(:data:`__all__`) and the public modules :mod:`gmm_engine.scoring`,
:mod:`gmm_engine.checkpoint`, :mod:`gmm_engine.npy` and
:mod:`gmm_engine.atomic`; everything whose name starts with ``_`` is
internal.

>>> from gmm_engine import GaussianMixture
>>> gm = GaussianMixture(n_components=3).fit("data.zarr")   # doctest: +SKIP
>>> labels = gm.predict(dask_array)                          # lazy  # doctest: +SKIP
>>> start = GaussianMixture(3, n_init=4).initialize(X)       # best of 4 starts  # doctest: +SKIP

Weights, streams and updates (beyond scikit-learn):

* ``fit(X, y=None, sample_weight=None)`` and the same ``sample_weight`` on
  ``fit_predict``, ``initialize``, ``resume``, ``partial_fit``, ``score``,
  ``information_criteria``, ``bic`` and ``aic``: NumPy, dask (rechunked
  like X) or Zarr (array or path) weights, or a number; integer weights
  fit as repeated rows, zero weights as removed rows; BIC's ``N`` is the
  sum of the weights.
* ``partial_fit(X, y=None, sample_weight=None)``: stepwise (online) EM, one
  pass per batch, with ``learning_decay``, ``learning_offset`` and
  ``half_life`` (constructor parameters).  ``online_state_``
  (:class:`OnlineState`: the running :class:`SufficientStatistics`, the
  step count, rows and weight seen, the mode) is saved with the model.
* ``partial_fit_statistics(stats, *, half_life=None)``: the same update
  from statistics computed under the current parameters, e.g. by
  ``gmm_engine.scoring.score_rows(model, X, with_stats=True)``, which gives
  them from the scoring pass itself.
* ``GaussianMixture(missing='marginalize')``: rows with NaN entries are
  fitted and scored by marginalising the missing features (Ghahramani &
  Jordan 1994; infinities and rows with no observed feature stay refused);
  ``score_rows(..., n_observed=True)`` also returns each row's count of
  observed features.
* :class:`SufficientStatistics`: ``merge``, ``rebased(shift)``,
  ``scaled(factor)``, ``n_samples``, ``sum_weights``, ``loglik``,
  ``mean_loglik``, and ``to_arrays()`` / ``from_arrays(arrays, scalars)``
  (float64 arrays and JSON scalars, lossless) to store one per scored
  partition.

>>> ll, comp, resp, stats = score_rows(model, partition, with_stats=True)  # doctest: +SKIP
>>> model.partial_fit_statistics(stats.compute(), half_life=1e6)          # doctest: +SKIP

Variational Bayes: :class:`BayesianGaussianMixture` (scikit-learn's, out of
core on the same kernels; ``sample_weight`` as repeated rows) and its
``effective_n_components(floor=EFFECTIVE_WEIGHT_FLOOR)``, the components
holding more than 1% of the weight:

>>> bgm = BayesianGaussianMixture(n_components=12).fit("data.zarr")  # doctest: +SKIP
>>> bgm.effective_n_components()                                    # doctest: +SKIP

Computing: :func:`compute` ``(*collections, **kwargs)`` is ``dask.compute`` on
the scheduler dask would choose, without importing ``distributed`` (~0.3 s)
when nothing has, so no client can exist; the engine's own passes use it.

Compiled kernels: :func:`load_kernels` () compiles (once per install, ~50 s)
or loads from numba's cache (~1 s) every kernel the estimators call,
before anyone waits on it; ``make install`` and the CLI's warm runner call it.

Model selection (several mixtures on the same data):

* :class:`JointFit` ``(X, *, sample_weight=None, persist=False)``:
  ``add(estimator) -> index``, ``step() -> bool`` (one pass over X for
  every live candidate), ``drop(index, reason)``, ``progress(index)`` and
  ``candidates`` (:class:`CandidateProgress`: status, EM iterations, lower
  bounds, passes), ``run(between_passes=None)``, ``close()``.  Each
  candidate is fitted exactly as ``estimator.fit(X)`` fits it (same
  start, same result, also with ``acceleration``), one read of each chunk
  serving all of them.
* :func:`joint_criteria` ``(estimators, X, sample_weight=None)``: the
  :class:`InformationCriteria` of several fitted models from one pass.

>>> jf = JointFit("train.zarr")                                             # doctest: +SKIP
>>> ids = [jf.add(GaussianMixture(k, random_state=0)) for k in (2, 3, 4)]  # doctest: +SKIP
>>> fitted = [c.estimator for c in jf.run() if c.status == "fitted"]       # doctest: +SKIP
>>> [ic.bic for ic in joint_criteria(fitted, "train.zarr")]                # doctest: +SKIP
"""

from ._version import __version__

# Names are imported on first use (PEP 562): the public modules (gmm_engine.atomic,
# gmm_engine.npy, ...) and the command line's config need none of the numerical
# stack, and `import gmm_engine.atomic` runs this file first.
_PUBLIC = {
    "COVARIANCE_TYPES": ("._covariance", "NAMES"),
    "full_covariances": ("._covariance", "full_covariances"),
    "covariances_from_full": ("._covariance", "covariances_from_full"),
    "EMState": ("._em", "EMState"),
    "CandidateProgress": ("._candidates", "CandidateProgress"),
    "JointFit": ("._candidates", "JointFit"),
    "joint_criteria": ("._candidates", "joint_criteria"),
    "open_zarr_array": ("._input", "open_zarr_array"),
    "zarr_to_dask": ("._input", "zarr_to_dask"),
    "compute": ("._scheduler", "compute"),
    "GMMParams": ("._params", "GMMParams"),
    "OnlineState": ("._online", "OnlineState"),
    "SufficientStatistics": ("._stats", "SufficientStatistics"),
    "read_model_document": ("._persist", "read_model_document"),
    "ComponentCollapseError": (".exceptions", "ComponentCollapseError"),
    "ConvergenceWarning": (".exceptions", "ConvergenceWarning"),
    "DataValidationError": (".exceptions", "DataValidationError"),
    "InvalidParameterError": (".exceptions", "InvalidParameterError"),
    "ModelFormatError": (".exceptions", "ModelFormatError"),
    "NotFittedError": (".exceptions", "NotFittedError"),
    "GaussianMixture": (".mixture", "GaussianMixture"),
    "BayesianGaussianMixture": (".bayesian_mixture", "BayesianGaussianMixture"),
    "EFFECTIVE_WEIGHT_FLOOR": (".bayesian_mixture", "EFFECTIVE_WEIGHT_FLOOR"),
    "InformationCriteria": (".mixture", "InformationCriteria"),
    "load_model": (".mixture", "load_model"),
    "load_kernels": ("._kernel_cache", "load_kernels"),
}

__all__ = sorted([*_PUBLIC, "__version__"])


def __getattr__(name):
    try:
        module, attr = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'gmm_engine' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module, __name__), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
