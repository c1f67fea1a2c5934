"""``gmm deploy``: the ``score-partitions`` deployment on an existing Prefect server's work pool.

Besides ``gmm serve`` (a process that serves the deployment itself), a
team with a Prefect server runs the scoring loop on its own workers:
``gmm deploy --pool NAME`` registers the deployment (from this project's
source directory, entrypoint ``flows/score_flow.py:score_partitions_flow``,
the schedule and score config of the serve config) on work pool ``NAME``,
creating a ``process`` pool when there is none of that name.  A worker
started with ``prefect worker start --pool NAME`` in an environment where
this project is installed then runs the scheduled scoring runs.

The score config travels as the deployment's parameters with its work
directory made absolute: a worker runs flows from the source directory,
where a relative path would mean something else.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: the project's source directory and the flow within it
PROJECT_DIR = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/score_flow.py:score_partitions_flow"


def _ensure_pool(pool: str) -> str:
    """The pool's type; a ``process`` pool is created when ``pool`` does not exist."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(pool).type
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            logger.info("created the process work pool %r", pool)
            return "process"


def deploy(config, pool: str) -> dict:
    """Register the scoring deployment of ``config`` (a ServeConfig) on work pool ``pool``.

    Returns
    -------
    dict
        ``deployment_id``, ``name`` (flow/deployment), ``pool``, ``pool_type``, ``schedule``, ``api_url``.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.settings import PREFECT_API_URL

    from .score_flow import score_partitions_flow

    pool_type = _ensure_pool(pool)
    score = config.score.model_copy(update={"workdir": Path(config.score.workdir).absolute()})
    schedule = {"interval": config.interval_seconds} if config.interval_seconds else {"cron": config.cron}
    flow = score_partitions_flow.from_source(source=str(PROJECT_DIR), entrypoint=ENTRYPOINT)
    deployment_id = flow.deploy(
        name=config.deployment_name, work_pool_name=pool, build=False, push=False,
        parameters={"config": score.model_dump(mode="json")},
        # as `gmm serve`: a run due while another still scores is cancelled, not queued
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        print_next_steps=False, **schedule,
    )
    return {"deployment_id": str(deployment_id), "name": f"score-partitions/{config.deployment_name}",
            "pool": pool, "pool_type": pool_type, "schedule": schedule, "api_url": PREFECT_API_URL.value()}
