"""``TextLoggerHook`` (interval averages to the log) and ``ProgressBarHook`` (tqdm on a terminal)."""
from __future__ import annotations

import datetime
import logging
import time
from typing import TYPE_CHECKING, Any

import torch

from antgo.engine.evaluation import progress_enabled
from antgo.engine.hooks.base import PRIORITIES, Hook
from antgo.registry import HOOKS

if TYPE_CHECKING:  # pragma: no cover
    from antgo.engine.trainer import Trainer

logger = logging.getLogger(__name__)


def _fmt(value: float) -> str:
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
        return f"{value:.3e}"
    return f"{value:.4f}"


@HOOKS.register_module()
class TextLoggerHook(Hook):
    """When the trainer refreshes ``log_vars`` (every ``log_config.interval`` iterations and at the end of an
    epoch; that is when loss values reach the host) log one line:
    ``Epoch [e][i/N] lr, eta, time, data_time, memory (CUDA), loss and other outputs`` averaged over the interval.
    Validation metrics are logged as ``Epoch(val) [e] key: value, ...``.
    """

    priority = PRIORITIES["VERY_LOW"]

    def __init__(self, interval: int = 10, ignore_last: bool = False) -> None:
        if int(interval) < 1:
            raise ValueError(f"TextLoggerHook: interval must be >= 1, got {interval}")
        self.interval = int(interval)  # the trainer's log_config.interval decides when values are ready
        self.ignore_last = bool(ignore_last)
        self._run_start = 0.0
        self._run_start_iter = 0

    def before_run(self, trainer: "Trainer") -> None:
        self._run_start = time.perf_counter()
        self._run_start_iter = trainer.iter

    def after_iter(self, trainer: "Trainer") -> None:
        if not getattr(trainer, "log_ready", True):
            return
        due = (trainer.inner_iter + 1) % getattr(trainer, "log_interval", 1) == 0
        if due or not self.ignore_last:
            self._emit(trainer)

    def _eta(self, trainer: "Trainer") -> str:
        done = trainer.iter - self._run_start_iter
        if done <= 0:
            return "?"
        per_iter = (time.perf_counter() - self._run_start) / done
        return str(datetime.timedelta(seconds=int(per_iter * (trainer.max_iters - trainer.iter))))

    def _emit(self, trainer: "Trainer") -> None:
        avg = dict(trainer.log_vars)
        if not avg:
            return
        parts = [f"lr: {avg.pop('lr'):.3e}"] if "lr" in avg else []
        parts.append(f"eta: {self._eta(trainer)}")
        for key in ("time", "data_time"):
            if key in avg:
                parts.append(f"{key}: {avg.pop(key):.3f}")
        if torch.device(trainer.device).type == "cuda":
            parts.append(f"memory: {torch.cuda.max_memory_allocated(trainer.device) // (1024 * 1024)}MB")
        parts.extend(f"{k}: {_fmt(v)}" for k, v in avg.items())
        logger.info("Epoch [%d][%d/%d]\t%s", trainer.epoch + 1, trainer.inner_iter + 1, trainer.iters_per_epoch,
                    ", ".join(parts))

    def after_val(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k}: {_fmt(v)}" for k, v in metrics.items())
        logger.info("Epoch(val) [%d][%d]\t%s", trainer.epoch + 1, trainer.iter, shown)


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """A tqdm bar per epoch; off when stderr is not a terminal or ``ANTGO_PROGRESS=0``."""

    priority = PRIORITIES["LOWEST"]

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def before_epoch(self, trainer: "Trainer") -> None:
        enabled = progress_enabled() if self.enabled is None else self.enabled
        if enabled and trainer.rank == 0:
            from tqdm import tqdm
            self._bar = tqdm(total=trainer.iters_per_epoch, desc=f"epoch {trainer.epoch + 1}/{trainer.max_epochs}",
                             leave=False, dynamic_ncols=True)

    def after_iter(self, trainer: "Trainer") -> None:
        if self._bar is not None:
            self._bar.update(1)
            if getattr(trainer, "log_ready", True) and "loss" in trainer.log_vars:
                self._bar.set_postfix(loss=f"{trainer.log_vars['loss']:.4f}", refresh=False)

    def after_epoch(self, trainer: "Trainer") -> None:
        self._close()

    def after_run(self, trainer: "Trainer") -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
