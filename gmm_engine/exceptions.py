"""Exceptions and warnings raised by gmm_engine.

scikit-learn is not a runtime dependency, yet users who already use it
catch ``sklearn.exceptions.NotFittedError`` or filter
``sklearn.exceptions.ConvergenceWarning``.  When scikit-learn has been
imported by the caller, the raised objects are built from a class that
derives from both ours and scikit-learn's, so either ``except`` clause
works.  Importing scikit-learn ourselves would cost ~1.5 s per process,
so we only look at what is already in ``sys.modules``.
"""

from __future__ import annotations

import sys
from functools import lru_cache

__all__ = [
    "ConvergenceWarning",
    "DataValidationError",
    "InvalidParameterError",
    "ModelFormatError",
    "NotFittedError",
    "ComponentCollapseError",
]


class NotFittedError(ValueError, AttributeError):
    """Raised when a method needs a fitted estimator and ``fit`` has not run."""


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the lower bound changed less than ``tol``."""


class InvalidParameterError(ValueError, TypeError):
    """A constructor parameter has a wrong type or value."""


class DataValidationError(ValueError):
    """The input data cannot be used as is (NaN, inf, wrong shape or dtype)."""


class ComponentCollapseError(ValueError):
    """A covariance stopped being positive definite during EM."""


class ModelFormatError(ValueError):
    """A saved model directory is missing, corrupt, tampered with or foreign."""


_SKLEARN_TWINS = {
    "NotFittedError": ("sklearn.exceptions", "NotFittedError"),
    "ConvergenceWarning": ("sklearn.exceptions", "ConvergenceWarning"),
}


@lru_cache(maxsize=None)
def _twin(cls: type, sk_module: str, sk_name: str) -> type:
    module = sys.modules.get(sk_module)
    sk_cls = getattr(module, sk_name, None) if module is not None else None
    if sk_cls is None or issubclass(cls, sk_cls):
        return cls
    return type(cls.__name__, (cls, sk_cls), {"__module__": cls.__module__})


def compatible(cls: type) -> type:
    """Return ``cls`` or, when scikit-learn is loaded, a subclass of ``cls`` and its twin.

    Parameters
    ----------
    cls : type
        One of this module's exception or warning classes.

    Returns
    -------
    type
        The class to instantiate when raising or warning.
    """
    twin = _SKLEARN_TWINS.get(cls.__name__)
    if twin is None:
        return cls
    module = sys.modules.get(twin[0])
    if module is None:
        return cls
    return _twin(cls, *twin)
