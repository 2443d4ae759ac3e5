"""Optimizers from config dicts, with optional no-weight-decay groups for norm layers and biases.

``build_optimizer(model, dict(type='SGD', lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4))``.
``type`` is a class registered in ``OPTIMIZERS`` or any ``torch.optim.Optimizer`` subclass by name.
The LR schedules live in :mod:`antgo.engine.lr_schedule` and are re-exported here.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from antgo.engine.lr_schedule import LrConfigError, LrScheduler, build_lr_scheduler
from antgo.registry import OPTIMIZERS, RegistryError, quoted_numbers

logger = logging.getLogger(__name__)

__all__ = ["build_optimizer", "build_lr_scheduler", "LrScheduler", "LrConfigError", "OptimizerConfigError",
           "NORM_LAYERS", "is_norm_layer"]

NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)
_PARAMWISE_KEYS = {"norm_decay_mult", "bias_decay_mult"}


class OptimizerConfigError(ValueError):
    """A malformed ``optimizer`` config: the message names ``optimizer.<key>`` and the fix."""


def is_norm_layer(module: nn.Module) -> bool:
    return isinstance(module, NORM_LAYERS) or type(module).__name__.endswith(("Norm", "Norm1d", "Norm2d", "Norm3d"))


def _torch_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    return {name: obj for name, obj in vars(torch.optim).items()
            if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer}


def _resolve_type(type_name: Any) -> type:
    if inspect.isclass(type_name):
        return type_name
    if not isinstance(type_name, str):
        raise OptimizerConfigError(f"optimizer.type must be a name such as 'SGD', got {type_name!r}")
    cls = OPTIMIZERS.get(type_name) or _torch_optimizers().get(type_name)
    if cls is None:
        known = sorted(set(OPTIMIZERS.keys()) | set(_torch_optimizers()))
        # 'sgd' or 'adamw': case slips are the usual mistake, so those come first
        close = [k for k in known if k.lower() == type_name.lower()]
        close += [k for k in difflib.get_close_matches(type_name, known, n=3, cutoff=0.5) if k not in close]
        hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(f"OPTIMIZERS has no type '{type_name}' (config key 'optimizer.type').{hint} "
                            f"Known: {', '.join(known)}")
    return cls


def _check_kwargs(cls: type, kwargs: Mapping[str, Any]) -> inspect.Signature:
    sig = inspect.signature(cls)
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return sig
    allowed = [name for name in params if name != "params"]
    for key in kwargs:
        if key not in params or key == "params":
            close = difflib.get_close_matches(key, allowed, n=2)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise OptimizerConfigError(f"optimizer.{key}: {cls.__name__} has no argument '{key}'.{hint} "
                                       f"Allowed: {', '.join(allowed)}")
    return sig


def _paramwise(cfg: dict[str, Any]) -> dict[str, float] | None:
    paramwise = cfg.pop("paramwise_cfg", None)
    switch = cfg.pop("no_weight_decay_on_norm_and_bias", None)
    if paramwise is not None:
        if not isinstance(paramwise, Mapping):
            raise OptimizerConfigError("optimizer.paramwise_cfg must be a dict such as "
                                       "dict(norm_decay_mult=0.0, bias_decay_mult=0.0)")
        for key in paramwise:
            if key not in _PARAMWISE_KEYS:
                raise OptimizerConfigError(f"optimizer.paramwise_cfg.{key} is not supported; "
                                           f"supported: {', '.join(sorted(_PARAMWISE_KEYS))}")
    result = dict(paramwise or {})
    if switch:
        result.setdefault("norm_decay_mult", 0.0)
        result.setdefault("bias_decay_mult", 0.0)
    return result or None


def param_groups(model: nn.Module, weight_decay: float, norm_decay_mult: float = 1.0,
                 bias_decay_mult: float = 1.0) -> list[dict[str, Any]]:
    """Split parameters by weight-decay multiplier (mmcv rules: a norm layer's weight and bias take
    ``norm_decay_mult``; every other ``bias`` takes ``bias_decay_mult``). Shared parameters appear once."""
    groups: dict[float, list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        norm = is_norm_layer(module)
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            mult = norm_decay_mult if norm else (bias_decay_mult if name == "bias" else 1.0)
            groups.setdefault(float(mult), []).append(param)
    ordered = sorted(groups.items(), key=lambda kv: -kv[0])  # the regular (mult 1) group first
    return [{"params": params, "weight_decay": weight_decay * mult,
             "name": "decay" if mult == 1.0 else ("no_decay" if mult == 0.0 else f"decay_x{mult:g}")}
            for mult, params in ordered]


def _prefer_fused(cls: type, sig: inspect.Signature, args: dict[str, Any], module: nn.Module) -> None:
    """On CUDA use the fused step (one kernel for all parameters) where the class offers it and the config
    chose neither ``fused`` nor ``foreach``; torch already picks ``foreach`` on CUDA otherwise."""
    if "fused" in args or "foreach" in args or "fused" not in sig.parameters:
        return
    first = next(iter(module.parameters()), None)
    if first is not None and first.is_cuda and first.dtype in (torch.float32, torch.float16, torch.bfloat16):
        args["fused"] = True


def _check_numbers(cls: type, args: Mapping[str, Any]) -> None:
    """A quoted number (``lr='3e-3'``) names its key; torch would say only ``'<=' not supported ...``."""
    for key in quoted_numbers(cls, args)[:1]:
        raise OptimizerConfigError(f"optimizer.{key} is the string {args[key]!r}, but {cls.__name__} takes a number "
                                   f"there: write {key}={args[key]} without quotes")


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build ``cfg['type']`` over ``model``'s parameters. ``cfg`` is not modified."""
    if not isinstance(cfg, Mapping):
        raise OptimizerConfigError(f"optimizer must be a dict such as dict(type='SGD', lr=0.01), got {cfg!r}")
    args = {k: copy.deepcopy(v) for k, v in cfg.items()}
    if "type" not in args:
        raise OptimizerConfigError("optimizer has no 'type' key; add type='SGD' (or any torch.optim class name)")
    cls = _resolve_type(args.pop("type"))
    paramwise = _paramwise(args)
    sig = _check_kwargs(cls, args)
    _check_numbers(cls, args)
    module = model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    if paramwise:
        wd_param = sig.parameters.get("weight_decay")
        default_wd = wd_param.default if wd_param is not None and wd_param.default is not inspect._empty else 0.0
        weight_decay = float(args.get("weight_decay", default_wd))
        params: Any = param_groups(module, weight_decay, **paramwise)
    else:
        params = [p for p in module.parameters()]
    _prefer_fused(cls, sig, args, module)
    try:
        optimizer = cls(params, **args)
    except (TypeError, ValueError) as exc:
        raise OptimizerConfigError(f"optimizer: building {cls.__name__} with {args} failed: {exc}") from exc
    logger.info("optimizer %s (%s), %d param group(s)", cls.__name__,
                ", ".join(f"{k}={v}" for k, v in args.items()), len(optimizer.param_groups))
    return optimizer
