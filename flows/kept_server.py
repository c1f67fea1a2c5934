"""The Prefect server kept for a work directory, so that commands after the first answer in seconds.

Prefect's temporary server costs every command ~11 s to start (its
database migrations and API come up in each process).  Instead, the first
``gmm`` command in a work directory starts ``prefect server start`` on a
free loopback port with its SQLite database in ``<workdir>/prefect``
(the same database the temporary server used, so the run history is kept),
detached from the command, and records it in ``<workdir>/prefect/server.json``.
Later commands find it there, check that it answers, and point
``PREFECT_API_URL`` at it.  ``gmm server stop`` stops it; ``gmm server
status`` says whether it runs.

A server that died, or a state file whose process is gone, is replaced by
a new one on the next command.  With ``PREFECT_API_URL`` set (a team's
server) nothing is started; ``GMM_STREAM_PREFECT=ephemeral`` keeps
Prefect's temporary server per command, as the test suite does.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from .prefect_server import free_port, healthy, start_server, stop_child, terminate
from .warm_runner import process_alive as _alive

logger = logging.getLogger(__name__)

STATE_FILE = "server.json"
HOST = "127.0.0.1"
#: a fresh SQLite database takes ~11 s to migrate here; a busy machine needs more
STARTUP_TIMEOUT = 180.0


@dataclass(frozen=True)
class KeptServer:
    """A running server of a work directory, as recorded in its state file."""

    pid: int
    host: str
    port: int
    started_at: str

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"


def _state_path(home: Path) -> Path:
    return Path(home) / STATE_FILE



def find(home: Path) -> KeptServer | None:
    """The work directory's server if it runs and answers; None otherwise (a stale record is removed)."""
    path = _state_path(home)
    if not path.is_file():
        return None
    try:
        server = KeptServer(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        server = None
    if server is not None and _alive(server.pid) and healthy(server.api_url, timeout=1.0):
        return server
    path.unlink(missing_ok=True)
    return None


def start(home: Path, meanwhile=None) -> KeptServer:
    """Start a server for the work directory whose Prefect home is ``home``, detached; record it.

    ``meanwhile(api_url, server_pid)``, if given, runs in a thread while
    the server comes up (~11 s on a fresh database): the launch of the warm
    runner, whose imports would otherwise wait for it.  It is waited for
    before this returns.
    A new database starts as a copy of a migrated one when the user's cache
    holds one, and the first fresh one is kept there
    (:mod:`flows.prefect_database`).
    """
    from gmm_engine.atomic import write_json

    home = Path(home)
    port = free_port(HOST)
    proc = start_server(home, HOST, port, STARTUP_TIMEOUT, meanwhile)
    server = KeptServer(proc.pid, HOST, port, _dt.datetime.now(_dt.timezone.utc).isoformat())
    try:
        write_json(_state_path(home), asdict(server))
    except BaseException:  # a server no state file records could never be found, or stopped, again
        stop_child(proc)
        raise
    return server


def ensure(home: Path, meanwhile=None) -> tuple[KeptServer, bool]:
    """The running server of the work directory, started if needed (see :func:`start`); (server, started now)."""
    server = find(home)
    if server is not None:
        return server, False
    return start(home, meanwhile), True


def stop(home: Path) -> KeptServer | None:
    """Stop the work directory's server; the one stopped, or None if none ran."""
    from . import warm_runner

    warm_runner.stop(home)
    server = find(home)
    if server is not None:
        terminate(server.pid)
    _state_path(home).unlink(missing_ok=True)
    return server
