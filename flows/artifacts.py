"""Prefect artifacts of the runs, under stable keys.

Stable keys keep the versions of one kind of report together in the
Prefect UI: ``ingest-report``, ``model-selection``, ``fit-summary``,
``partition-anomalies``, ``scoring-summary``, ``demo-summary``.  The texts
and tables come from :mod:`pipeline.reports`.
"""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact


def publish_markdown(key: str, markdown: str, description: str | None = None) -> None:
    create_markdown_artifact(key=key, markdown=markdown, description=description)


def publish_table(key: str, rows: list[dict], description: str | None = None) -> None:
    """A table artifact; nothing for an empty table (Prefect refuses one)."""
    if rows:
        create_table_artifact(key=key, table=rows, description=description)
