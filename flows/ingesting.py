"""The ``ingest`` flow: a table or array into a validated, compressed Zarr array."""

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipeline.workspace import Workspace

from .config import IngestConfig
from .tasks import ingest_task


@flow(name="ingest")
def ingest_flow(config: IngestConfig, progress: bool = False) -> dict:
    """Validate ``config.source`` and write it to ``config.dest``; publish the validation report.

    Transient I/O errors are retried; refused data (bad rows, non-numeric
    columns, an existing dest) fails at once with the reason.
    """
    Workspace(config.workdir).ensure()
    out = ingest_task(config.resolve(config.source, ""), config.resolve(config.dest, "data/train.zarr"), {
        "format": config.format, "columns": config.columns, "feature_names": config.feature_names,
        "dtype": config.dtype, "bad_rows": config.bad_rows, "chunk_rows": config.chunk_rows,
        "compression": config.compression, "overwrite": config.overwrite, "progress": progress,
    })
    r = out["report"]
    rows = [
        ("source", f"`{r['source']}` ({r['format']})"),
        ("written", f"`{out['path']}`"),
        ("rows read / written", f"{r['n_rows_read']:,} / {r['n_rows_written']:,}"),
        ("bad rows (NaN / inf)", f"{r['n_bad_rows']:,} ({r['n_nan_rows']:,} / {r['n_inf_rows']:,}), "
                                 f"policy `{r['bad_rows_policy']}`"),
        ("first bad rows (0-based)", ", ".join(map(str, r["bad_row_examples"])) or "none"),
        ("features", ", ".join(f"`{n}`" for n in r["feature_names"])),
        ("dtype", r["dtype"]),
        ("non-numeric columns left out", ", ".join(f"`{c}`" for c in r["non_numeric_columns"]) or "none"),
    ]
    create_markdown_artifact(
        key="ingest-report", description="Validation report of the last ingest",
        markdown="# Ingest\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n",
    )
    return out
