"""The ``ingest`` flow: a table or array into a validated, compressed Zarr array."""

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from .artifacts import publish_markdown
from .config import IngestConfig
from .flow_parameters import flow

IO_RETRIES = dict(retries=2, retry_delay_seconds=2)


def _transient(task, task_run, state) -> bool:
    """Retry condition of the ingest task: I/O errors may pass, refused data will not.

    An ``IngestError`` (bad rows, wrong columns, an existing dest) or a
    missing source fails the same way on every try, so it is not retried.
    """
    from pipeline.ingest import IngestError

    exc = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(exc, (IngestError, FileNotFoundError, FileExistsError, PermissionError, ValueError))


@task(name="ingest", cache_policy=NO_CACHE, retry_condition_fn=_transient, **IO_RETRIES)
def ingest_task(config: IngestConfig, source: str, dest: str, progress: bool = False) -> dict:
    """Ingest ``source`` into ``dest`` with the options of ``config``; the path and validation report."""
    from pipeline.ingest import ingest

    result = ingest(source, dest, format=config.format, columns=config.columns,
                    feature_names=config.feature_names, dtype=config.dtype, bad_rows=config.bad_rows,
                    chunk_rows=config.chunk_rows, compression=config.compression,
                    overwrite=config.overwrite, progress=progress)
    get_run_logger().info("ingested %s -> %s: %d rows written, %d bad rows",
                          source, result.path, result.report.n_rows_written, result.report.n_bad_rows)
    return {"path": result.path, "report": result.report.to_dict()}


@flow(name="ingest")
def ingest_flow(config: IngestConfig, progress: bool = False) -> dict:
    """Validate ``config.source`` and write it to ``config.dest``; publish the validation report.

    Transient I/O errors are retried; refused data (bad rows, non-numeric
    columns, an existing dest) fails at once with the reason.
    """
    from pipeline.reports import ingest_markdown

    ws = config.workspace.ensure()
    out = ingest_task(config, ws.resolve(config.source, ws.root), ws.resolve(config.dest, ws.train), progress)
    publish_markdown("ingest-report", ingest_markdown(out["path"], out["report"]),
                     "Validation report of the last ingest")
    return out
