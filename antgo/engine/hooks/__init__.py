"""Training hooks. ``Hook`` is the base class; the built-ins are registered in ``antgo.registry.HOOKS``."""
from antgo.engine.hooks.base import PRIORITIES, Hook, get_priority
from antgo.engine.hooks.checkpoint import CheckpointHook
from antgo.engine.hooks.eval import EvalHook, infer_rule
from antgo.engine.hooks.logger import ProgressBarHook, TextLoggerHook
from antgo.engine.hooks.lr import LrSchedulerHook

__all__ = ["Hook", "PRIORITIES", "get_priority", "LrSchedulerHook", "CheckpointHook", "TextLoggerHook",
           "ProgressBarHook", "EvalHook", "infer_rule"]
