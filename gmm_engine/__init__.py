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
"""

from ._covariance import NAMES as COVARIANCE_TYPES
from ._covariance import full_covariances
from ._em import EMState
from ._input import open_zarr_array, zarr_to_dask
from ._params import GMMParams
from ._persist import read_model_document
from ._version import __version__
from .exceptions import (
    ComponentCollapseError,
    ConvergenceWarning,
    DataValidationError,
    InvalidParameterError,
    ModelFormatError,
    NotFittedError,
)
from .mixture import GaussianMixture, InformationCriteria, load_model

__all__ = [
    "COVARIANCE_TYPES",
    "ComponentCollapseError",
    "ConvergenceWarning",
    "DataValidationError",
    "EMState",
    "GMMParams",
    "GaussianMixture",
    "InformationCriteria",
    "InvalidParameterError",
    "ModelFormatError",
    "NotFittedError",
    "__version__",
    "full_covariances",
    "load_model",
    "open_zarr_array",
    "read_model_document",
    "zarr_to_dask",
]
