"""Shared test fixtures."""

import os

# Keep Prefect offline and quiet in every test process.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
