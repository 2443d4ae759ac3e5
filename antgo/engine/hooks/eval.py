"""``EvalHook``: validation every ``interval`` epochs, ``best.pth`` + ``best.json`` on improvement."""
from __future__ import annotations

import json
import logging
import math
import os
from typing import TYPE_CHECKING, Any

from antgo.engine.evaluation import evaluate, json_safe
from antgo.engine.hooks.base import PRIORITIES, Hook
from antgo.engine.loading import run_relative
from antgo.registry import HOOKS

if TYPE_CHECKING:  # pragma: no cover
    from antgo.engine.trainer import Trainer

logger = logging.getLogger(__name__)

GREATER_KEYS = ("acc", "iou", "map", "top", "ar@", "auc", "precision", "recall", "dice", "f1", "psnr", "ssim", "oks")
LESS_KEYS = ("loss", "err", "mse", "mae", "rmse", "distance")


def infer_rule(key: str) -> str:
    """'greater' or 'less' from a metric name; a name that says neither is an error."""
    name = key.lower()
    if any(k in name for k in LESS_KEYS):
        return "less"
    if any(k in name for k in GREATER_KEYS):
        return "greater"
    raise ValueError(f"evaluation.rule: cannot tell whether a larger '{key}' is better; "
                     f"set evaluation.rule='greater' or 'less'")


@HOOKS.register_module()
class EvalHook(Hook):
    """Evaluate ``metrics`` on ``dataloader`` after epochs and keep the best checkpoint.

    Args:
        metrics: metric objects (or ``metric``: the config dict / list of dicts, built with ``build_metrics``).
        interval: evaluate every ``interval`` epochs (and always after the last epoch).
        save_best: metric key to select ``best.pth`` by; ``'auto'`` = the first key; None = no best file.
        rule: ``'greater'``/``'less'``; None infers it from the key (acc/iou/map... greater, loss/err less).
        start: first epoch (1-based) to evaluate at; then every ``interval`` epochs after it.
        out_dir: folder of ``best.pth``/``best.json``; relative resolves under ``work_dir``.
    """

    priority = PRIORITIES["ABOVE_NORMAL"]  # before CheckpointHook, so epoch checkpoints hold the new best score

    def __init__(self, dataloader: Any, metrics: list[Any] | None = None, interval: int = 1,
                 save_best: str | None = None, rule: str | None = None, start: int | None = None,
                 out_dir: str | None = None, metric: Any = None) -> None:
        if rule not in (None, "greater", "less"):
            raise ValueError(f"evaluation.rule must be 'greater', 'less' or None, got {rule!r}")
        if metrics is None and metric is not None:  # a metric config (dict or list), as in `evaluation`
            from antgo.metrics import build_metrics

            metrics = build_metrics(metric)
        if not metrics:
            raise ValueError("EvalHook needs at least one metric (evaluation.metric)")
        self.dataloader = dataloader
        self.metrics = metrics
        self.interval = int(interval)
        self.save_best = save_best
        self.rule = rule
        if save_best not in (None, "auto") and rule is None:
            self.rule = infer_rule(save_best)  # fail before training, not after the first epoch
        self.start = start
        self.out_dir = out_dir

    def before_run(self, trainer: "Trainer") -> None:
        self.out_dir = trainer.resolve_out_dir(self.out_dir)

    def _due(self, trainer: "Trainer") -> bool:
        epoch = trainer.epoch + 1
        if self.is_last_epoch(trainer):
            return True
        if self.start is not None:
            return epoch >= self.start and self.interval > 0 and (epoch - self.start) % self.interval == 0
        return self.every_n_epochs(trainer, self.interval)

    def after_epoch(self, trainer: "Trainer") -> None:
        if not self._due(trainer):
            return
        metrics = evaluate(trainer.model, self.dataloader, self.metrics, trainer.device, amp=trainer.amp,
                           channels_last=trainer.channels_last, desc=f"val {trainer.epoch + 1}",
                           amp_dtype=trainer.amp_dtype)
        if self.save_best is not None:
            self._update_best(trainer, metrics)
        trainer.dispatch_val(metrics)

    def _update_best(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        key = next(iter(metrics)) if self.save_best == "auto" else self.save_best
        if key not in metrics:
            raise KeyError(f"evaluation.save_best='{key}' is not a metric key; the metrics returned {sorted(metrics)}")
        rule = self.rule or infer_rule(key)
        self.rule = rule
        score = metrics[key]
        if math.isnan(score):
            logger.warning("%s is NaN at epoch %d; best checkpoint not updated", key, trainer.epoch + 1)
            return
        best = trainer.best_score
        improved = best is None or (score > best if rule == "greater" else score < best)
        if not improved:
            logger.info("%s %.4f did not improve on the best %.4f (epoch %s)", key, score, best, trainer.best_epoch)
            return
        trainer.best_score, trainer.best_metric, trainer.best_rule = score, key, rule
        trainer.best_epoch, trainer.best_iter = trainer.epoch + 1, trainer.iter
        trainer.best_metrics = dict(metrics)
        if trainer.rank != 0:
            return
        path = os.path.join(self.out_dir, "best.pth")
        trainer.best_checkpoint = path  # before saving: best.pth's own metadata must name itself
        trainer.save_checkpoint(path)
        record = {"metric": key, "score": score, "epoch": trainer.epoch + 1, "iter": trainer.iter, "rule": rule,
                  "checkpoint": run_relative(path, trainer.work_dir),  # relative: the folder may move
                  "all": json_safe(metrics)}
        tmp = os.path.join(self.out_dir, "best.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        os.replace(tmp, os.path.join(self.out_dir, "best.json"))
        logger.info("New best %s %.4f at epoch %d: %s", key, score, trainer.epoch + 1, path)
