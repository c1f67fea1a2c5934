"""Every private name the engine takes from Dask, in one place.

The graph builders (:mod:`gmm_engine._dask_plan`) read and write Dask's
task specification directly: they take each chunk's loading task out of
the array's optimised graph and put it inside the task that uses the
chunk, so that a pass over 1,000 chunks costs milliseconds of graph
building.  That specification lives in ``dask._task_spec``, which Dask
does not promise to keep: these names are imported here and nowhere else,
and ``tests/test_engine_data.py`` checks that the installed Dask is the
release they were checked against.

On a Dask upgrade, re-check what the plan relies on, then update
:data:`CHECKED_DASK_VERSION`:

* ``GraphNode.dependencies`` (the keys a node reads) and calling a node
  with ``{key: value}`` of those keys to evaluate it;
* ``Task(key, func, *args)`` with ``TaskRef(key)`` arguments resolved by
  the scheduler, and ``Task.args`` / ``Task.kwargs``;
* ``DataNode(key, value).value``, and ``Alias.target``;
* that ``DataNode`` and ``Alias`` are ``GraphNode`` subclasses, that
  ``X.__dask_graph__()`` maps keys to ``GraphNode`` (persisted futures
  excepted) and ``X.__dask_optimize__`` keeps that form.
"""

from __future__ import annotations

from dask._task_spec import Alias, DataNode, GraphNode, Task, TaskRef

#: the Dask release these names and the behaviour above were checked against
CHECKED_DASK_VERSION = "2026.8.0"

__all__ = ["CHECKED_DASK_VERSION", "Alias", "DataNode", "GraphNode", "Task", "TaskRef"]
