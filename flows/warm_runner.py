"""A warm process kept beside a work directory's Prefect server, from which later commands fork.

A ``gmm`` command spends most of its seconds on small data importing
(Prefect ~2 s, Dask, Zarr, matplotlib, numba's compiled kernels) before it
does anything.  With the kept server (:mod:`flows.kept_server`) running,
the first command also starts this runner: a detached process that
imports all of that once, loads the compiled kernels and draws one figure,
then waits on a Unix socket in the Prefect home.  A later command, once
its config and preflight checks passed, hands the runner its arguments,
working directory, environment and its three standard streams (file
descriptors passed over the socket); the runner forks, and the child runs
the very same command (``flows.cli``) on those streams, with that
environment, in a process group of its own: the flows, their records on
the server, the logs and the progress bars are those of a command run
in-process.  The command waits for the child's exit code and passes
Ctrl-C on to it.

The fork is taken only when it is safe and means the same: the runner
holds no thread but its main one when it forks (checked before serving),
its code is the code the command would import (a fingerprint of every
module file of ``flows``, ``pipeline`` and ``gmm_engine``, and the
interpreter), and the environment Prefect read at import is the
command's (the ``PREFECT_*`` variables, as the command's set-up makes
them; should they differ there after all, the fork rebuilds Prefect's
settings from its own).  Otherwise, or when the runner
does not answer, the command runs in its own process as before, and a
runner of stale code is replaced.  The runner ends with its server
(``gmm server stop``, or the server's death); a work directory deleted
while they run (``rm -rf``) takes both down: the runner stops the server,
which nothing could find or stop any more, and ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

STATE_FILE = "runner.json"
SOCKET_FILE = "runner.sock"
LOG_FILE = "runner.log"
#: the packages whose code a forked command runs
PACKAGES = ("flows", "pipeline", "gmm_engine")
#: environment variables Prefect (or the runner's imports) read when imported
IMPORT_ENV_PREFIXES = ("PREFECT_",)
#: seconds between looks at whether the work directory still exists
HOME_CHECK_INTERVAL = 1.0
#: how long a command waits for the runner to fork it before running in its own process
CONNECT_TIMEOUT = 2.0
#: how long ``gmm server start`` waits for the runner launched beside the server
STARTUP_WAIT = 60.0
#: a request larger than this is not a command line
MAX_REQUEST = 1 << 20


# ---------------------------------------------------------------------------
# what a command and the runner agree on


def fingerprint(root: Path | None = None) -> str:
    """The code a command would run: the interpreter and every module file of :data:`PACKAGES` (path, size, mtime).

    ``root`` holds the packages (default: this checkout).
    """
    root = Path(__file__).resolve().parents[1] if root is None else Path(root)
    h = hashlib.sha256(f"{sys.executable}\0{sys.version}".encode())
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            st = path.stat()
            h.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def import_env(env=None) -> dict:
    """The variables of ``env`` (default ``os.environ``) read at import, which a fork inherits from the runner."""
    env = os.environ if env is None else env
    out = {k: v for k, v in sorted(env.items()) if k.startswith(IMPORT_ENV_PREFIXES)}
    if "PREFECT_HOME" in out:  # one directory, however the command spelled its work directory
        out["PREFECT_HOME"] = os.path.realpath(out["PREFECT_HOME"])
    return out


def socket_path(home: Path) -> str:
    """``<home>/runner.sock``, or a short name in the temporary directory when that path is too long for a socket."""
    path = str(Path(home).absolute() / SOCKET_FILE)
    if len(path.encode()) <= 100:
        return path
    digest = hashlib.sha256(str(Path(home).absolute()).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"gmm-runner-{digest}.sock")


def _state_path(home: Path) -> Path:
    return Path(home) / STATE_FILE


def _read_state(home: Path) -> dict | None:
    try:
        state = json.loads(_state_path(home).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("pid"), int) else None


def process_alive(pid: int) -> bool:
    """The process runs (a zombie, which an init that does not reap leaves behind, does not)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # "pid (comm) state ...": the state follows the last ')'
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc: os.kill said it exists


# ---------------------------------------------------------------------------
# lifecycle, from the command's side


def ensure(home: Path, server_pid: int) -> None:
    """Start the runner of ``home`` (detached) unless one of the current code runs for this server."""
    state = _read_state(home)
    if state is not None and process_alive(state["pid"]):
        if (state.get("server_pid") == server_pid and state.get("fingerprint") == fingerprint()
                and state.get("env") == import_env()):
            return
        stop(home)
    elif state is not None:
        _state_path(home).unlink(missing_ok=True)
    launch(home, server_pid)


def launch(home: Path, server_pid: int, api_url: str | None = None) -> subprocess.Popen:
    """Start ``python -m flows.warm_runner`` for ``home`` in a session of its own; its log is ``<home>/runner.log``.

    ``api_url`` is the server's (default: this process's ``PREFECT_API_URL``),
    given while the server still comes up.
    """
    home = Path(home)
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    with open(home / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.warm_runner", str(home), str(server_pid)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, close_fds=True,
        )
    # recorded at once (without a socket until it is ready), so that the next command, started
    # while this runner imports, neither launches a second one nor waits for it
    _write_state(home, proc.pid, server_pid, socket=None, env=env)
    return proc


def _write_state(home: Path, pid: int, server_pid: int, socket: str | None, env=None) -> None:
    from gmm_engine.atomic import write_json

    write_json(_state_path(home), {"pid": pid, "server_pid": server_pid, "socket": socket,
                                   "fingerprint": fingerprint(), "env": import_env(env)})


def stop(home: Path, timeout: float = 10.0) -> bool:
    """Stop the runner of ``home`` (commands it forked run on); whether one ran."""
    state = _read_state(home)
    _state_path(home).unlink(missing_ok=True)
    if state is None or not process_alive(state["pid"]):
        return False
    try:
        os.kill(state["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while process_alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process_alive(state["pid"]):
        os.kill(state["pid"], signal.SIGKILL)
    return True


def wait_ready(home: Path, timeout: float) -> bool:
    """Wait until the runner of ``home`` listens (it has imported everything); whether it does."""
    deadline = time.monotonic() + timeout
    while True:
        state = _read_state(home)
        if state is None or not process_alive(state["pid"]):
            return False
        if state.get("socket"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _recv_line(sock: socket.socket, buffer: bytearray) -> dict | None:
    while b"\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(line)


def command_import_env(home: Path, state: dict) -> dict | None:
    """The :func:`import_env` a command would have after :func:`flows.runtime.configure`, or None: no kept server.

    Worked out without configuring (no server check, no import): a command
    delegated before its own set-up has the environment it starts with.
    """
    from .runtime import PREFECT_MODE_VARIABLE, kept_server_env

    if ("PREFECT_HOME" in os.environ or "PREFECT_API_URL" in os.environ
            or os.environ.get(PREFECT_MODE_VARIABLE, "").lower() == "ephemeral"):
        return None  # configure uses no kept server then
    return import_env(kept_server_env(home, (state.get("env") or {}).get("PREFECT_API_URL", "")))


def delegate(home: Path, argv: list[str], *, configured: bool = False, wait: float = 0.0) -> int | None:
    """Run ``gmm argv`` as a fork of the runner of ``home``; its exit code, or None when it could not start there.

    None means nothing ran: no runner, or one of other code (then stopped)
    or other Prefect settings, or one that did not answer in
    :data:`CONNECT_TIMEOUT`.  The fork runs the whole command, its
    preflight checks and set-up included, with this process's environment.

    Parameters
    ----------
    configured : bool
        This process already ran :func:`flows.runtime.configure` (its
        environment is compared as it is); else the environment it would
        have after it.
    wait : float
        Seconds to wait for a runner still importing (launched beside a
        server that just came up); 0: run elsewhere at once.
    """
    state = _read_state(home)
    if state is None or not process_alive(state["pid"]) or not process_alive(state.get("server_pid", -1)):
        return None
    if state.get("fingerprint") != fingerprint():
        logger.debug("the warm runner of %s runs other code: stopping it", home)
        stop(home)
        return None
    if state.get("env") != (import_env() if configured else command_import_env(home, state)):
        return None  # other settings
    if not state.get("socket"):  # still importing
        if not wait_ready(home, wait):
            return None
        state = _read_state(home)
        if state is None:
            return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    buffer = bytearray()
    try:
        sock.connect(state["socket"])
        request = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(sock, [request + b"\n"], [0, 1, 2])
        started = _recv_line(sock, buffer)
    except (OSError, ValueError):
        sock.close()
        return None
    if not started or not isinstance(started.get("pid"), int):
        sock.close()
        return None
    return _wait(sock, buffer, started["pid"])


def _wait(sock: socket.socket, buffer: bytearray, pid: int) -> int:
    """The exit code of the forked command ``pid``, passing Ctrl-C and termination on to its process group."""

    def forward(signum, frame):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    sock.settimeout(None)
    try:
        while True:
            try:
                done = _recv_line(sock, buffer)
                break
            except InterruptedError:  # pragma: no cover - retried by Python itself (PEP 475)
                continue
    except (OSError, ValueError):
        done = None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
    if done is None or not isinstance(done.get("exit"), int):
        # the runner died under the command: wait for the command itself
        while process_alive(pid):
            time.sleep(0.1)
        sys.stderr.write("Error: the warm runner ended before the command reported how it ended.\n")
        return 1
    return done["exit"]


# ---------------------------------------------------------------------------
# the runner


def _preload() -> None:
    """Import what the commands import and load what they load first, so that a fork has it all."""
    import matplotlib

    matplotlib.use("Agg")
    import dask.array  # noqa: F401
    import pyarrow.csv  # noqa: F401 - partitions and ingest sources are read with pyarrow
    import pyarrow.parquet  # noqa: F401
    import zarr  # noqa: F401

    import flows.cli  # noqa: F401
    import flows.demo_flow  # noqa: F401
    import flows.fit_flow  # noqa: F401
    import flows.ingest_flow  # noqa: F401
    import flows.initialize_flow  # noqa: F401
    import flows.score_flow  # noqa: F401
    import flows.select_flow  # noqa: F401
    import prefect.flow_engine  # noqa: F401
    import prefect.task_engine  # noqa: F401
    from gmm_engine import load_kernels
    from pipeline import plots  # noqa: F401

    from flows import runtime

    runtime.imported_prefect_env = import_env()  # what Prefect read: a fork whose own differ rebuilds them
    load_kernels()  # per signature on first call, ~1 s in all
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)


def _redirect(fds: list[int]) -> None:
    """The child's standard streams become the command's: file descriptors, Python streams and log handlers."""
    old = {"stdout": sys.stdout, "stderr": sys.stderr}
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False,
                      encoding=old["stdout"].encoding, errors=old["stdout"].errors)
    sys.stderr = open(2, "w", buffering=1, closefd=False, encoding=old["stderr"].encoding, errors="backslashreplace")
    new = {id(old["stdout"]): sys.stdout, id(old["stderr"]): sys.stderr}
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in lg.handlers:
            stream = getattr(handler, "stream", None)
            if id(stream) in new:
                handler.setStream(new[id(stream)])
            console = getattr(handler, "console", None)
            if console is not None and id(getattr(console, "file", None)) in new:
                console.file = new[id(console.file)]


def _child(listener: socket.socket, conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the fork: become the command (its group, streams, directory, environment), run it, exit with its code."""
    code = 1
    try:
        listener.close()
        conn.close()
        os.setpgid(0, 0)
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _redirect(fds)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        from flows import cli

        sys.argv = ["gmm", *request["argv"]]
        try:
            cli.app(args=request["argv"], prog_name="gmm")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                sys.stderr.write(exc.code + "\n")
        except KeyboardInterrupt:
            code = 130
    except BaseException:  # noqa: BLE001 - reported to the command's terminal
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


#: the runner imports at this lower CPU priority (niceness), so that the command and the server it starts
#: beside keep the cores they need; it takes its priority back before forking commands where it may
PRELOAD_NICENESS = 10


def _set_niceness(value: int) -> bool:
    """This process's niceness, and its session's scheduling group's (Linux autogroups: the runner's own session
    would otherwise compete as a whole with the command's, whatever its niceness); whether it was permitted."""
    try:
        os.nice(value - os.nice(0))
    except PermissionError:
        return False
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(value))
    except FileNotFoundError:  # no autogroups: niceness alone orders the processes
        pass
    except PermissionError:
        return False
    return True


def serve(home: Path, server_pid: int) -> None:
    """Preload, then fork one child per command until the server ``server_pid`` ends or SIGTERM."""
    home = Path(home)
    t0 = time.perf_counter()
    _set_niceness(PRELOAD_NICENESS)
    _preload()
    if not _set_niceness(0):  # lowering it needs the privilege (or RLIMIT_NICE): forks stay nicer
        logger.info("commands forked here run at niceness %d (not permitted to take the priority back)",
                    PRELOAD_NICENESS)
    if threading.active_count() != 1:
        names = ", ".join(t.name for t in threading.enumerate())
        logger.error("threads after the imports (%s): a fork could deadlock; not serving", names)
        return
    state = _read_state(home)
    if state is not None and state["pid"] != os.getpid() and process_alive(state["pid"]):
        logger.info("another runner (%d) serves %s: not serving", state["pid"], home)
        return
    path = socket_path(home)
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(16)
    listener.setblocking(False)
    _write_state(home, os.getpid(), server_pid, socket=path)
    logger.info("warm runner for %s ready in %.1f s on %s", home, time.perf_counter() - t0, path)
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    children: dict[int, socket.socket] = {}
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    next_look = time.monotonic() + HOME_CHECK_INTERVAL
    orphaned = False
    try:
        while not stopping and process_alive(server_pid):
            for _ in sel.select(timeout=0.05):
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                _fork(listener, conn, children)
            _reap(children)
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + HOME_CHECK_INTERVAL
                if not home.is_dir():
                    orphaned = True
                    break
    finally:
        sel.close()
        listener.close()
        state = _read_state(home)
        owned = state is not None and state.get("pid") == os.getpid()
        if owned:
            _state_path(home).unlink(missing_ok=True)
        if (owned or orphaned) and os.path.exists(path):  # a deleted home leaves no state to say whose it is
            os.unlink(path)
        # commands still running keep running; their commands learn they ended from the process itself
        for conn in children.values():
            conn.close()
    if orphaned:
        # the work directory was deleted under its server (rm -rf of it while it ran): its database is
        # gone and no command can find the server to reuse or stop it, so it is stopped here
        from .prefect_server import terminate

        logger.warning("%s was deleted: stopping its Prefect server (pid %d)", home, server_pid)
        terminate(server_pid)
    logger.info("warm runner for %s stopped", home)


def _fork(listener: socket.socket, conn: socket.socket, children: dict) -> None:
    conn.setblocking(True)
    conn.settimeout(CONNECT_TIMEOUT)
    try:
        message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
        request = json.loads(message)
        if len(fds) != 3 or not isinstance(request.get("argv"), list):
            raise ValueError("not a command")
    except (OSError, ValueError) as exc:
        logger.warning("refused a request: %s", exc)
        conn.close()
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns here (os._exit), coverage does not see it
        _child(listener, conn, request, fds)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except OSError:
        pass  # the command went away: its fork runs on, as a command whose terminal closed would
    children[pid] = conn
    logger.info("forked %d: gmm %s", pid, " ".join(request["argv"]))


def _reap(children: dict) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        try:
            conn.sendall(json.dumps({"exit": code if code >= 0 else 128 - code}).encode() + b"\n")
        except OSError:
            pass
        conn.close()
        logger.info("%d exited with %d", pid, code)


def main(argv=None) -> int:  # pragma: no cover - run as a detached process
    argv = sys.argv[1:] if argv is None else argv
    # the runner's own records go to its log (its stderr) only: the root logger is the commands'
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    serve(Path(argv[0]), int(argv[1]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
