"""``gmm serve``: the ``score-partitions`` deployment on a schedule.

``gmm serve`` uses ``PREFECT_API_URL`` (or ``api_url`` in the config) when
set; otherwise it starts a :class:`flows.prefect_server.LocalPrefectServer`
for the work directory and stops it on exit.
"""

from __future__ import annotations

import logging
import os

from pipeline.workspace import Workspace

from .prefect_server import LocalPrefectServer, ServerStartError, healthy

logger = logging.getLogger(__name__)


def serve(config, workdir) -> None:
    """Serve ``score-partitions`` with ``config`` (a ServeConfig) until interrupted."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from .score_flow import score_partitions_flow

    api_url = config.api_url or os.environ.get("PREFECT_API_URL")
    server = None
    if not api_url:
        server = LocalPrefectServer(Workspace(workdir).prefect_home, config.server_host, config.server_port).start()
        api_url = server.api_url
    elif not healthy(api_url):
        raise ServerStartError(f"The Prefect API at {api_url} does not answer /health: start it or fix PREFECT_API_URL.")
    try:
        os.environ["PREFECT_API_URL"] = api_url  # for the runs the runner starts
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            schedule = ({"interval": config.interval_seconds} if config.interval_seconds
                        else {"cron": config.cron})
            logger.info("serving deployment %r on %s (%s)", config.deployment_name, api_url, schedule)
            score_partitions_flow.serve(
                name=config.deployment_name,
                parameters={"config": config.score.model_dump(mode="json")},
                pause_on_shutdown=True,
                print_starting_message=True,
                limit=1,
                # A run that is due while another still scores is cancelled, not queued:
                # the running one picks up whatever arrived, and a long run on a short
                # interval would otherwise leave a backlog of late runs behind it.
                global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
                **schedule,
            )
    finally:
        if server is not None:
            server.stop()
