"""Loss terms summed on the device, read once per log interval; non-finite losses, gradients and state.

The training step never reads a loss on the host: :class:`LossMeter` adds each step's terms to a device
vector and remembers, also on the device, the first iteration at which each term was NaN/Inf. ``flush()``
copies the sums and those iterations to the host in one transfer (every ``log_config.interval`` iterations,
at the end of an epoch and before every checkpoint) and raises :class:`NonFiniteError` naming the iteration
and the key. :func:`find_nonfinite_state` checks weights and buffers (BN statistics) before a checkpoint.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["NonFiniteError", "LossMeter", "parse_losses", "find_nonfinite_state", "grads_are_finite"]


class NonFiniteError(FloatingPointError):
    """A loss term, the gradient norm, a weight or a BN statistic became NaN/Inf; names iteration and key."""

    def __init__(self, message: str, iteration: int | None = None, keys: list[str] | None = None) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.keys = list(keys or [])


def parse_losses(outputs: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum every output whose key contains ``loss`` (a tensor or a list of tensors).

    Returns the total and every numeric output as a detached 0-d tensor (``loss`` = the total) that nothing
    else writes to; nothing is copied to the host. Python numbers in the outputs become CPU tensors.
    """
    if not isinstance(outputs, Mapping):
        raise TypeError(f"forward_train must return a dict of losses, got {type(outputs).__name__}")
    total: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] = {}
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            if value.dim():
                value = value.mean()
            elif value.grad_fn is None:  # a parameter, a buffer or a no-grad result: it may change in place
                value = value.detach().clone()  # before the meter reads it (up to LossMeter.ROWS steps later)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            value = sum(v.mean() for v in value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            terms[key] = torch.tensor(float(value))
            continue
        else:
            continue  # non-numeric outputs are neither summed nor logged
        if "loss" in key:
            total = value if total is None else total + value
        terms[key] = value.detach()
    if total is None:
        raise ValueError(f"forward_train returned no tensor whose key contains 'loss' (keys: {sorted(outputs)})")
    terms["loss"] = total.detach()
    return total, terms


class LossMeter:
    """Device-side sums of the loss terms of the current log interval, with per-key first non-finite iteration.

    ``add(terms)`` keeps references to the step's terms (detached 0-d tensors, as ``parse_losses`` returns
    them): no kernel, no host transfer. Every ``ROWS`` steps, and before a flush, the kept terms are stacked in
    one kernel and folded into the running sums and first-bad iterations on the device. ``flush(iteration)``
    returns the interval averages as floats (one host copy, plus one all-reduce per call under DDP) or raises
    ``NonFiniteError``.
    """

    ROWS = 64  # steps kept between folds

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.keys: list[str] = []
        self.count = 0
        self.transfers = 0  # host copies made, for tests and benchmarks
        self._sums: torch.Tensor | None = None
        self._first_bad: torch.Tensor | None = None
        self._pending: list[torch.Tensor] = []  # len(keys) terms per step since the last fold, step-major
        self._base: int | None = None  # global iteration before the first step of the interval

    def start(self, iteration: int) -> None:
        """Begin counting after global iteration ``iteration`` (no device work until the first ``add``)."""
        self._base = int(iteration)
        self.keys, self.count, self._sums, self._first_bad = [], 0, None, None
        self._pending = []
        # steps of the interval without the key: one the model returns only sometimes averages over its own steps
        self._missing: dict[str, int] = {}

    def _fold(self) -> None:
        """Add the kept steps to the sums; where a value is NaN/Inf, its iteration joins the running minimum."""
        if not self._pending:
            return
        dev, width = self.device, len(self.keys)
        # a Python number from forward_train became a CPU tensor on another device than the loss
        parts = [p if p.device == dev and not p.dim() else p.reshape(()).to(dev, non_blocking=True)
                 for p in self._pending]
        rows = torch.stack(parts).to(torch.float64).view(-1, width)  # promotes mixed dtypes (bf16 terms)
        filled = rows.shape[0]
        first_row = self._base + 1 + self.count - filled  # global iteration of rows[0]
        at = torch.arange(first_row, first_row + filled, dtype=torch.float64, device=self.device)
        bad_at = torch.where(torch.isfinite(rows), float("inf"), at[:, None]).amin(0)
        self._sums += rows.sum(0)
        self._first_bad = torch.minimum(self._first_bad, bad_at)
        self._pending = []

    def _grow(self, new: list[str]) -> None:
        self._fold()  # the kept steps have the old width
        n = len(new)
        sums = torch.zeros(n, dtype=torch.float64, device=self.device)
        first_bad = torch.full((n,), float("inf"), dtype=torch.float64, device=self.device)
        self._sums = sums if self._sums is None else torch.cat([self._sums, sums])
        self._first_bad = first_bad if self._first_bad is None else torch.cat([self._first_bad, first_bad])
        self.keys += new
        self._missing.update(dict.fromkeys(new, self.count))  # the interval's steps before the key appeared

    def add(self, terms: Mapping[str, torch.Tensor]) -> None:
        if self._base is None:
            self.start(0)
        if not terms.keys() <= self._missing.keys():
            self._grow([k for k in terms if k not in self._missing])
        elif len(self._pending) >= self.ROWS * len(self.keys):
            self._fold()
        if len(terms) == len(self.keys):  # the usual step: every key (the order of first appearance)
            self._pending += map(terms.__getitem__, self.keys)
        else:  # a missing key adds 0 and does not count this step
            for k in self.keys:
                if k not in terms:
                    self._missing[k] += 1
            self._pending.extend(terms[k] if k in terms else self._zero() for k in self.keys)
        self.count += 1

    def _zero(self) -> torch.Tensor:
        return torch.zeros((), dtype=torch.float64, device=self.device)

    def check(self, describe: Any = None) -> None:
        """Raise if a term of this rank was non-finite since the last flush; the sums are kept (one host
        transfer, no collective: only rank 0 saves checkpoints)."""
        if self.count and self._first_bad is not None:
            self._fold()
            self.transfers += 1
            self._raise_if_bad(self._first_bad.tolist(), self.keys, {}, self.count, describe)

    @staticmethod
    def _reduce(values: torch.Tensor, op: str) -> torch.Tensor:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return values
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
        return values / dist.get_world_size() if op == "mean" else values

    @staticmethod
    def _raise_if_bad(bad_at: list[float], keys: list[str], averages: Mapping[str, float], count: int,
                      describe: Any) -> None:
        first = min(bad_at)
        if first == float("inf"):
            return
        k = int(first)
        bad = [key for key, at in zip(keys, bad_at) if at == first]
        where = describe(k) if describe is not None else f"global iter {k}"
        shown = f"; interval averages over {count} iterations: {dict(averages)}" if averages else ""
        raise NonFiniteError(f"non-finite {', '.join(repr(b) for b in bad)} at {where}{shown}", iteration=k, keys=bad)

    def flush(self, iteration: int, describe: Any = None) -> dict[str, float]:
        """Interval averages (DDP: also averaged over ranks); raise on the first non-finite term.

        ``describe(k)`` formats global iteration ``k`` for the message (e.g. ``epoch 2, iter 2/3``).
        """
        if not self.count or self._sums is None or self._first_bad is None:
            self.start(iteration)
            return {}
        self._fold()
        sums, first_bad = self._reduce(self._sums, "mean"), self._reduce(self._first_bad, "min")
        host = torch.cat([sums, first_bad]).tolist()  # the one device-to-host copy of the interval
        self.transfers += 1
        n, keys, count = len(self.keys), self.keys, self.count
        averages = {k: v / (count - self._missing[k]) for k, v in zip(keys, host[:n])}
        self.start(iteration)
        self._raise_if_bad(host[n:], keys, averages, count, describe)
        return averages


def find_nonfinite_state(module: torch.nn.Module, limit: int = 5) -> list[str]:
    """Names of floating-point weights and buffers holding NaN/Inf (at most ``limit``); one host transfer."""
    named = [(name, t.detach()) for name, t in module.state_dict(keep_vars=True).items()
             if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    if not named:
        return []
    # max |x| is NaN or Inf exactly when the tensor holds one (a 2-norm could overflow on large finite values)
    peaks = torch._foreach_norm([t for _, t in named], float("inf"))
    finite = torch.isfinite(torch.stack([p.float() for p in peaks])).tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok][:limit]


def grads_are_finite(params: list[torch.Tensor]) -> torch.Tensor:
    """A device bool: every gradient of ``params`` is finite (parameters without a gradient are skipped)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool)
    peaks = torch._foreach_norm(grads, float("inf"))
    return torch.isfinite(torch.stack([p.float() for p in peaks])).all()
