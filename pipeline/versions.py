"""Names of registered model versions: ``<UTC time>-<first 8 hex digits of the checksum>``.

Kept apart from the registry so that the command line can recognise a
version name without importing the engine.
"""

from __future__ import annotations

import re

#: the name of a registered version, e.g. ``20261202T043305319914Z-0e4870d7``
VERSION_PATTERN = re.compile(r"^\d{8}T\d{6}(\d{6})?Z-[0-9a-f]{8}$")


def is_version_name(name) -> bool:
    """Whether ``name`` has the form of a registered version."""
    return bool(VERSION_PATTERN.match(str(name)))
