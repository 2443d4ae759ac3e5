"""``BaseMetric``: the seed's ``keys()`` + ``__call__(preds, gts)`` contract on top of streaming updates."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy array, torch tensor (any device) or nested list."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def as_tensor(value: Any) -> torch.Tensor:
    """A torch tensor from a tensor (kept on its device), a numpy array or a nested list (on the CPU)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    return torch.from_numpy(np.ascontiguousarray(np.asarray(value)))


class BaseMetric:
    """Streaming metric.

    ``reset()`` clears the state, ``update(preds, gts)`` adds a batch (dicts of batch-first arrays keyed by
    ``keys()['pred']`` / ``keys()['gt']``), ``compute()`` returns ``dict[str, float]``.
    ``__call__(preds, gts)`` takes lists of per-sample dicts (the design document's contract) and is
    ``reset`` + one ``update`` per sample + ``compute``.

    A metric whose ``update`` takes torch tensors on any device sets ``accepts_tensors = True``; the
    evaluation loop then passes device tensors instead of numpy copies. ``all_reduce()`` (optional) sums the
    state over DDP ranks so that each rank can evaluate its own shard.
    """

    accepts_tensors = False

    def keys(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, preds: Mapping[str, Any], gts: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def __call__(self, preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        if len(preds) != len(gts):
            raise ValueError(f"{type(self).__name__}: {len(preds)} predictions but {len(gts)} ground truths")
        self.reset()
        for pred, gt in zip(preds, gts):
            # a per-sample dict holds one sample: add the batch axis back
            self.update({k: to_numpy(v)[None] for k, v in pred.items()},
                        {k: to_numpy(v)[None] for k, v in gt.items()})
        return self.compute()

    @staticmethod
    def _lookup(data: Mapping[str, Any], key: str, what: str, owner: str) -> Any:
        """``data[key]`` as given (array or tensor); a missing key names the metric and the keys there are."""
        if key not in data:
            raise KeyError(f"{owner}: {what} has no key '{key}' (got {sorted(data)})")
        return data[key]

    @classmethod
    def _get(cls, data: Mapping[str, Any], key: str, what: str, owner: str) -> np.ndarray:
        return to_numpy(cls._lookup(data, key, what, owner))
