"""gmm_engine: out-of-core EM for Gaussian mixtures on Dask.

The library layer of gmm-stream.  It imports neither ``pipeline``,
``flows`` nor Prefect.

>>> from gmm_engine import GaussianMixture
>>> gm = GaussianMixture(n_components=3).fit("data.zarr")   # doctest: +SKIP
>>> labels = gm.predict(dask_array)                          # lazy  # doctest: +SKIP
"""

__version__ = "0.1.0"

from ._em import EMState  # noqa: E402
from ._params import GMMParams  # noqa: E402
from ._persist import read_model_document  # noqa: E402
from .exceptions import (  # noqa: E402
    ComponentCollapseError,
    ConvergenceWarning,
    DataValidationError,
    InvalidParameterError,
    ModelFormatError,
    NotFittedError,
)
from ._covariance import NAMES as COVARIANCE_TYPES  # noqa: E402
from ._covariance import full_covariances  # noqa: E402
from .mixture import GaussianMixture, InformationCriteria, open_zarr_array, zarr_to_dask  # noqa: E402


def load_model(path):
    """Load a saved model and the metadata stored with it.

    Returns
    -------
    model : GaussianMixture
    metadata : dict
    """
    from ._persist import load_model as _load

    return _load(GaussianMixture, path)


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
    "load_model",
    "open_zarr_array",
    "full_covariances",
    "read_model_document",
    "zarr_to_dask",
]
