"""Training hook that sends per-iteration metrics to MLflow in batches.

A synchronous ``log_metric`` over HTTP costs 11-55 ms; one ``log_batch`` of a few hundred metrics costs about
the same, so the hook buffers and flushes every ``flush_every`` iterations, at each epoch end, after each
validation and after the run. A flush only queues the batch: the tracker's background transport sends it, so a
slow or dead tracking server never stalls the loop.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from antgo.engine.hooks import Hook
from antgo.tracking.runs import PipelineTracker

logger = logging.getLogger(__name__)


class MlflowLoggerHook(Hook):
    """Logs ``trainer.log_vars`` (loss, lr, every loss term, timings) at step = global iteration.

    Args:
        tracker: the pipeline tracker (its client and enabled flag are used).
        run_id: the MLflow run to log into (the train stage's child run).
        flush_every: iterations between two ``log_batch`` calls.
        keys: log only these ``log_vars`` keys (default: all numeric ones).
        val_prefix: prefix of validation metric names (``val/miou``).
    """

    priority = 90  # after the hooks that fill log_vars and step the LR

    def __init__(self, tracker: PipelineTracker, run_id: str | None, flush_every: int = 50,
                 keys: list[str] | None = None, val_prefix: str = "val/") -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.flush_every = max(1, int(flush_every))
        self.keys = keys
        self.val_prefix = val_prefix
        self._buffer: list[Any] = []
        self._pending_steps = 0
        self.flushes = 0  # number of log_batch calls, for tests and benchmarks

    def _active(self, trainer: Any) -> bool:
        return self.tracker.enabled and self.run_id is not None and getattr(trainer, "rank", 0) == 0

    def _add(self, values: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in values.items():
            if self.keys is not None and key not in self.keys:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if isinstance(value, bool):
                continue
            self._buffer.append(Metric(str(key), number, now, int(step)))

    def flush(self) -> None:
        """Hand everything buffered to the tracker's background queue (never waits on the network)."""
        if not self._buffer:
            return
        buffer, self._buffer, self._pending_steps = self._buffer, [], 0
        self.flushes += self.tracker.log_metric_batch(self.run_id, buffer)

    def after_iter(self, trainer: Any) -> None:
        if not self._active(trainer) or not getattr(trainer, "log_ready", True):
            return  # log_vars is refreshed once per log interval (loss values stay on the device in between)
        self._add(dict(getattr(trainer, "log_vars", {}) or {}), trainer.iter)
        self._pending_steps += 1
        if self._pending_steps >= self.flush_every:
            self.flush()

    def after_epoch(self, trainer: Any) -> None:
        if not self._active(trainer):
            return
        self._add({"epoch": trainer.epoch + 1}, trainer.iter)
        self.flush()

    def after_val(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if not self._active(trainer):
            return
        self._add({f"{self.val_prefix}{k}": v for k, v in (metrics or {}).items()}, trainer.iter)
        self.flush()

    def after_run(self, trainer: Any) -> None:
        if self._active(trainer):
            self.flush()
