"""``EvalHook``: validation every ``interval`` epochs (iterations with ``max_iters``), ``best.pth`` + ``best.json``
on improvement. Before training, one validation batch checks that ``forward_test`` returns what the metrics
read and that ``save_best`` is a key the metrics return, so a wrong name fails before the first epoch."""
from __future__ import annotations

import difflib
import json
import logging
import math
import os
from typing import TYPE_CHECKING, Any

from antgo.engine.evaluation import evaluate, json_safe
from antgo.engine.hooks.base import PRIORITIES, Hook
from antgo.engine.loading import run_relative
from antgo.engine.memory import note_out_of_memory
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
        interval: evaluate every ``interval`` epochs (iterations with ``max_iters``), and always at the end.
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
        self.check_keys(trainer)

    def check_keys(self, trainer: "Trainer") -> None:
        """Dry run on one validation batch (RNG states restored after it, so training is unchanged):
        ``forward_test`` must return every metric's ``keys()['pred']``, ``save_best`` must be a metric key."""
        from antgo.engine.checkpoint import restore_rng, rng_state

        state = rng_state()
        try:
            metrics = self._evaluate(trainer, "val check", max_batches=1)
        except KeyError as exc:
            exc.add_note("checked before training on one validation batch")
            raise
        finally:
            restore_rng(state)
        if self.save_best not in (None, "auto"):
            self._metric_key(self.save_best, metrics)

    @staticmethod
    def _metric_key(key: str, metrics: dict[str, float]) -> str:
        if key not in metrics:
            close = difflib.get_close_matches(key, list(metrics), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise KeyError(f"evaluation.save_best='{key}' is not a metric key; the metrics return "
                           f"{sorted(metrics)}.{hint} Set evaluation.save_best to one of them")
        return key

    def _evaluate(self, trainer: "Trainer", desc: str, max_batches: int | None = None) -> dict[str, float]:
        try:
            return evaluate(trainer.model, self.dataloader, self.metrics, trainer.device, amp=trainer.amp,
                            channels_last=trainer.channels_last, desc=desc, amp_dtype=trainer.amp_dtype,
                            batch_transform=getattr(trainer, "val_transform", None), max_batches=max_batches)
        except Exception as exc:
            note_out_of_memory(exc, f"in validation ({desc})", self.dataloader,
                               "data.val_dataloader", trainer.device)
            raise

    def _due(self, trainer: "Trainer") -> bool:
        if not getattr(trainer, "by_epoch", True):
            return self.is_last_iter(trainer) or (
                trainer.iter >= (self.start or 0) and self.every_n_iters(trainer, self.interval))
        epoch = trainer.epoch + 1
        if self.is_last_epoch(trainer):
            return True
        if self.start is not None:
            return epoch >= self.start and self.interval > 0 and (epoch - self.start) % self.interval == 0
        return self.every_n_epochs(trainer, self.interval)

    def after_epoch(self, trainer: "Trainer") -> None:
        if getattr(trainer, "by_epoch", True) and self._due(trainer):
            self._validate(trainer, f"val {trainer.epoch + 1}")

    def after_iter(self, trainer: "Trainer") -> None:
        if not getattr(trainer, "by_epoch", True) and self._due(trainer):
            self._validate(trainer, f"val @{trainer.iter}")

    def _validate(self, trainer: "Trainer", desc: str) -> None:
        if callable(getattr(trainer, "check_finite", None)):
            trainer.check_finite("validation")  # a diverged model is reported, never evaluated or saved as best
        metrics = self._evaluate(trainer, desc)
        if self.save_best is not None:
            self._update_best(trainer, metrics)
        trainer.dispatch_val(metrics)

    def _update_best(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        key = next(iter(metrics)) if self.save_best == "auto" else self._metric_key(self.save_best, metrics)
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
