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
    # they also log outside any flow run (a kept server's start-up): those records stay in the
    # terminal, without Prefect's warning that they cannot go to a run's logs
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "PREFECT_UI_ENABLED": "false",
    # distributed configures its own loggers at import (INFO); scheduler and
    # worker processes inherit this too
    "DASK_LOGGING__DISTRIBUTED": "warning",
}


#: ``GMM_STREAM_PREFECT=ephemeral``: Prefect's temporary server per command instead of the kept one
PREFECT_MODE_VARIABLE = "GMM_STREAM_PREFECT"


def _set_prefect_defaults(env) -> None:
    for key, value in PREFECT_DEFAULTS.items():
        env.setdefault(key, value)


def kept_server_env(home: str | Path, api_url: str, env=None) -> dict[str, str]:
    """The environment of a command run against the kept server of ``home``.

    ``env`` (default: this process's) with :data:`PREFECT_DEFAULTS` where
    unset, ``PREFECT_HOME`` (absolute) and ``PREFECT_API_URL``.  The one
    definition for a command's own set-up (:func:`configure`), for
    ``gmm server start``, which launches the warm runner with it, and for
    the runner's prediction of a command's settings
    (:func:`flows.warm_runner.command_import_env`): where they disagreed
    the runner would refuse every command.
    """
    out = dict(os.environ if env is None else env)
    _set_prefect_defaults(out)
    out["PREFECT_HOME"] = str(Path(home).absolute())
    out["PREFECT_API_URL"] = api_url
    return out


def _import_prefect(api_url: str) -> None:
    """Import Prefect and its flow engine, pointed at ``api_url``, while that server starts.

    The command imports them next anyway (1-2 s here); done beside the
    server's start-up they cost the first command nothing.  An import that
    fails here fails again, with its traceback, where the command imports it.
    """
    os.environ["PREFECT_API_URL"] = api_url
    try:
        import prefect  # noqa: F401
        import prefect.flow_engine  # noqa: F401
        import prefect.task_engine  # noqa: F401
    except Exception:  # noqa: BLE001 - reported by the command's own import
        logging.getLogger(__name__).debug("warm import of prefect failed", exc_info=True)


def _beside_server(home: Path):
    """``meanwhile(api_url, server_pid)`` for the kept server's start: the warm runner, and this command's imports.

    The runner (:mod:`flows.warm_runner`, at a lower CPU priority while it
    imports) is up for the next command; this command imports Prefect
    itself meanwhile and runs in its own process unless the runner is
    already up when the server is.
    """

    def meanwhile(api_url: str, server_pid: int) -> None:
        from . import warm_runner

        try:
            warm_runner.launch(home, server_pid, api_url=api_url)
        except OSError:  # the commands run in their own process all the same
            logging.getLogger(__name__).warning("could not start the warm runner of %s", home, exc_info=True)
        _import_prefect(api_url)

    return meanwhile


#: the Prefect settings (``PREFECT_*`` variables) an already imported Prefect was built from: set by the
#: warm runner, whose forks then rebuild Prefect's settings only when their own differ
imported_prefect_env: dict | None = None


def _refresh_prefect_settings() -> None:
    """Where Prefect is already imported (a fork of the warm runner), make it read the settings just set."""
    import sys

    global imported_prefect_env
    context = sys.modules.get("prefect.context")
    if context is None:
        return
    from .warm_runner import import_env

    env = import_env()
    if env != imported_prefect_env:  # rebuilding them costs ~0.25 s
        context.refresh_global_settings_context()
        imported_prefect_env = env


def configure(workdir: str | Path | None = None, *, verbose: bool = False, keep_server: bool = True) -> str | None:
    """Point Prefect at the work directory's server (or its home), and set up logging.

    With ``PREFECT_API_URL`` set, that server is used.  Otherwise, with
    ``keep_server`` (the CLI's default), the work directory's kept server
    (:mod:`flows.kept_server`) is found or started and used, with the warm
    runner beside it (:mod:`flows.warm_runner`); with
    ``GMM_STREAM_PREFECT=ephemeral`` or without ``keep_server``, Prefect's
    temporary server runs on ``<workdir>/prefect`` for this process.

    Returns
    -------
    str or None
        A line for the person at the terminal when a server was started now.
    """
    _set_prefect_defaults(os.environ)
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("gmm_engine", "pipeline", "flows"):
        logging.getLogger(name).setLevel(level)
    if workdir is None or "PREFECT_HOME" in os.environ or "PREFECT_API_URL" in os.environ:
        return None
    home = Workspace(workdir).prefect_home
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home.absolute())
    if not keep_server or os.environ.get(PREFECT_MODE_VARIABLE, "").lower() == "ephemeral":
        return None
    from . import kept_server

    try:
        server, started = kept_server.ensure(home, _beside_server(home))
    except BaseException:
        from . import warm_runner

        os.environ.pop("PREFECT_API_URL", None)  # set for the warm imports; that server is not there
        warm_runner.stop(home)  # launched beside a server that did not come up
        raise
    os.environ.update(kept_server_env(home, server.api_url))
    _refresh_prefect_settings()
    from . import warm_runner

    try:
        warm_runner.ensure(home, server.pid)
    except OSError:  # the command runs in its own process all the same
        logging.getLogger(__name__).warning("could not start the warm runner of %s", home, exc_info=True)
    if started:
        return (f"Started a Prefect server for {Path(workdir).absolute()} at {server.api_url} (kept for the next "
                "commands; `gmm server stop` stops it).")
    return None
