"""Process set-up shared by the CLI and the flows: Prefect home, logging.

Prefect reads its settings when it is imported, so :func:`configure`
must run before the first ``import prefect``; the CLI calls it first.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.workspace import Workspace

#: Prefect settings applied unless the user set them: offline, quiet, patient.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # a fresh SQLite database takes 10-30 s to migrate on a busy 2-core machine
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # send our libraries' log records to the Prefect run logs too
    "PREFECT_LOGGING_EXTRA_LOGGERS": "gmm_engine,pipeline,flows",
    "PREFECT_UI_ENABLED": "false",
    # distributed configures its own loggers at import (INFO); scheduler and
    # worker processes inherit this too
    "DASK_LOGGING__DISTRIBUTED": "warning",
}


def configure(workdir: str | Path | None = None, *, verbose: bool = False) -> None:
    """Point Prefect at ``<workdir>/prefect`` (SQLite) unless PREFECT_HOME is set, and set up logging."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if workdir is not None and "PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ:
        home = Workspace(workdir).prefect_home
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("gmm_engine", "pipeline", "flows"):
        logging.getLogger(name).setLevel(level)
