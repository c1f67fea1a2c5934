"""The Dask cluster of a flow run, and the client of a task.

A flow starts (or reaches) its cluster once with :func:`flow_cluster` and
hands every task the resulting :class:`pipeline.cluster.ClusterHandle`, a
small frozen value.  A task whose work is a Dask graph opens its own client
with :func:`task_client` (the default task runner runs tasks in threads;
each computes on its own client); clients and arrays never travel between
tasks.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from pipeline.cluster import ClusterHandle, cluster

from .config import ClusterConfig


@contextlib.contextmanager
def flow_cluster(cfg: ClusterConfig, workdir: Path, *, data_bytes: int | None = None):
    """Start or reach the cluster for a flow; yield its :class:`ClusterHandle`, or None.

    None (the tasks then compute in this process, on threads) when no
    scheduler address is configured and the flow's data is known to fit in
    ``cfg.local_max_bytes``: starting a LocalCluster costs seconds, more
    than such data's arithmetic.  Relative TLS file paths are taken inside
    ``workdir``, like every path of a config.
    """
    from prefect.logging import get_run_logger

    if not cfg.address and data_bytes is not None and data_bytes <= cfg.local_max_bytes:
        get_run_logger().info("%.1f MiB of data: computing in this process, no Dask cluster started",
                              data_bytes / 2**20)
        yield None
        return
    with cluster(cfg.address, tls=cfg.tls_settings(workdir), timeout=cfg.connect_timeout,
                 n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker,
                 memory_limit=cfg.memory_limit, dashboard_address=cfg.dashboard_address) as handle:
        get_run_logger().info("Dask scheduler %s, dashboard %s", handle.address, handle.dashboard_link)
        yield handle


@contextlib.contextmanager
def task_client(handle: ClusterHandle | None):
    """A client of ``handle``'s cluster, current for this task's thread; nothing for None."""
    if handle is None:
        yield None
        return
    with handle.client() as client:
        yield client


def shared_config(handle: ClusterHandle | None, cfg: ClusterConfig, workdir: Path) -> ClusterConfig:
    """A cluster config that reaches ``handle``'s cluster, for subflows of a flow that started it (None: ``cfg``)."""
    if handle is None:
        return cfg
    return ClusterConfig(address=handle.address, connect_timeout=cfg.connect_timeout,
                         tls=cfg.with_tls_in(workdir).tls)

