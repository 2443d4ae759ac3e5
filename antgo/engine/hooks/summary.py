"""``RunSummaryHook``: a start header (model size, FLOPs, device, precision, data, key settings) and one compact
line per epoch (train loss, lr, validation score against the best, time)."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import torch

from antgo.engine.hooks.base import PRIORITIES, Hook
from antgo.registry import HOOKS

if TYPE_CHECKING:  # pragma: no cover
    from antgo.engine.trainer import Trainer

logger = logging.getLogger(__name__)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all, trainable) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def count_flops(model: torch.nn.Module, shape: list[int], device: torch.device) -> int | None:
    """FLOPs of one ``onnx_export`` forward at ``shape`` (torch's own FlopCounterMode), or None."""
    if not callable(getattr(model, "onnx_export", None)):
        return None
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()  # batch-norm statistics must not move
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model.onnx_export(torch.zeros([1, *shape[1:]], device=device))
        return int(counter.get_total_flops())
    except Exception as exc:  # a summary line is not worth failing a run for
        logger.debug("FLOP count failed: %s", exc)
        return None
    finally:
        model.train(was_training)


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _loader_size(loader: Any) -> str:
    if loader is None:
        return "none"
    dataset = getattr(loader, "dataset", None)
    n = len(dataset) if dataset is not None else "?"
    return f"{n} samples, batch {getattr(loader, 'batch_size', '?')}, {len(loader)} iters"


def header_lines(trainer: "Trainer") -> list[str]:
    """The start header, one fact per line."""
    cfg, model = trainer.cfg, trainer.model
    total, trainable = count_parameters(model)
    shape = ((cfg.get("export") or {}).get("input_shape_list") or [None])[0]
    flops = count_flops(model, list(shape), trainer.device) if shape else None
    precision = f"amp {trainer.amp_dtype}" if trainer.amp else "float32"
    opt = cfg.get("optimizer") or {}
    evaluation = cfg.get("evaluation") or {}
    return [
        f"model      {type(model).__name__}: {_human(total)} parameters ({_human(trainable)} trainable)"
        + (f", {_human(flops)} FLOPs at {shape[2]}x{shape[3]}" if flops and len(shape) == 4 else ""),
        f"device     {trainer.device}, {precision}" + (", channels_last" if trainer.channels_last else "")
        + (f", {trainer.world_size} processes" if trainer.world_size > 1 else ""),
        f"data       train {_loader_size(trainer.train_loader)}; val {_loader_size(trainer.val_loader)}",
        f"schedule   epochs {trainer.start_epoch + 1}..{trainer.max_epochs}, optimizer {opt.get('type')} "
        f"lr {opt.get('lr')}, lr policy {(cfg.get('lr_config') or {}).get('policy')}",
        f"selection  best by {evaluation.get('save_best')} ({evaluation.get('rule') or 'inferred'}); "
        f"work_dir {trainer.work_dir}",
    ]


@HOOKS.register_module()
class RunSummaryHook(Hook):
    """Logs the start header before training and a one-line summary after every epoch."""

    priority = PRIORITIES["VERY_LOW"]

    def __init__(self) -> None:
        self._epoch_start = 0.0

    def before_run(self, trainer: "Trainer") -> None:
        if trainer.rank == 0:
            for line in header_lines(trainer):
                logger.info("%s", line)

    def before_epoch(self, trainer: "Trainer") -> None:
        self._epoch_start = time.perf_counter()

    def after_epoch(self, trainer: "Trainer") -> None:
        if trainer.rank != 0 or not trainer.history:
            return
        record = trainer.history[-1]
        train = record.get("train") or {}
        parts = [f"epoch {record['epoch']}/{trainer.max_epochs}", f"loss {train.get('loss', float('nan')):.4f}",
                 f"lr {train.get('lr', 0.0):.2e}"]
        key = trainer.best_metric
        val = record.get("val") or {}
        if key and key in val and val[key] is not None:
            parts.append(f"val {key} {val[key]:.4f} (best {trainer.best_score:.4f} @ {trainer.best_epoch})")
        parts.append(f"{time.perf_counter() - self._epoch_start:.1f} s")
        logger.info("%s", " | ".join(parts))
