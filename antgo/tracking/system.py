"""System metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) in MLflow's ``system/`` namespace.

MLflow samples them only for runs started with ``log_system_metrics=True`` through its fluent API; the pipeline
logs through ``MlflowClient`` with explicit run ids, so the monitor is started here for a given run. It needs
psutil; without it the run goes on without system metrics (a warning says why).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0


@contextmanager
def system_metrics(tracking_uri: str, run_id: str | None, interval_s: float | None = None) -> Iterator[Any]:
    """Sample system metrics into ``run_id`` while the block runs; at least one sample is always logged."""
    if run_id is None:
        yield None
        return
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # its start/stop lines are noise

        interval = float(interval_s or os.environ.get("ANTGO_SYSTEM_METRICS_INTERVAL") or DEFAULT_INTERVAL_S)
        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, tracking_uri=tracking_uri)
        monitor.start()
    except Exception as exc:  # psutil missing, or a store that cannot take them: train anyway
        logger.warning("system metrics off for run %s: %s", run_id, exc)
        yield None
        return
    try:
        yield monitor
    finally:
        _finish(monitor)


def _finish(monitor: Any) -> None:
    try:
        monitor.finish()
        monitor.collect_metrics()  # the loop drops the sample it was collecting when it stops: log a last one
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    except Exception as exc:
        logger.warning("could not log the last system metrics sample: %s", exc)
