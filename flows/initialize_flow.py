"""The ``initialize`` flow: initial parameters of a fit, saved as a model directory."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline.cluster import ClusterHandle
from pipeline.data import array_bytes

from .cluster import flow_cluster, task_client
from .config import FitConfig, ModelConfig
from .flow_parameters import flow


def run_name(config: FitConfig) -> str:
    """The checkpoint folder of a fit: ``config.run_name`` or ``K<n>-<covariance type>``."""
    m = config.model
    return config.run_name or f"K{m.n_components}-{m.covariance_type}"


@task(name="initialize", cache_policy=NO_CACHE)
def initialize_task(data: str, model: ModelConfig, out_dir: str, cluster: ClusterHandle | None) -> str:
    """``init_params`` (best of ``n_init``) on ``data``, saved to ``out_dir``; returns its path."""
    from pipeline.training import initialize_model

    with task_client(cluster):
        return str(initialize_model(data, model.estimator_params(), out_dir))


@flow(name="initialize")
def initialize_flow(config: FitConfig) -> str:
    """Initial parameters (``init_params``, best of ``n_init``) saved under checkpoints/<run>/init."""
    ws = config.workspace.ensure()
    out = ws.checkpoint_run(run_name(config)) / "init"
    data = ws.resolve(config.data, ws.train)
    with flow_cluster(config.cluster, config.workdir, data_bytes=array_bytes(data)) as cluster:
        return initialize_task(data, config.model, str(out), cluster)
