"""The flows' decorator: Prefect's ``@flow``, with parameters recorded without importing FastAPI.

Prefect records a flow run's parameters as JSON, made by
``fastapi.encoders.jsonable_encoder``, and imports FastAPI for it in every
run (``Flow.serialize_parameters``): ~0.3 s of each ``gmm`` command, whose
flows take only a pydantic config and plain values.  :class:`Flow` makes the
same JSON for those values itself: a pydantic model as FastAPI dumps one
(``model_dump(mode="json", by_alias=True)``), strings, numbers, booleans,
None and paths as they are (paths as strings).  Any other value hands the
whole dict to Prefect's own method, so what the server records is never
different (``tests/test_flow_parameters.py`` checks both against FastAPI's).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import prefect
from pydantic import BaseModel


class _NotPlain(Exception):
    """A parameter value this module does not encode: Prefect's method encodes them all."""


def _json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, PurePath):
        return str(value)
    raise _NotPlain


class Flow(prefect.Flow):
    """A Prefect flow whose plain parameters are serialized here (see the module docstring)."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        try:
            return {key: _json(value) for key, value in parameters.items()}
        except _NotPlain:
            return super().serialize_parameters(parameters)


def flow(**options):
    """``@prefect.flow(**options)``, making a :class:`Flow`."""

    def decorate(fn):
        return Flow(fn, **options)

    return decorate
