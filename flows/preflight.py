"""Checks a command makes before Prefect or Dask start: expected errors answered in a second.

No data ingested yet, no model, a missing source, incoming directory or
TLS file, too few rows for the components asked for, a demo directory
holding someone else's files: each is found here from the files alone and
reaches the user as one line naming the problem and the fix (the CLI exits
with 1), instead of after a server and a cluster have started.  The flows
make the same checks again where the work happens (a file can disappear in
between); these only answer early.  Remote paths (URLs) are not checked
here: reaching them is the flows' work.
"""

from __future__ import annotations

from pathlib import Path

from .config import DemoConfig, FitConfig, IngestConfig, ScoreConfig, SelectConfig


class PreflightError(ValueError):
    """What a command cannot start without; the message names the fix."""


def _local(path: str) -> bool:
    return "://" not in str(path)


def _cluster(config) -> None:
    tls = config.cluster.tls_settings(config.workdir)
    if tls is not None:
        tls.check_files()


def _training_data(config, n_components: int) -> None:
    from pipeline.data import data_fingerprint
    from pipeline.training import check_enough_rows, check_missing_policy

    ws = config.workspace
    data = ws.resolve(config.data, ws.train)
    if not _local(data):
        return
    if not Path(data).exists():
        hint = (f"ingest it first: `gmm ingest --source FILE --workdir {ws.root}`"
                if data == str(ws.train) else "fix `data:` in the config, or ingest it there")
        raise PreflightError(f"No training data at {data}: {hint}.")
    check_enough_rows(data_fingerprint(data), {"n_components": n_components})
    check_missing_policy(data, config.model.estimator_params())


def ingest(config: IngestConfig) -> None:
    ws = config.workspace
    source = ws.resolve(config.source, ws.root)
    if _local(source) and not Path(source).exists():
        raise PreflightError(
            f"The source {source} does not exist: check the path (a path in a config file is taken "
            f"inside its workdir {ws.root}; one on the command line from the current directory)."
        )


def fit(config: FitConfig) -> None:
    _cluster(config)
    _training_data(config, config.model.n_components)


def select(config: SelectConfig) -> None:
    _cluster(config)
    k = config.variational.n_components if config.method == "variational" else max(config.grid.n_components)
    _training_data(config, k)


def score(config: ScoreConfig) -> None:
    """The model to score with, and where partitions arrive."""
    from gmm_engine import load_model
    from pipeline.partitions import check_local_incoming, is_local
    from pipeline.registry import LoadedModel, ModelRegistry, is_version_name

    _cluster(config)
    ws = config.workspace
    spec = config.model_spec()
    registry = ModelRegistry(ws.models)
    if spec == "current" or is_version_name(spec) or Path(spec).absolute().parent == registry.root.absolute():
        loaded = registry.load(spec)
    else:
        model, metadata = load_model(spec)  # verified here; the flow imports it into the registry
        loaded = LoadedModel(model, metadata, Path(spec).name, Path(spec))
    _ = loaded.threshold  # a model without one cannot flag anything
    if config.bad_rows == "marginalize":
        from pipeline.marginal_scoring import check_marginalizes

        check_marginalizes(loaded)
    incoming = ws.resolve(config.incoming, ws.incoming)
    if is_local(incoming):
        check_local_incoming(incoming)


def demo(config: DemoConfig) -> None:
    from pipeline.demo_data import check_demo_workdir

    _cluster(config)
    check_demo_workdir(config.workspace.root)
