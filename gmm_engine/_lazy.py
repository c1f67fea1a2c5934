"""Modules imported when one of their names is first used.

``from gmm_engine import COVARIANCE_TYPES`` (the command line's config)
needs the covariance registry's names, not the numba kernels or scipy's
linear algebra behind its methods, which cost ~0.4 s to import.
"""

from __future__ import annotations

import importlib


class _OnFirstUse:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self):
        return f"<module {self._name!r}, imported on first use>"


def on_first_use(name: str):
    """A stand-in for module ``name`` that imports it when an attribute is first read."""
    return _OnFirstUse(name)
