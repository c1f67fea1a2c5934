"""flows: Prefect 3 flows and the ``gmm`` command line, thin layers over ``pipeline``.

The flow modules (``*_flow.py``) do not use ``from __future__ import
annotations``: Prefect builds each flow's parameter model from its
annotations, also in the process a deployment starts by entrypoint, where
string annotations naming the pydantic configs cannot be resolved.
"""
