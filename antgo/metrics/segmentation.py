"""``SegMIOU``: semantic-segmentation IoU from a streamed confusion matrix."""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from antgo.metrics.base import BaseMetric
from antgo.registry import METRICS

logger = logging.getLogger(__name__)


@METRICS.register_module()
class SegMIOU(BaseMetric):
    """Mean intersection over union, accumulated as a ``class_num × class_num`` int64 confusion matrix.

    ``confusion_matrix[t, p]`` counts pixels of ground-truth class ``t`` predicted as ``p``; pixels whose
    ground truth is ``ignore_val`` (or outside ``[0, class_num)``) are skipped. Memory is O(class_num²).

    Outputs: ``miou`` (mean IoU over the classes present in the ground truth or the prediction; classes
    absent from both are excluded rather than counted as 0), ``pixel_acc`` (correct / counted pixels),
    ``macc`` (mean per-class recall over classes present in the ground truth) and ``iou_<name>`` per class
    (NaN for absent classes).
    """

    def __init__(self, class_num: int, ignore_val: int | None = 255, class_names: Sequence[str] | None = None,
                 pred_key: str = "pred_segments", gt_key: str = "segments") -> None:
        if class_num < 1:
            raise ValueError(f"SegMIOU: class_num must be >= 1, got {class_num}")
        if class_names is not None and len(class_names) != class_num:
            raise ValueError(f"SegMIOU: {len(class_names)} class_names for class_num={class_num}")
        self.class_num = int(class_num)
        self.ignore_val = ignore_val
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(class_num)]
        self.pred_key = pred_key
        self.gt_key = gt_key
        self.confusion_matrix = np.zeros((self.class_num, self.class_num), dtype=np.int64)
        # per ground-truth class: pixels predicted as a label outside [0, class_num) (always wrong)
        self.invalid_pred = np.zeros(self.class_num, dtype=np.int64)

    def keys(self) -> dict[str, list[str]]:
        return {"pred": [self.pred_key], "gt": [self.gt_key]}

    def reset(self) -> None:
        self.confusion_matrix = np.zeros((self.class_num, self.class_num), dtype=np.int64)
        self.invalid_pred = np.zeros(self.class_num, dtype=np.int64)

    def update(self, preds: Mapping[str, Any], gts: Mapping[str, Any]) -> None:
        """Add a batch: ``pred_segments`` (B, H, W) class indices, ``segments`` (B, H, W) or (B, 1, H, W)."""
        pred = self._get(preds, self.pred_key, "preds", "SegMIOU")
        gt = self._get(gts, self.gt_key, "gts", "SegMIOU")
        if gt.ndim == pred.ndim + 1 and gt.shape[1] == 1:
            gt = gt[:, 0]
        if pred.ndim == gt.ndim + 1 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.shape != gt.shape:
            raise ValueError(f"SegMIOU: prediction shape {pred.shape} does not match ground-truth shape {gt.shape} "
                             f"(expected (B, H, W) for both; (B, 1, H, W) ground truth is squeezed)")
        self.confusion_matrix += self._hist(pred.reshape(-1), gt.reshape(-1))

    def _hist(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        gt = gt.astype(np.int64, copy=False)
        pred = pred.astype(np.int64, copy=False)
        mask = (gt >= 0) & (gt < self.class_num)
        if self.ignore_val is not None:
            mask &= gt != self.ignore_val
        # predictions outside the class range count as wrong for their ground-truth class
        valid_pred = (pred >= 0) & (pred < self.class_num)
        bad = mask & ~valid_pred
        mask &= valid_pred
        n = self.class_num
        hist = np.bincount(n * gt[mask] + pred[mask], minlength=n * n).reshape(n, n)
        if bad.any():
            self.invalid_pred += np.bincount(gt[bad], minlength=n)
            logger.warning("SegMIOU: %d predicted labels outside [0, %d)", int(bad.sum()), n)
        return hist

    def compute(self) -> dict[str, float]:
        cm = self.confusion_matrix.astype(np.float64)
        tp = np.diag(cm)
        gt_count = cm.sum(axis=1) + self.invalid_pred  # an invalid prediction is a miss of its gt class
        pred_count = cm.sum(axis=0)
        union = gt_count + pred_count - tp
        present = union > 0
        iou = np.full(self.class_num, np.nan)
        iou[present] = tp[present] / union[present]
        in_gt = gt_count > 0
        total = gt_count.sum()
        result = {
            "miou": float(iou[present].mean()) if present.any() else 0.0,
            "pixel_acc": float(tp.sum() / total) if total > 0 else 0.0,
            "macc": float((tp[in_gt] / gt_count[in_gt]).mean()) if in_gt.any() else 0.0,
        }
        for name, value in zip(self.class_names, iou):
            result[f"iou_{name}"] = float(value)
        logger.debug("SegMIOU: miou %.4f, pixel_acc %.4f over %d pixels", result["miou"], result["pixel_acc"], int(total))
        return result
