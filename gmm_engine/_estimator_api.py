"""scikit-learn's estimator protocol, for every estimator of the engine.

scikit-learn is not a runtime dependency, so its ``BaseEstimator`` is not
available to inherit from; :class:`EstimatorAPI` is the part of it that
``clone``, ``GridSearchCV``, pipelines and ``check_estimator`` rely on:

* the constructor parameters are the keyword arguments of ``__init__``,
  stored unchanged under their own names (validated at ``fit``);
* ``get_params`` / ``set_params`` read and write exactly those;
* ``repr`` shows the parameters that differ from their defaults, sorted,
  as scikit-learn prints them;
* ``__sklearn_tags__`` says what kind of estimator it is (only
  scikit-learn calls it, so it may import scikit-learn).
"""

from __future__ import annotations

import inspect

import numpy as np


class EstimatorAPI:
    """Base class: parameters from ``__init__``'s signature, scikit-learn's protocol over them."""

    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self")

    def get_params(self, deep=True):
        """Parameters of this estimator, as scikit-learn's ``get_params``."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set parameters, as scikit-learn's ``set_params``; returns self."""
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(
                    f"Invalid parameter {key!r} for estimator {self}. Valid parameters "
                    f"are: {valid!r}."
                )
            setattr(self, key, value)
        return self

    def __repr__(self):
        defaults = {
            p.name: p.default
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.name != "self"
        }
        changed = []
        for name in defaults:  # signature order, as scikit-learn prints
            value = getattr(self, name)
            default = defaults[name]
            same = value is default or (
                not isinstance(value, np.ndarray)
                and not isinstance(default, np.ndarray)
                and type(value) is type(default)
                and value == default
            )
            if not same:
                changed.append((name, value))
        changed.sort(key=lambda kv: kv[0])
        args = ", ".join(f"{k}={v!r}" for k, v in changed)
        return f"{type(self).__name__}({args})"

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, so it is importable here.  Every
        # estimator of the engine is a density estimator.
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(
            estimator_type="density_estimator",
            target_tags=TargetTags(required=False),
            input_tags=InputTags(),
        )
