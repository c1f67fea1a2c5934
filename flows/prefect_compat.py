"""Every private name the flows take from Prefect, in one place.

A cron schedule in ``gmm serve``'s config is checked with Prefect's own
validator when the config is read, seconds before a server would refuse it
(or minutes, when the server has to start first).  The validator lives in
``prefect._internal``, which Prefect does not promise to keep: it is
imported here and nowhere else, and ``tests/test_compat.py`` checks that
the installed Prefect is the release it was checked against.

On an upgrade, re-check that ``validate_cron_string(text)`` still returns
the string or raises ``ValueError`` with Prefect's message, then update
:data:`CHECKED_PREFECT_VERSION`.
"""

from __future__ import annotations

#: the Prefect release the name below was checked against
CHECKED_PREFECT_VERSION = "3.8.8"


def validate_cron_string(text: str) -> str:
    """Prefect's check of a cron schedule (imported on use: Prefect is slow to import)."""
    from prefect._internal.schemas.validators import validate_cron_string as check

    return check(text)


__all__ = ["CHECKED_PREFECT_VERSION", "validate_cron_string"]
