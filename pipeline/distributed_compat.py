"""Every private name the pipeline takes from ``distributed``, in one place.

:func:`pipeline.cluster.connect` makes a client current for one task's
thread only.  ``Client(set_as_default=True)`` and ``as_current()`` also set
Dask's *global* scheduler configuration, which clients of concurrent task
threads then restore out of order, leaving the process pointed at a closed
client.  ``distributed.get_client()`` consults the context variable
``distributed.client._current_client`` first, so setting it alone makes
``dask.compute`` find the client without any global state.  That variable
is private: it is imported here and nowhere else, and
``tests/test_compat.py`` checks that the installed ``distributed`` is the
release it was checked against.

On an upgrade, re-check that ``_current_client`` is still a
``contextvars.ContextVar`` that ``get_client()`` reads before the global
default, then update :data:`CHECKED_DISTRIBUTED_VERSION`.
"""

from __future__ import annotations

from distributed.client import _current_client as current_client

#: the distributed release the name above was checked against
CHECKED_DISTRIBUTED_VERSION = "2026.8.0"

__all__ = ["CHECKED_DISTRIBUTED_VERSION", "current_client"]
