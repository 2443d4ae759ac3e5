"""``Accuracy``: top-k classification accuracy, streamed."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from antgo.metrics.base import BaseMetric
from antgo.registry import METRICS


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Top-k accuracy as a fraction in [0, 1], reported as ``top1``, ``top5``, ...

    ``pred`` is (B, C) scores (probabilities or logits) or (B,) class indices (top-1 only); ``label`` is
    (B,) or (B, 1) integer classes. ``confusion_matrix[t, p]`` counts samples of class ``t`` predicted
    (top-1) as ``p``; it grows with the largest class index seen (the pipeline plots it).
    """

    def __init__(self, topk: int | Sequence[int] = (1,), pred_key: str = "pred", gt_key: str = "label") -> None:
        self.topk = (int(topk),) if isinstance(topk, int) else tuple(int(k) for k in topk)
        if not self.topk or min(self.topk) < 1:
            raise ValueError(f"Accuracy: topk must be positive integers, got {topk!r}")
        self.pred_key = pred_key
        self.gt_key = gt_key
        self.reset()

    def keys(self) -> dict[str, list[str]]:
        return {"pred": [self.pred_key], "gt": [self.gt_key]}

    def reset(self) -> None:
        self.correct = {k: 0 for k in self.topk}
        self.count = 0
        self.confusion_matrix = np.zeros((0, 0), dtype=np.int64)

    def update(self, preds: Mapping[str, Any], gts: Mapping[str, Any]) -> None:
        pred = self._get(preds, self.pred_key, "preds", "Accuracy")
        label = self._get(gts, self.gt_key, "gts", "Accuracy").reshape(-1).astype(np.int64)
        if pred.ndim == 1 or (pred.ndim == 2 and pred.shape[1] == 1 and np.issubdtype(pred.dtype, np.integer)):
            if max(self.topk) > 1:
                raise ValueError("Accuracy: top-k > 1 needs (B, C) scores, got class indices")
            ranked = pred.reshape(-1, 1).astype(np.int64)
        elif pred.ndim == 2:
            ranked = np.argsort(-pred, axis=1, kind="stable")[:, : max(self.topk)]
        else:
            raise ValueError(f"Accuracy: prediction must be (B, C) or (B,), got shape {pred.shape}")
        if ranked.shape[0] != label.shape[0]:
            raise ValueError(f"Accuracy: {ranked.shape[0]} predictions but {label.shape[0]} labels")
        hits = ranked == label[:, None]
        for k in self.topk:
            self.correct[k] += int(hits[:, :k].any(axis=1).sum())
        self.count += int(label.shape[0])
        self._confuse(label, ranked[:, 0], pred.shape[1] if pred.ndim == 2 else 0)

    def _confuse(self, label: np.ndarray, top1: np.ndarray, num_scores: int) -> None:
        valid = (label >= 0) & (top1 >= 0)
        n = max(self.confusion_matrix.shape[0], num_scores, int(label.max(initial=-1)) + 1,
                int(top1.max(initial=-1)) + 1)
        if n > self.confusion_matrix.shape[0]:
            grown = np.zeros((n, n), dtype=np.int64)
            m = self.confusion_matrix.shape[0]
            grown[:m, :m] = self.confusion_matrix
            self.confusion_matrix = grown
        np.add.at(self.confusion_matrix, (label[valid], top1[valid]), 1)

    def compute(self) -> dict[str, float]:
        return {f"top{k}": (self.correct[k] / self.count if self.count else 0.0) for k in self.topk}
