"""A supervised local Prefect server on loopback.

Prefect's temporary (ephemeral) server runs flows but never schedules
them, so a served deployment needs a real server.  :class:`LocalPrefectServer`
starts ``prefect server start`` bound to 127.0.0.1 with its SQLite
database under a work directory's ``prefect/``, waits until it is healthy,
restarts it if it dies, and stops it on exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from . import prefect_database

logger = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    """The local Prefect server did not become healthy."""


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def server_env(home: Path) -> dict:
    """The environment of a local server: its home, offline, no UI, no outside API URL."""
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "false",
    })
    return env


def launch(home: Path, host: str, port: int) -> subprocess.Popen:
    """Start ``prefect server start`` on ``host:port`` in its own session, logging to ``home/server.log``."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    prefect = Path(sys.executable).with_name("prefect")
    cmd = [str(prefect) if prefect.exists() else "prefect", "server", "start", "--host", host, "--port", str(port)]
    with open(home / "server.log", "ab") as log:  # the server has its own copy of the descriptor
        return subprocess.Popen(cmd, env=server_env(home), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_healthy(proc: subprocess.Popen, api_url: str, home: Path, timeout: float) -> None:
    """Return once ``api_url`` answers /health; ServerStartError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"prefect server exited with code {proc.returncode}; see {Path(home) / 'server.log'}")
        if healthy(api_url):
            logger.info("Prefect server healthy at %s (database under %s)", api_url, home)
            return
        time.sleep(0.25)
    raise ServerStartError(
        f"prefect server did not answer {api_url}/health within {timeout:g} s; see {Path(home) / 'server.log'}"
    )


def start_server(home: Path, host: str, port: int, timeout: float, meanwhile=None,
                 on_launch=None) -> subprocess.Popen:
    """``prefect server start`` on ``host:port`` with its database under ``home``, returned once it answers.

    The database starts as a copy of a migrated one when the user's cache
    holds one, and a fresh one is kept there (:mod:`flows.prefect_database`).
    ``meanwhile(api_url, server_pid)``, if given, runs in a thread while the
    server comes up and is waited for before this returns.
    ``on_launch(proc)``, if given, is called as soon as the process exists
    (a supervisor that may be stopped meanwhile must know it); whatever it
    raises stops the start.  A server that does not come up, or whose start
    is interrupted or fails at any point before this returns, is stopped:
    nothing else knows of it yet.

    Raises
    ------
    ServerStartError
        The process exited, or did not answer within ``timeout`` seconds.
    """
    api_url = f"http://{host}:{port}/api"
    proc = None
    try:
        with prefect_database.server_start(home, ServerStartError):
            proc = launch(home, host, port)
            side = None
            try:
                if on_launch is not None:
                    on_launch(proc)
                if meanwhile is not None:
                    side = threading.Thread(target=meanwhile, args=(api_url, proc.pid), name="gmm-beside-server",
                                            daemon=True)
                    side.start()
                try:
                    wait_healthy(proc, api_url, home, timeout)
                finally:
                    if side is not None:
                        side.join()
            except BaseException:
                stop_child(proc)  # before server_start drops a copied database it would still hold open
                raise
    except BaseException:  # also what follows the health check: keeping the database, Ctrl-C
        if proc is not None:
            stop_child(proc)
        raise
    return proc


def stop_child(proc: subprocess.Popen) -> None:
    """:func:`terminate` a server this process started, and reap it (no zombie left behind)."""
    terminate(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def terminate(pid: int, timeout: float = 20.0) -> None:
    """Stop the server whose process group ``pid`` leads: SIGTERM, and SIGKILL after ``timeout`` seconds."""
    from .warm_runner import process_alive

    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def free_port(host: str = "127.0.0.1", start: int = 4200, tries: int = 200) -> int:
    """The first free port from ``start`` on ``host``."""
    for port in range(start, start + tries):
        if port_free(host, port):
            return port
    raise ServerStartError(f"no free port on {host} in {start}..{start + tries - 1} for a Prefect server")


class LocalPrefectServer:
    """A supervised ``prefect server start`` on loopback.

    Parameters
    ----------
    home : path
        PREFECT_HOME of the server (its SQLite database and logs).
    host : str
        Bind address; loopback by default so nothing outside this machine
        reaches the API.
    port : int
    startup_timeout : float
        Seconds to wait for ``/api/health``.
    """

    def __init__(self, home, host: str = "127.0.0.1", port: int = 4200, startup_timeout: float = 180.0):
        self.home = Path(home)
        self.host, self.port = host, port
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    def _launch(self) -> None:
        start_server(self.home, self.host, self.port, self.startup_timeout, on_launch=self._launched)

    def _launched(self, proc: subprocess.Popen) -> None:
        # known at once, so that stop() during a (re)start terminates this process, not the last one
        self.proc = proc
        if self._stop.is_set():
            raise ServerStartError("the Prefect server was stopped while it started")

    def start(self) -> "LocalPrefectServer":
        if healthy(self.api_url):
            raise ServerStartError(
                f"Something already answers at {self.api_url}: set PREFECT_API_URL={self.api_url} "
                "to use it, or choose another server_port."
            )
        if not port_free(self.host, self.port):
            raise ServerStartError(
                f"Port {self.port} on {self.host} is in use: choose another server_port in the serve config."
            )
        self._launch()
        self._watcher = threading.Thread(target=self._watch, name="prefect-server-watch", daemon=True)
        self._watcher.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(2.0):
            if self.proc is not None and self.proc.poll() is not None:
                self.restarts += 1
                logger.warning("Prefect server exited (code %s); restarting (restart %d)",
                               self.proc.returncode, self.restarts)
                try:
                    self._launch()
                except ServerStartError:
                    if self._stop.is_set():
                        return
                    logger.exception("could not restart the Prefect server")
                    self._stop.wait(min(30, 2 ** self.restarts))

    def _terminate(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_child(self.proc)

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self._terminate()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
