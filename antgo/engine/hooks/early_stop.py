"""``EarlyStoppingHook`` (stop when the ``save_best`` metric stops improving) and ``BestWeightsHook`` (a small
weights-only copy of the best model beside the full training state in ``best.pth``)."""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from antgo.engine.hooks.base import PRIORITIES, Hook
from antgo.registry import HOOKS

if TYPE_CHECKING:  # pragma: no cover
    from antgo.engine.trainer import Trainer

logger = logging.getLogger(__name__)

BEST_WEIGHTS = "best_weights.pth"


@HOOKS.register_module()
class EarlyStoppingHook(Hook):
    """Stop training after ``patience`` validations without a new best ``save_best`` score.

    Reads the best score the evaluation hook keeps on the trainer (``trainer.best_score`` / ``best_epoch``),
    so the metric and the rule are those of ``evaluation.save_best`` / ``evaluation.rule``. ``min_delta``: an
    improvement smaller than this does not reset the patience. Config::

        custom_hooks = [dict(type='EarlyStoppingHook', patience=5)]
    """

    priority = PRIORITIES["LOW"]

    def __init__(self, patience: int = 5, min_delta: float = 0.0) -> None:
        if int(patience) < 1:
            raise ValueError(f"EarlyStoppingHook: patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.reference: float | None = None  # the score the patience counts from
        self.waited = 0

    def after_val(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        score = trainer.best_score
        if score is None:
            return
        greater = (trainer.best_rule or "greater") == "greater"
        gain = None if self.reference is None else (score - self.reference if greater else self.reference - score)
        if gain is None or gain > self.min_delta:
            self.reference, self.waited = score, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            logger.info("Early stopping at epoch %d: %s has not improved on %.4f (epoch %s) for %d validation(s)",
                        trainer.epoch + 1, trainer.best_metric, score, trainer.best_epoch, self.waited)
            trainer.request_stop(f"early stopping: no {trainer.best_metric} improvement in {self.waited} "
                                 f"validations")

    def state_dict(self) -> dict[str, object]:
        return {"reference": self.reference, "waited": self.waited}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.reference = state.get("reference")  # type: ignore[assignment]
        self.waited = int(state.get("waited") or 0)  # type: ignore[arg-type]


@HOOKS.register_module()
class BestWeightsHook(Hook):
    """Write ``best_weights.pth`` (model weights + a little metadata, no optimizer) whenever ``best.pth`` changes.

    ``best.pth`` is the full training state (weights, optimizer, RNG: several times the model's size) for
    resuming; the weights-only file is what ``antgo predict --checkpoint``, test and export need.
    """

    priority = PRIORITIES["LOW"]

    def __init__(self, filename: str = BEST_WEIGHTS) -> None:
        self.filename = filename
        self.path: str | None = None

    def after_val(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        from antgo.engine.checkpoint import save_checkpoint

        best = trainer.best_checkpoint
        if trainer.rank != 0 or not best or trainer.best_epoch != trainer.epoch + 1:
            return
        self.path = os.path.join(os.path.dirname(best), self.filename)
        meta = dict(epoch=trainer.best_epoch, iter=trainer.best_iter, best_metric=trainer.best_metric,
                    best_score=trainer.best_score, best_metrics=trainer.best_metrics, config=trainer.cfg,
                    weights_only=True)
        save_checkpoint(self.path, trainer.model, meta=meta)
        trainer.best_weights = self.path
        logger.debug("weights-only best model written to %s", self.path)
