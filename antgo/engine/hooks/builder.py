"""The hooks a config asks for: LR, checkpoint, loggers, progress bar, evaluation and ``custom_hooks``."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from antgo.engine.hooks.base import Hook, get_priority
from antgo.engine.hooks.checkpoint import CheckpointHook
from antgo.engine.hooks.early_stop import BestWeightsHook
from antgo.engine.hooks.summary import RunSummaryHook
from antgo.engine.hooks.eval import EvalHook
from antgo.engine.hooks.logger import ProgressBarHook, TextLoggerHook
from antgo.engine.hooks.lr import LrSchedulerHook
from antgo.registry import HOOKS

if TYPE_CHECKING:  # pragma: no cover
    from antgo.engine.trainer import Trainer

logger = logging.getLogger(__name__)


def build_hook(cfg: Mapping[str, Any], key_path: str, default_args: Mapping[str, Any] | None = None) -> Hook:
    """A hook from ``dict(type=..., priority=..., **kwargs)``; ``priority`` (int or name) is set after building."""
    args = dict(cfg)
    priority = args.pop("priority", None)
    hook = HOOKS.build(args, default_args=default_args, key_path=key_path)
    if priority is not None:
        hook.priority = get_priority(priority)
    return hook


def _as_dict(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"config key '{key}' must be a dict, got {type(value).__name__}")
    return dict(value)


def build_logger_hooks(cfg: Mapping[str, Any]) -> list[Hook]:
    log_cfg = _as_dict(cfg.get("log_config"), "log_config")
    interval = log_cfg.pop("interval", 10)
    entries = log_cfg.pop("hooks", [dict(type="TextLoggerHook")])
    log_cfg.pop("grad_norm", None)  # read by the trainer: log the gradient norm (costs a norm per step)
    if log_cfg:
        raise KeyError(f"log_config has unknown keys {sorted(log_cfg)}; known: interval, hooks, grad_norm")
    return [build_hook(h, f"log_config.hooks[{i}]", default_args=dict(interval=interval))
            for i, h in enumerate(entries)]


def build_eval_hook(cfg: Mapping[str, Any], dataloader: Any) -> Hook:
    """The ``evaluation`` dict: ``metric`` (dict or list) is built; a ``type`` selects another eval hook."""
    from antgo.metrics import build_metrics

    eval_cfg = _as_dict(cfg.get("evaluation"), "evaluation")
    metrics = build_metrics(eval_cfg.pop("metric", None))
    eval_cfg.setdefault("type", "EvalHook")
    return build_hook(eval_cfg, "evaluation", default_args=dict(dataloader=dataloader, metrics=metrics))


def build_default_hooks(trainer: "Trainer") -> list[Hook]:
    """Every hook the trainer's config describes, in registration order (sorting is by priority)."""
    cfg = trainer.cfg
    hooks: list[Hook] = [LrSchedulerHook()]
    ckpt_cfg = _as_dict(cfg.get("checkpoint_config"), "checkpoint_config")
    ckpt_cfg.setdefault("type", "CheckpointHook")
    hooks.append(build_hook(ckpt_cfg, "checkpoint_config"))
    hooks.extend(build_logger_hooks(cfg))
    hooks.append(ProgressBarHook())
    hooks.append(RunSummaryHook())  # start header and one line per epoch
    if trainer.val_loader is not None:
        hooks.append(build_eval_hook(cfg, trainer.val_loader))
        hooks.append(BestWeightsHook())  # a small weights-only file beside the full state in best.pth
    elif trainer.train_loader is None and (cfg.get("evaluation") or {}).get("metric"):
        logger.warning("config_model() ran before config_dataloader(): no validation during training; "
                       "call config_dataloader(with_validate=True) first")
    for i, hook_cfg in enumerate(cfg.get("custom_hooks") or []):
        hooks.append(build_hook(hook_cfg, f"custom_hooks[{i}]"))
    return hooks


__all__ = ["build_hook", "build_default_hooks", "build_logger_hooks", "build_eval_hook",
           "CheckpointHook", "EvalHook", "TextLoggerHook"]
