"""Process liveness: who holds a claim, and whether that process still runs.

A claim records its owner as (hostname, host key, pid, process start
time).  The *host key* is the hostname, the kernel boot id and the pid
namespace: the same hostname is not enough (containers can share one), and
after a reboot or in another pid namespace the same pid means another
process.  An owner whose host key is ours is judged directly:

* no such pid                       -> gone
* the pid is a zombie               -> gone (exited, not yet reaped)
* the pid started at another time   -> gone (the pid was reused)

An owner with another host key cannot be seen from here: :func:`owner_alive`
answers None and the claim is judged by its lease alone.

Start times are read from ``/proc/<pid>/stat`` as an exact tick count
since boot (see :func:`proc_info`); psutil is the fallback where there is
no procfs.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

__all__ = ["Owner", "current_owner", "owner_alive", "proc_info"]

# Start times are exact tick counts (see proc_info); the tolerance only
# absorbs float rounding.
_START_TOLERANCE = 1e-3
_PROCFS = os.path.isdir("/proc/self")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Owner:
    """A process as a claim records it."""

    hostname: str
    host_key: str
    pid: int
    proc_start: float | None


def _read_first_line(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.readline().strip()
    except OSError:
        return ""


def _host_key() -> str:
    boot_id = _read_first_line("/proc/sys/kernel/random/boot_id")
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pidns = ""
    return f"{socket.gethostname()}|{boot_id}|{pidns}"


def proc_info(pid: int) -> tuple[float | None, bool] | None:
    """``(start time, is zombie)`` of process ``pid``, or None if there is no such process.

    On Linux the start time is read from ``/proc/<pid>/stat`` as seconds
    since boot (an exact tick count).  psutil's wall-clock ``create_time``
    is derived from the boot time, which shifts when the clock is adjusted,
    and would make a live owner look like a reused pid.  Start times are
    only compared within one boot (the host key includes the boot id).
    """
    if _PROCFS:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                data = fh.read()
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError:
            pass  # unreadable: fall back to psutil
        else:
            # the command name (field 2) may contain spaces and ')'
            fields = data[data.rindex(b")") + 2:].split()
            return int(fields[19]) / _CLK_TCK, fields[0] == b"Z"
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.create_time(), proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return (None, False)  # exists, but cannot be inspected


_OWNER_CACHE: dict[int, Owner] = {}


def current_owner() -> Owner:
    """This process as an :class:`Owner` (cached per pid, so a forked child gets its own)."""
    pid = os.getpid()
    owner = _OWNER_CACHE.get(pid)
    if owner is None:
        info = proc_info(pid)
        owner = Owner(socket.gethostname(), _host_key(), pid, info[0] if info else None)
        _OWNER_CACHE.clear()
        _OWNER_CACHE[pid] = owner
    return owner


def owner_alive(host_key: str, pid: int, proc_start: float | None) -> bool | None:
    """True/False for an owner on this host; None when the owner is elsewhere (unknown)."""
    if host_key != current_owner().host_key:
        return None
    info = proc_info(pid)
    if info is None:
        return False
    start, zombie = info
    if zombie:
        return False  # exited, not yet reaped by its parent
    if start is not None and proc_start is not None and abs(start - proc_start) > _START_TOLERANCE:
        return False  # the pid was reused by a newer process
    return True
