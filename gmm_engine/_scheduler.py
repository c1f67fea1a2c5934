"""The scheduler dask would run a collection on, found without loading ``distributed`` for nothing.

``dask.base.get_scheduler`` imports ``distributed`` (~0.3 s) to look for a
current client whenever no scheduler is configured.  A client can only
exist once something has imported ``distributed``; until then the answer
is the configured scheduler or the collection's own default, which these
functions give without the import.  With ``distributed`` loaded they defer
to dask entirely, so a client (default, or set as current in a thread)
is found exactly as dask finds it.
"""

from __future__ import annotations

import sys


def _distributed_unloaded() -> bool:
    import dask

    return "distributed" not in sys.modules and dask.config.get("scheduler", None) is None


def scheduler_of(collection):
    """``dask.base.get_scheduler(collections=[collection])``: the ``get`` function a compute would use."""
    import dask

    if _distributed_unloaded():
        return collection.__dask_scheduler__
    return dask.base.get_scheduler(collections=[collection])


def compute(*collections, **kwargs):
    """``dask.compute(*collections, **kwargs)`` on the scheduler dask would choose (see the module docs).

    Arguments that are not dask collections pass through as ``dask.compute``
    passes them.
    """
    import dask

    if "scheduler" not in kwargs and _distributed_unloaded():
        own = [getattr(c, "__dask_scheduler__", None) for c in collections if dask.is_dask_collection(c)]
        own = [get for get in own if get is not None]
        if own:
            kwargs["scheduler"] = own[0]
    return dask.compute(*collections, **kwargs)
