"""Learning-rate schedules (mmcv policy names) as pure functions of the global iteration.

``LrScheduler.lr_at(global_iter)`` depends only on the iteration index, the base learning rates and the
config, so a resumed run reproduces the exact learning rates of an uninterrupted one. Formulas are listed
in ``docs/optimization.md``.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch

__all__ = ["LrScheduler", "LrConfigError", "build_lr_scheduler", "POLICIES"]

_WARMUP_KINDS = (None, "constant", "linear", "exp")
_COMMON_KEYS = {"policy", "by_epoch", "warmup", "warmup_iters", "warmup_ratio", "warmup_by_epoch"}


class LrConfigError(ValueError):
    """A malformed ``lr_config``: the message names the key (``lr_config.<key>``) and the fix."""


def _anneal_cos(start: float, end: float, factor: float) -> float:
    return end + 0.5 * (start - end) * (math.cos(math.pi * factor) + 1.0)


def _anneal_linear(start: float, end: float, factor: float) -> float:
    return start + (end - start) * factor


def _end_lr(base: float, min_lr: float | None, min_lr_ratio: float | None) -> float:
    return base * min_lr_ratio if min_lr_ratio is not None else (min_lr or 0.0)


def _check_min_lr(args: dict[str, Any]) -> None:
    if args.get("min_lr") is not None and args.get("min_lr_ratio") is not None:
        raise LrConfigError("lr_config.min_lr and lr_config.min_lr_ratio are mutually exclusive; set only one of them")


# Each policy maps (base_lr, progress, total, **args) -> lr. ``progress``/``total`` are epochs or iterations.
def _fixed(base: float, p: float, total: float) -> float:
    return base


def _step(base: float, p: float, total: float, step: int | Sequence[int], gamma: float = 0.1,
          min_lr: float | None = None) -> float:
    if isinstance(step, int):
        exp = int(p // step)
    else:
        exp = sum(1 for milestone in step if p >= milestone)
    lr = base * gamma ** exp
    return max(lr, min_lr) if min_lr is not None else lr


def _exp(base: float, p: float, total: float, gamma: float) -> float:
    return base * gamma ** p


def _poly(base: float, p: float, total: float, power: float = 1.0, min_lr: float = 0.0) -> float:
    frac = min(p / total, 1.0)
    return (base - min_lr) * (1.0 - frac) ** power + min_lr


def _cosine(base: float, p: float, total: float, min_lr: float | None = None,
            min_lr_ratio: float | None = None) -> float:
    return _anneal_cos(base, _end_lr(base, min_lr, min_lr_ratio), min(p / total, 1.0))


def _linear(base: float, p: float, total: float, min_lr: float | None = None,
            min_lr_ratio: float | None = None) -> float:
    return _anneal_linear(base, _end_lr(base, min_lr, min_lr_ratio), min(p / total, 1.0))


def _one_cycle(base: float, p: float, total: float, max_lr: Any = None, total_steps: int | None = None,
               pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
               anneal_strategy: str = "cos", three_phase: bool = False) -> float:
    # ``base`` is the initial lr (max_lr / div_factor); same phases as torch.optim.lr_scheduler.OneCycleLR.
    steps = float(total_steps or total)
    peak, low = base * div_factor, base / final_div_factor
    if three_phase:
        phases = [(pct_start * steps - 1, base, peak), (2 * pct_start * steps - 2, peak, base), (steps - 1, base, low)]
    else:
        phases = [(pct_start * steps - 1, base, peak), (steps - 1, peak, low)]
    anneal = _anneal_cos if anneal_strategy == "cos" else _anneal_linear
    start_iter = 0.0
    for i, (end_iter, start_lr, end_lr) in enumerate(phases):
        if p <= end_iter or i == len(phases) - 1:
            return anneal(start_lr, end_lr, min((p - start_iter) / (end_iter - start_iter), 1.0))
        start_iter = end_iter
    raise AssertionError("unreachable")


# canonical name -> (function, required keys, optional keys with defaults)
POLICIES: dict[str, tuple[Callable[..., float], set[str], dict[str, Any]]] = {
    "Fixed": (_fixed, set(), {}),
    "Step": (_step, {"step"}, {"gamma": 0.1, "min_lr": None}),
    "Exp": (_exp, {"gamma"}, {}),
    "Poly": (_poly, set(), {"power": 1.0, "min_lr": 0.0}),
    "CosineAnnealing": (_cosine, set(), {"min_lr": None, "min_lr_ratio": None}),
    "LinearAnnealing": (_linear, set(), {"min_lr": None, "min_lr_ratio": None}),
    "OneCycle": (_one_cycle, {"max_lr"}, {"total_steps": None, "pct_start": 0.3, "div_factor": 25.0,
                                          "final_div_factor": 1e4, "anneal_strategy": "cos", "three_phase": False}),
}


class LrScheduler:
    """Sets each param group's lr from a pure function of the global iteration (warmup + policy)."""

    def __init__(self, optimizer: torch.optim.Optimizer, policy: str, policy_args: dict[str, Any], *,
                 max_epochs: int, iters_per_epoch: int, by_epoch: bool = True, warmup: str | None = None,
                 warmup_iters: int = 0, warmup_ratio: float = 0.1, warmup_by_epoch: bool = False,
                 base_lrs: Sequence[float] | None = None) -> None:
        self.optimizer = optimizer
        self.policy = policy
        self.policy_args = dict(policy_args)
        self._fn = POLICIES[policy][0]
        self.max_epochs, self.iters_per_epoch = int(max_epochs), int(iters_per_epoch)
        self.max_iters = self.max_epochs * self.iters_per_epoch
        self.by_epoch = by_epoch
        self.warmup, self.warmup_ratio = warmup, float(warmup_ratio)
        # Warmup always advances per iteration; warmup_by_epoch only changes the unit of warmup_iters.
        self.warmup_len = int(warmup_iters) * (self.iters_per_epoch if warmup_by_epoch else 1) if warmup else 0
        if base_lrs is None:
            base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self.base_lrs = [float(lr) for lr in base_lrs]
        for group, lr in zip(optimizer.param_groups, self.base_lrs):
            group["initial_lr"] = lr
        self.last_iter: int | None = None

    def regular_lr(self, global_iter: int) -> list[float]:
        """The policy's lr without warmup."""
        if self.by_epoch:
            progress, total = global_iter // self.iters_per_epoch, self.max_epochs
        else:
            progress, total = global_iter, self.max_iters
        return [self._fn(base, progress, max(total, 1), **self.policy_args) for base in self.base_lrs]

    def lr_at(self, global_iter: int) -> list[float]:
        """The lr of every param group for the iteration ``global_iter`` (0-based)."""
        regular = self.regular_lr(global_iter)
        if not self.warmup or global_iter >= self.warmup_len:
            return regular
        t, r = global_iter / self.warmup_len, self.warmup_ratio
        if self.warmup == "constant":
            return [lr * r for lr in regular]
        if self.warmup == "linear":
            return [lr * (1 - (1 - t) * (1 - r)) for lr in regular]
        return [lr * r ** (1 - t) for lr in regular]

    def step(self, global_iter: int) -> list[float]:
        """Set the lr for the iteration about to run; returns the new lrs."""
        lrs = self.lr_at(global_iter)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self.last_iter = global_iter
        return lrs

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "base_lrs": list(self.base_lrs), "last_iter": self.last_iter}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        base_lrs = list(state["base_lrs"])
        if len(base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"scheduler state has {len(base_lrs)} base lrs but the optimizer has "
                             f"{len(self.optimizer.param_groups)} param groups")
        self.base_lrs = [float(lr) for lr in base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["initial_lr"] = lr
        self.last_iter = state.get("last_iter")

    def __repr__(self) -> str:
        return (f"LrScheduler(policy={self.policy}, by_epoch={self.by_epoch}, warmup={self.warmup}, "
                f"warmup_len={self.warmup_len} iters, base_lrs={self.base_lrs})")


def _canonical_policy(name: Any) -> str:
    if not isinstance(name, str):
        raise LrConfigError(f"lr_config.policy must be a string such as 'CosineAnnealing', got {name!r}")
    by_lower = {k.lower(): k for k in POLICIES}
    key = name.lower().removesuffix("lrupdaterhook")
    if key not in by_lower:
        close = difflib.get_close_matches(key, list(by_lower), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(by_lower[c] for c in close)}?" if close else ""
        raise LrConfigError(f"lr_config.policy: unknown policy '{name}'.{hint} Known: {', '.join(POLICIES)}")
    return by_lower[key]


def _policy_args(policy: str, cfg: dict[str, Any]) -> dict[str, Any]:
    _, required, optional = POLICIES[policy]
    args = {k: v for k, v in cfg.items() if k not in _COMMON_KEYS}
    for key in args:
        if key not in required and key not in optional:
            allowed = sorted(_COMMON_KEYS | required | set(optional))
            close = difflib.get_close_matches(key, allowed, n=2)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise LrConfigError(f"lr_config.{key}: not a parameter of policy '{policy}'.{hint} "
                                f"Allowed keys: {', '.join(allowed)}")
    for key in required:
        if key not in args:
            raise LrConfigError(f"lr_config.{key} is required by policy '{policy}'")
    _check_min_lr(args)
    step = args.get("step")
    if policy == "Step" and not (isinstance(step, int) and step > 0 or isinstance(step, (list, tuple))
                                 and all(isinstance(m, int) for m in step)):
        raise LrConfigError(f"lr_config.step must be a positive int or a list of int milestones, got {step!r}")
    if policy == "OneCycle" and args.get("anneal_strategy", "cos") not in ("cos", "linear"):
        raise LrConfigError("lr_config.anneal_strategy must be 'cos' or 'linear'")
    return {**optional, **args}


def _validate_warmup(cfg: dict[str, Any]) -> None:
    warmup = cfg.get("warmup")
    if warmup not in _WARMUP_KINDS:
        raise LrConfigError(f"lr_config.warmup must be one of None, 'constant', 'linear', 'exp'; got {warmup!r}")
    if warmup is not None:
        if not isinstance(cfg.get("warmup_iters"), int) or cfg["warmup_iters"] <= 0:
            raise LrConfigError(f"lr_config.warmup_iters must be a positive int when warmup='{warmup}', "
                                f"got {cfg.get('warmup_iters')!r}")
        if not 0 < cfg.get("warmup_ratio", 0.1) <= 1:
            raise LrConfigError(f"lr_config.warmup_ratio must be in (0, 1], got {cfg['warmup_ratio']!r}")


def build_lr_scheduler(optimizer: torch.optim.Optimizer, lr_config: Mapping[str, Any] | None,
                       max_epochs: int, iters_per_epoch: int) -> LrScheduler:
    """Build the schedule described by ``lr_config`` (None means a fixed lr). ``lr_config`` is not modified."""
    cfg = dict(lr_config or {"policy": "Fixed"})
    if "policy" not in cfg:
        raise LrConfigError(f"lr_config has no 'policy' key; add policy='<name>' (one of {', '.join(POLICIES)})")
    if max_epochs <= 0 or iters_per_epoch <= 0:
        raise ValueError(f"max_epochs ({max_epochs}) and iters_per_epoch ({iters_per_epoch}) must be positive")
    policy = _canonical_policy(cfg["policy"])
    args = _policy_args(policy, cfg)
    _validate_warmup(cfg)
    by_epoch = bool(cfg.get("by_epoch", True))
    base_lrs = None
    if policy == "OneCycle":
        # OneCycle is iteration based (as in mmcv); its starting lr comes from max_lr, not the optimizer's lr.
        if cfg.get("by_epoch") is True:
            raise LrConfigError("lr_config.by_epoch: policy 'OneCycle' is iteration based; remove by_epoch or set False")
        by_epoch = False
        max_lr = args.pop("max_lr")
        groups = len(optimizer.param_groups)
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * groups
        if len(max_lrs) != groups:
            raise LrConfigError(f"lr_config.max_lr has {len(max_lrs)} values for {groups} param groups")
        base_lrs = [float(m) / args["div_factor"] for m in max_lrs]
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr
    return LrScheduler(optimizer, policy, args, max_epochs=max_epochs, iters_per_epoch=iters_per_epoch,
                       by_epoch=by_epoch, warmup=cfg.get("warmup"), warmup_iters=cfg.get("warmup_iters", 0),
                       warmup_ratio=cfg.get("warmup_ratio", 0.1),
                       warmup_by_epoch=bool(cfg.get("warmup_by_epoch", False)), base_lrs=base_lrs)
