"""Prefect flows of antgo: ``tasks.py`` (one task per stage) and ``train_flow.py`` (the ``antgo`` flow).

Importing this package sets the project's defaults for Prefect and MLflow before either is imported:
telemetry off, antgo's loggers forwarded to the Prefect UI, a patient ephemeral-server start.
"""
from __future__ import annotations

import os

_ENV_DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "antgo",
    # antgo logs outside a flow run (direct stage calls, benchmarks) are normal: no warning per record
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # the ephemeral server (no PREFECT_API_URL) takes 8-15 s to start on 2 cores; Prefect's default is 20 s
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}
for _key, _value in _ENV_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
