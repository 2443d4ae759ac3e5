"""``BaseModule``: the root class of antgo models (weight initialisation and train/test dispatch)."""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

_LAYER_TYPES: dict[str, tuple[type, ...]] = {
    "Conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d),
    "Conv1d": (nn.Conv1d,),
    "Conv2d": (nn.Conv2d,),
    "Conv3d": (nn.Conv3d,),
    "Linear": (nn.Linear,),
    "BN": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
    "BatchNorm2d": (nn.BatchNorm2d,),
    "GN": (nn.GroupNorm,),
    "LN": (nn.LayerNorm,),
}
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
_INIT_TYPES = ("Kaiming", "Normal", "Constant", "Xavier", "Uniform", "Pretrained")


def _layer_classes(layer: str | Iterable[str] | None) -> tuple[type, ...]:
    if layer is None:
        return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
    names = [layer] if isinstance(layer, str) else list(layer)
    classes: list[type] = []
    for name in names:
        if name not in _LAYER_TYPES:
            raise ValueError(f"init_cfg: unknown layer '{name}'; use one of {sorted(_LAYER_TYPES)}")
        classes.extend(_LAYER_TYPES[name])
    return tuple(classes)


def _init_bias(module: nn.Module, bias: float) -> None:
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)


def _apply_init(module: nn.Module, cfg: dict[str, Any]) -> None:
    """Apply one ``init_cfg`` dict (not Pretrained) to every matching layer of ``module``."""
    kind = cfg["type"]
    classes = _layer_classes(cfg.get("layer"))
    bias = float(cfg.get("bias", 0.0))
    for m in module.modules():
        if not isinstance(m, classes) or getattr(m, "weight", None) is None:
            continue
        if kind == "Kaiming":
            nn.init.kaiming_normal_(m.weight, a=cfg.get("a", 0), mode=cfg.get("mode", "fan_out"),
                                    nonlinearity=cfg.get("nonlinearity", "relu"))
        elif kind == "Normal":
            nn.init.normal_(m.weight, cfg.get("mean", 0.0), cfg.get("std", 1.0))
        elif kind == "Constant":
            nn.init.constant_(m.weight, cfg.get("val", 1.0))
        elif kind == "Xavier":
            if cfg.get("distribution", "normal") == "uniform":
                nn.init.xavier_uniform_(m.weight, gain=cfg.get("gain", 1.0))
            else:
                nn.init.xavier_normal_(m.weight, gain=cfg.get("gain", 1.0))
        elif kind == "Uniform":
            nn.init.uniform_(m.weight, cfg.get("a", 0.0), cfg.get("b", 1.0))
        _init_bias(m, bias)


def load_pretrained(module: nn.Module, checkpoint: str, prefix: str | None = None, strict: bool = False) -> None:
    """Load a local checkpoint (a state dict, or a dict holding ``state_dict``) into ``module``.

    ``prefix`` keeps only keys starting with it (and strips it), e.g. ``'backbone.'``.
    """
    path = os.path.expanduser(checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_cfg Pretrained: checkpoint '{checkpoint}' does not exist")
    from antgo.engine.checkpoint import read_checkpoint  # the one reader: weights_only=True, never runs code

    state = read_checkpoint(path, map_location="cpu")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if prefix:
        prefix = prefix if prefix.endswith(".") else prefix + "."
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise KeyError(f"init_cfg Pretrained: no key of '{checkpoint}' starts with prefix '{prefix}'")
    result = module.load_state_dict(state, strict=strict)
    if result.missing_keys or result.unexpected_keys:
        logger.warning("Pretrained %s into %s: missing %s, unexpected %s", checkpoint, type(module).__name__,
                       result.missing_keys[:10], result.unexpected_keys[:10])
    logger.info("Loaded pretrained weights from %s into %s", checkpoint, type(module).__name__)


class BaseModule(nn.Module):
    """An ``nn.Module`` with config-driven ``init_weights`` and a train/test ``forward`` dispatch.

    ``init_cfg`` is a dict or a list of dicts: ``dict(type='Kaiming'|'Normal'|'Constant'|'Xavier'|'Uniform',
    layer=['Conv2d', ...], ...)`` or ``dict(type='Pretrained', checkpoint=path, prefix=None)``.
    Without ``init_cfg`` the PyTorch defaults stay, except that norm layers get weight 1 and bias 0.
    """

    def __init__(self, init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__()
        self.init_cfg = init_cfg
        self._is_init = False

    @property
    def is_init(self) -> bool:
        return self._is_init

    def _init_cfgs(self) -> list[dict]:
        if self.init_cfg is None:
            return []
        cfgs = [self.init_cfg] if isinstance(self.init_cfg, dict) else list(self.init_cfg)
        for cfg in cfgs:
            if not isinstance(cfg, dict) or cfg.get("type") not in _INIT_TYPES:
                raise ValueError(f"{type(self).__name__}: init_cfg entry {cfg!r} needs type in {_INIT_TYPES}")
        return cfgs

    def init_weights(self) -> None:
        """Initialise this module, then every child that has its own ``init_weights``.

        Pretrained weights load last, so they override the random initialisers.
        """
        cfgs = self._init_cfgs()
        for m in self.modules():
            if isinstance(m, _NORM_TYPES) and getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for cfg in cfgs:
            if cfg["type"] != "Pretrained":
                _apply_init(self, cfg)
        # Children with their own init_cfg refine what the parent set (e.g. a head's Normal init).
        for child in self.children():
            _init_child(child)
        for cfg in cfgs:
            if cfg["type"] == "Pretrained":
                load_pretrained(self, cfg["checkpoint"], cfg.get("prefix"), cfg.get("strict", False))
        self._is_init = True

    def forward(self, *args: Any, return_loss: bool | None = None, **kwargs: Any) -> Any:
        """``forward_train`` in training mode (or with ``return_loss=True``), else ``forward_test``."""
        train = self.training if return_loss is None else return_loss
        return self.forward_train(*args, **kwargs) if train else self.forward_test(*args, **kwargs)

    def forward_train(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward_train")

    def forward_test(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward_test")


def _init_child(module: nn.Module) -> None:
    """Call ``init_weights`` on ``module`` if it has one, else look one level deeper."""
    if hasattr(module, "init_weights") and callable(module.init_weights):
        module.init_weights()
        return
    for child in module.children():
        _init_child(child)
