"""``BaseMetric``: the seed's ``keys()`` + ``__call__(preds, gts)`` contract on top of streaming updates."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy array, torch tensor (any device) or nested list."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class BaseMetric:
    """Streaming metric.

    ``reset()`` clears the state, ``update(preds, gts)`` adds a batch (dicts of batch-first arrays keyed by
    ``keys()['pred']`` / ``keys()['gt']``), ``compute()`` returns ``dict[str, float]``.
    ``__call__(preds, gts)`` takes lists of per-sample dicts (the design document's contract) and is
    ``reset`` + one ``update`` per sample + ``compute``.
    """

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
    def _get(data: Mapping[str, Any], key: str, what: str, owner: str) -> np.ndarray:
        if key not in data:
            raise KeyError(f"{owner}: {what} has no key '{key}' (got {sorted(data)})")
        return to_numpy(data[key])
