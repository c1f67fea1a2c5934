"""The fitted state of an estimator: written in one place, read back checked.

The fitted attributes are scikit-learn's: ``weights_``, ``means_``,
``covariances_``, ``precisions_cholesky_``, ``precisions_``,
``n_features_in_``, ``feature_names_in_`` (only for named input),
``converged_``, ``n_iter_``, ``lower_bound_`` and ``lower_bounds_``, plus
``n_passes_`` (passes over the data, initialisation included),
``online_state_`` (the running state of ``partial_fit``: an
:class:`~gmm_engine._online.OnlineState`, or None) and
``_fitted_covariance_type``, the type the arrays have (``set_params``
after a fit changes what the next fit does, not what the arrays are).

* :func:`set_fitted` is the only writer.  ``fit``, ``resume``,
  ``initialize``, ``partial_fit`` and ``partial_fit_statistics``, a
  checkpoint (``checkpoint.estimator_from_state``) and a loaded model
  (``_persist.load_model``) all set the attributes from an
  :class:`~gmm_engine.EMState` (and the running state), so the
  parameters, the feature count and names, the history and the running
  statistics always describe one model, and a failed fit or step leaves
  the previous one whole.
* :func:`fitted_params` reads the arrays back as :class:`GMMParams`,
  checked against each other: the kernels do no bounds checks, so an
  attribute replaced after the fit must fail here, not read past an array.
* :func:`em_state` reads the whole state back as an ``EMState``: what a
  checkpoint holds and where EM continues from.
* ``BayesianGaussianMixture`` has the same Gaussian attributes and
  history, plus its posterior (``weight_concentration_``,
  ``mean_precision_``, ``degrees_of_freedom_``) and priors (``*_prior_``):
  :func:`set_fitted_variational` writes them all, :func:`fitted_variational`
  reads the posterior back checked.
"""

from __future__ import annotations

import math

import numpy as np

from . import _covariance, _variational
from ._em import EMState
from ._params import GMMParams


def set_fitted(est, state: EMState, names=None, online=None):
    """Set every fitted attribute of ``est`` from ``state``; returns ``est``.

    Parameters
    ----------
    est : estimator
    state : EMState
        Its parameters, iteration count, lower bound(s), convergence and
        pass count.
    names : sequence of str, optional
        The input's feature names; None removes ``feature_names_in_``.
    online : OnlineState, optional
        The running statistics of ``partial_fit`` (``online_state_``);
        None when there are none.
    """
    _set_gaussian(est, state.params, names)
    _set_history(est, state)
    est.online_state_ = online
    return est


def _set_gaussian(est, params: GMMParams, names) -> None:
    """The mixture's arrays, its feature count and names (shared by both estimators)."""
    est._fitted_covariance_type = params.covariance_type
    est.weights_ = params.weights
    est.means_ = params.means
    est.covariances_ = params.covariances
    est.precisions_cholesky_ = params.precisions_cholesky
    est.precisions_ = params.precisions
    est.n_features_in_ = int(params.n_features)
    if names is not None:
        est.feature_names_in_ = np.asarray(list(names), dtype=object)
    elif hasattr(est, "feature_names_in_"):
        del est.feature_names_in_


def _set_history(est, state) -> None:
    """Convergence, iteration count, lower bounds and passes of an EM or variational state."""
    est.converged_ = bool(state.converged)
    est.n_iter_ = int(state.n_iter)
    est.lower_bound_ = float(state.lower_bound)
    est.lower_bounds_ = [float(v) for v in state.lower_bounds]
    est.n_passes_ = int(state.n_passes)


def fitted_covariance_type(est) -> str:
    """The covariance type the fitted parameters have.

    ``set_params(covariance_type=...)`` after a fit changes what the next
    fit does, not what ``covariances_`` and ``precisions_cholesky_`` are:
    scoring, sampling and parameter counts use the type they were fitted
    with (scikit-learn reads them with the new type and fails or returns
    NaN).
    """
    return getattr(est, "_fitted_covariance_type", est.covariance_type)


def _numeric_arrays(est, attrs) -> dict:
    arrays = {"covariances_": np.empty(0)}  # not read by the kernels
    for attr in attrs:
        value = getattr(est, attr)
        try:
            arrays[attr] = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"The fitted attribute {attr} of this {type(est).__name__} is not a "
                f"numeric array ({exc}). Refit the model, or restore the attribute."
            ) from None
    return arrays


def fitted_params(est, *, covariances=True) -> GMMParams:
    """The fitted parameters of ``est``, checked against each other before any kernel reads them.

    ``covariances=False`` skips ``covariances_``, which scoring does not
    use (the returned ``covariances`` is then empty).

    Raises
    ------
    ValueError
        An attribute is not numeric, or the shapes disagree (with each
        other, ``n_features_in_`` or the fitted covariance type); the
        message says which and how to fix it.
    """
    ctype = fitted_covariance_type(est)
    cov = _covariance.get(ctype)
    names = ("weights_", "means_", "precisions_cholesky_") + (("covariances_",) if covariances else ())
    arrays = _numeric_arrays(est, names)
    weights, means = arrays["weights_"], arrays["means_"]
    K = weights.shape[0] if weights.ndim == 1 else None
    D = getattr(est, "n_features_in_", means.shape[1] if means.ndim == 2 else None)
    checks = [("weights_", (K,)), ("means_", (K, D)), ("precisions_cholesky_", None)]
    if covariances:
        checks.append(("covariances_", None))
    problems = []
    if K is None:
        problems.append(f"weights_ has shape {weights.shape}, expected (n_components,)")
    else:
        for attr, shape in checks:
            shape = shape or cov.param_shape(K, D)
            if arrays[attr].shape != shape:
                problems.append(f"{attr} has shape {arrays[attr].shape}, expected {shape}")
    if problems:
        raise ValueError(
            f"The fitted parameters of this {type(est).__name__} do not agree with each "
            f"other: {'; '.join(problems)} (for {K or 'n_components'} components, {D} "
            f"features and covariance_type={ctype!r}, the type they were fitted with). An attribute "
            "was changed after fitting: refit the model, or set all of weights_, "
            "means_, covariances_ and precisions_cholesky_ consistently."
        )
    return GMMParams(ctype, weights, means, arrays["covariances_"], arrays["precisions_cholesky_"])


def em_state(est) -> EMState:
    """The :class:`EMState` of a fitted estimator, its parameters checked.

    An estimator with ``n_iter_ == 0`` holds a start (``initialize``, or a
    fit with ``max_iter=0``): its state has ``lower_bound=-inf``, as every
    start of EM has, whatever ``lower_bound_`` says (``initialize`` records
    the initial mean log-likelihood there), so that the first iteration
    from it is never taken for convergence.
    """
    lbs = tuple(float(v) for v in est.lower_bounds_)
    return EMState(
        params=fitted_params(est),
        n_iter=int(est.n_iter_),
        lower_bound=float(est.lower_bound_) if est.n_iter_ else -math.inf,
        lower_bounds=lbs,
        change=(lbs[-1] - lbs[-2]) if len(lbs) > 1 else float("nan"),
        converged=bool(est.converged_),
        n_passes=int(getattr(est, "n_passes_", 0)),
    )


# ---------------------------------------------------------------------------
# BayesianGaussianMixture: the variational posterior and the priors


def set_fitted_variational(est, state, prior, names=None):
    """Set every fitted attribute of a ``BayesianGaussianMixture`` from a variational state; returns ``est``.

    Parameters
    ----------
    est : BayesianGaussianMixture
    state : VariationalState
        Its posterior (:class:`~gmm_engine._variational.VariationalParams`),
        iteration count, lower bound(s), convergence and pass count.
    prior : VariationalPrior
        The priors of the fit (the ``*_prior_`` attributes).
    names : sequence of str, optional
        The input's feature names; None removes ``feature_names_in_``.
    """
    vp = state.params
    _set_gaussian(est, vp.gaussian, names)
    _set_history(est, state)
    est._fitted_weight_concentration_prior_type = vp.prior_type
    est.weight_concentration_ = _variational.WEIGHT_PRIORS[vp.prior_type].as_attribute(vp.weight_concentration)
    est.mean_precision_ = np.array(vp.mean_precision, dtype=np.float64)
    dof = vp.degrees_of_freedom
    est.degrees_of_freedom_ = float(dof) if np.ndim(dof) == 0 else np.array(dof, dtype=np.float64)
    est.weight_concentration_prior_ = prior.weight_concentration
    est.mean_precision_prior_ = prior.mean_precision
    est.mean_prior_ = np.array(prior.mean, dtype=np.float64)
    est.degrees_of_freedom_prior_ = prior.degrees_of_freedom
    est.covariance_prior_ = prior.covariance if np.ndim(prior.covariance) == 0 else np.array(prior.covariance)
    return est


def fitted_variational(est, *, covariances=True):
    """The variational posterior of a fitted ``BayesianGaussianMixture``, checked as :func:`fitted_params` checks.

    Raises
    ------
    ValueError
        An attribute is not numeric, or its shape disagrees with the
        others; the message says which and how to fix it.
    """
    gaussian = fitted_params(est, covariances=covariances)
    prior_type = getattr(est, "_fitted_weight_concentration_prior_type", est.weight_concentration_prior_type)
    K = gaussian.n_components
    arrays = _numeric_arrays(est, ("weight_concentration_", "mean_precision_", "degrees_of_freedom_"))
    expected = {
        "weight_concentration_": _variational.WEIGHT_PRIORS[prior_type].concentration_shape(K),
        "mean_precision_": (K,),
        "degrees_of_freedom_": _covariance.get(gaussian.covariance_type).dof_shape(K),
    }
    problems = [f"{attr} has shape {arrays[attr].shape}, expected {shape}"
                for attr, shape in expected.items() if arrays[attr].shape != shape]
    if problems:
        raise ValueError(
            f"The fitted parameters of this {type(est).__name__} do not agree with each other: "
            f"{'; '.join(problems)} (for {K} components, covariance_type={gaussian.covariance_type!r} "
            f"and weight_concentration_prior_type={prior_type!r}, the ones they were fitted with). "
            "An attribute was changed after fitting: refit the model."
        )
    dof = arrays["degrees_of_freedom_"]
    return _variational.VariationalParams(
        prior_type, gaussian, arrays["weight_concentration_"], arrays["mean_precision_"],
        float(dof) if dof.ndim == 0 else dof,
    )
