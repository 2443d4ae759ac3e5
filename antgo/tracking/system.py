"""System metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) in MLflow's ``system/`` namespace.

MLflow's own monitor samples only for runs started through its fluent API, and its thread talks to the store
itself (a status read every interval, its own batch logger): with the store down it blocks the end of the
stage for the HTTP timeouts and loses the samples. Here MLflow's metric collectors are sampled by a thread of
ours and the averages go through the pipeline tracker's queue like every other metric: never a network call
in this thread, spooled during an outage, replayable. Needs psutil; without it the run goes on without
system metrics (a warning says why).
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
PREFIX = "system/"


class SystemSampler:
    """Collects a sample, waits ``interval_s``, logs the interval's averages at the next step; ``stop()`` logs
    the interval in progress, so a run always has at least one sample."""

    def __init__(self, tracker: Any, run_id: str, interval_s: float) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # its GPU-skipped line is noise
        # only for its collectors (CPU, disk, network, and the GPU one that fits the machine): never started
        self._collectors = SystemMetricsMonitor(run_id, sampling_interval=interval_s,
                                                tracking_uri=tracker.ctx.tracking_uri).monitors
        self.tracker, self.run_id, self.interval_s = tracker, run_id, interval_s
        self.steps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="antgo-system-metrics", daemon=True)

    def start(self) -> "SystemSampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while True:
                for collector in self._collectors:
                    collector.collect_metrics()
                stopping = self._stop.wait(self.interval_s)
                self._publish()
                if stopping:
                    return
        except Exception as exc:  # a collector that fails (a GPU gone, psutil errors): the run goes on
            logger.warning("system metrics stopped for run %s: %s", self.run_id, exc)

    def _publish(self) -> None:
        averages: dict[str, float] = {}
        for collector in self._collectors:
            averages.update(collector.aggregate_metrics())
            collector.clear_metrics()
        self.tracker.log_metrics(self.run_id, {PREFIX + k: v for k, v in averages.items()}, step=self.steps)
        self.steps += 1

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


@contextmanager
def system_metrics(tracker: Any, run_id: str | None, interval_s: float | None = None) -> Iterator[Any]:
    """Sample system metrics into ``run_id`` through ``tracker`` while the block runs."""
    if run_id is None or not tracker.enabled:
        yield None
        return
    interval = float(interval_s or os.environ.get("ANTGO_SYSTEM_METRICS_INTERVAL") or DEFAULT_INTERVAL_S)
    try:
        sampler = SystemSampler(tracker, run_id, interval).start()
    except Exception as exc:  # psutil missing: train anyway
        logger.warning("system metrics off for run %s: %s", run_id, exc)
        yield None
        return
    try:
        yield sampler
    finally:
        sampler.stop()
