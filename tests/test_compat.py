"""The private names taken from dependencies: each behind one module, checked against one release."""

import typing

import distributed
import prefect

from flows import config, prefect_compat
from gmm_engine import COVARIANCE_TYPES
from pipeline import distributed_compat


def test_distributed_is_the_release_the_private_name_was_checked_against():
    assert distributed.__version__ == distributed_compat.CHECKED_DISTRIBUTED_VERSION, (
        f"distributed {distributed.__version__} is installed, but pipeline/distributed_compat.py was checked "
        f"against {distributed_compat.CHECKED_DISTRIBUTED_VERSION}: re-check what its docstring lists, then "
        "update CHECKED_DISTRIBUTED_VERSION."
    )
    from contextvars import ContextVar

    assert isinstance(distributed_compat.current_client, ContextVar)


def test_prefect_is_the_release_the_private_name_was_checked_against():
    assert prefect.__version__ == prefect_compat.CHECKED_PREFECT_VERSION, (
        f"Prefect {prefect.__version__} is installed, but flows/prefect_compat.py was checked against "
        f"{prefect_compat.CHECKED_PREFECT_VERSION}: re-check what its docstring lists, then update "
        "CHECKED_PREFECT_VERSION."
    )
    assert prefect_compat.validate_cron_string("*/5 * * * *") == "*/5 * * * *"


def test_config_takes_the_covariance_names_from_the_registry():
    assert typing.get_args(config.CovarianceType) == COVARIANCE_TYPES
    assert tuple(config.GridConfig().covariance_types) == COVARIANCE_TYPES
