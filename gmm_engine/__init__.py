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
from .mixture import GaussianMixture, open_zarr_array  # noqa: E402


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
    "ComponentCollapseError",
    "ConvergenceWarning",
    "DataValidationError",
    "EMState",
    "GMMParams",
    "GaussianMixture",
    "InvalidParameterError",
    "ModelFormatError",
    "NotFittedError",
    "load_model",
    "open_zarr_array",
    "read_model_document",
]
