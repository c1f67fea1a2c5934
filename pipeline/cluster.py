"""Dask clusters: the embedded LocalCluster or any existing scheduler, with TLS.

Flows start (or reach) a cluster once and pass its *address* to tasks;
each task opens its own ``Client(address)`` with :func:`connect`.  Clients
and arrays never travel between tasks.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class ClusterUnavailableError(RuntimeError):
    """The Dask scheduler cannot be reached or was lost."""


@dataclass(frozen=True)
class TLS:
    """Paths of the CA, certificate and key for ``tls://`` schedulers."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    require_encryption: bool = True

    def check_files(self) -> None:
        """FileNotFoundError naming the first TLS file that does not exist."""
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(
                    f"TLS {name} {path!r} does not exist: fix cluster.tls.{name} in the config."
                )

    def security(self):
        from distributed.security import Security

        self.check_files()
        return Security(
            tls_ca_file=self.ca_file,
            tls_client_cert=self.cert_file,
            tls_client_key=self.key_file,
            require_encryption=self.require_encryption,
        )


@dataclass(frozen=True)
class ClusterHandle:
    """What tasks need to reach the cluster: a small value that travels to every task.

    Attributes
    ----------
    address : str
        Scheduler address.
    dashboard_link : str or None
    tls : TLS or None
    embedded : bool
        A LocalCluster started by this process (closed when the flow ends).
    timeout : float
        Seconds a task waits for the scheduler to answer.
    """

    address: str
    dashboard_link: str | None
    tls: TLS | None = None
    embedded: bool = False
    timeout: float = 10.0

    def client(self):
        """:func:`connect` to this cluster (a context manager)."""
        return connect(self.address, tls=self.tls, timeout=self.timeout)


def _security(tls: TLS | None):
    return tls.security() if tls is not None else None


@contextlib.contextmanager
def connect(address: str, *, tls: TLS | None = None, timeout: float = 10.0):
    """A ``distributed.Client`` to ``address``, set as default, closed on exit.

    Raises
    ------
    ClusterUnavailableError
        When the scheduler does not answer within ``timeout`` seconds.
    """
    from distributed import Client

    from .distributed_compat import current_client

    try:
        client = Client(address, security=_security(tls), timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterUnavailableError(
            f"Cannot reach the Dask scheduler at {address} within {timeout:g} s ({exc}). "
            "Check that the scheduler is running and the address and port are right; "
            "for tls:// addresses check cluster.tls; or leave cluster.address empty to "
            "use the embedded LocalCluster."
        ) from exc
    # Make the client current for this thread/task only.  `set_as_default` and
    # `as_current()` also set dask's *global* scheduler config, which clients
    # in concurrent task threads then restore out of order, leaving the process
    # pointed at a closed client.  `get_client()` consults this context variable
    # first, so dask.compute finds the client without any global state.
    token = current_client.set(client)
    try:
        yield client
    except BaseException as exc:
        if _scheduler_lost(client, exc):
            raise ClusterUnavailableError(
                f"Lost the Dask scheduler at {address} while computing ({type(exc).__name__}: "
                f"{exc}). Restart the scheduler (or check the network), then re-run; a fit "
                "continues from its last checkpoint with `gmm fit --resume`, and scoring "
                "re-runs only the partitions that were not recorded."
            ) from exc
        raise
    finally:
        current_client.reset(token)
        client.close()


def scheduler_lost(exc: BaseException) -> bool:
    """Whether ``exc``, raised inside :func:`connect`, means the scheduler went away.

    Code that catches broad exceptions inside ``connect`` (scoring records a
    failed partition and goes on) re-raises these, so that ``connect`` turns
    them into :class:`ClusterUnavailableError` instead of blaming the data.
    """
    from .distributed_compat import current_client

    client = current_client.get()
    return client is not None and _scheduler_lost(client, exc)


def _scheduler_lost(client, exc: BaseException) -> bool:
    """Whether ``exc`` means the scheduler went away (not a failure of the work itself)."""
    from concurrent.futures import CancelledError

    from distributed.comm.core import CommClosedError

    if "scheduler-connection-lost" in str(exc) or isinstance(exc, CommClosedError):
        return True
    return isinstance(exc, (CancelledError, OSError, TimeoutError)) and client.status != "running"


def local_cluster_kwargs(n_workers=None, threads_per_worker=1, memory_limit="auto",
                         dashboard_address="127.0.0.1:0"):
    """LocalCluster settings sized to this machine: one single-threaded worker per core."""
    cores = len(os.sched_getaffinity(0))
    n_workers = n_workers or max(1, cores // threads_per_worker)
    return dict(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        dashboard_address=dashboard_address,
        processes=True,
        host="127.0.0.1",
    )


@contextlib.contextmanager
def cluster(address: str | None = None, *, tls: TLS | None = None, timeout: float = 10.0,
            n_workers=None, threads_per_worker=1, memory_limit="auto",
            dashboard_address="127.0.0.1:0"):
    """Yield a :class:`ClusterHandle`: the given scheduler, or a new LocalCluster.

    With ``address`` the scheduler is checked to answer (bounded by
    ``timeout``) and left running afterwards; without it a LocalCluster
    sized to the machine is started on 127.0.0.1 and closed on exit.
    """
    if address:
        with connect(address, tls=tls, timeout=timeout) as client:
            link = client.dashboard_link
        logger.info("Using the Dask scheduler at %s (dashboard: %s)", address, link)
        yield ClusterHandle(address, link, tls, embedded=False, timeout=timeout)
        return
    from distributed import LocalCluster

    kwargs = local_cluster_kwargs(n_workers, threads_per_worker, memory_limit, dashboard_address)
    with LocalCluster(**kwargs) as lc:
        logger.info(
            "Started a LocalCluster: %d workers x %d thread(s), scheduler %s, dashboard %s",
            kwargs["n_workers"], threads_per_worker, lc.scheduler_address, lc.dashboard_link,
        )
        yield ClusterHandle(lc.scheduler_address, lc.dashboard_link, None, embedded=True, timeout=timeout)
