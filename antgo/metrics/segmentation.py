"""``SegMIOU``: semantic-segmentation IoU from a streamed confusion matrix."""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from antgo.metrics.base import BaseMetric, as_tensor
from antgo.registry import METRICS

logger = logging.getLogger(__name__)

IGNORED_SHARE_WARNING = 0.3  # ignored / labelled pixels above which a class without ground truth is suspicious


@METRICS.register_module()
class SegMIOU(BaseMetric):
    """Mean intersection over union, accumulated as a ``class_num × class_num`` int64 confusion matrix.

    ``confusion_matrix[t, p]`` counts pixels of ground-truth class ``t`` predicted as ``p``; pixels whose
    ground truth is ``ignore_val`` (or outside ``[0, class_num)``) are skipped. Memory is O(class_num²).
    ``update`` takes numpy arrays or torch tensors on any device; the matrix is counted with
    ``torch.bincount`` where the predictions live (on the GPU during training), so nothing is copied to the
    host per batch. Under DDP ``all_reduce()`` sums the matrices of every rank.

    ``compute()`` warns (once per evaluation, from counts kept on the device beside the matrix) about
    ground-truth values that are neither a class nor ``ignore_val``, and about classes with no ground truth
    while ``ignore_val`` covers much of the labelled area (binary 0/255 masks: every foreground pixel ignored).

    Outputs: ``miou`` (mean IoU over the classes present in the ground truth or the prediction; classes
    absent from both are excluded rather than counted as 0), ``pixel_acc`` (correct / counted pixels),
    ``macc`` (mean per-class recall over classes present in the ground truth) and ``iou_<name>`` per class
    (NaN for absent classes).
    """

    accepts_tensors = True  # the evaluation loop may pass device tensors to update()

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
        self.reset()

    def keys(self) -> dict[str, list[str]]:
        return {"pred": [self.pred_key], "gt": [self.gt_key]}

    def reset(self) -> None:
        # rows: ground truth; an extra last column counts predictions outside [0, class_num) (always wrong)
        self._counts = torch.zeros((self.class_num, self.class_num + 1), dtype=torch.int64)
        # ground-truth pixels left out: [ignore_val, any other value outside [0, class_num)]
        self._skipped = torch.zeros(2, dtype=torch.int64)

    @property
    def confusion_matrix(self) -> np.ndarray:
        """The ``class_num × class_num`` int64 matrix (numpy, on the host)."""
        return self._counts[:, :self.class_num].cpu().numpy()

    @property
    def invalid_pred(self) -> np.ndarray:
        """Per ground-truth class: pixels predicted as a label outside ``[0, class_num)``."""
        return self._counts[:, self.class_num].cpu().numpy()

    def update(self, preds: Mapping[str, Any], gts: Mapping[str, Any]) -> None:
        """Add a batch: ``pred_segments`` (B, H, W) class indices, ``segments`` (B, H, W) or (B, 1, H, W)."""
        pred = as_tensor(self._lookup(preds, self.pred_key, "preds", "SegMIOU"))
        gt = as_tensor(self._lookup(gts, self.gt_key, "gts", "SegMIOU")).to(pred.device, non_blocking=True)
        if gt.dim() == pred.dim() + 1 and gt.shape[1] == 1:
            gt = gt[:, 0]
        if pred.dim() == gt.dim() + 1 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.shape != gt.shape:
            raise ValueError(f"SegMIOU: prediction shape {tuple(pred.shape)} does not match ground-truth shape "
                             f"{tuple(gt.shape)} (expected (B, H, W) for both; (B, 1, H, W) ground truth is squeezed)")
        if self._counts.device != pred.device:
            self._counts, self._skipped = self._counts.to(pred.device), self._skipped.to(pred.device)
        counts, skipped = self._hist(pred.reshape(-1), gt.reshape(-1))
        self._counts += counts
        self._skipped += skipped

    def _hist(self, pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the batch's matrix, its [ignored, out-of-range] ground-truth pixel counts), all on the device."""
        n = self.class_num
        gt = gt.long()
        pred = pred.long()
        mask = (gt >= 0) & (gt < n)
        ignored = gt == self.ignore_val if self.ignore_val is not None else torch.zeros_like(mask)
        mask &= ~ignored
        # a prediction outside the class range lands in the extra column of its ground-truth row
        pred = torch.where((pred >= 0) & (pred < n), pred, torch.full_like(pred, n))
        # uncounted pixels go to two more bins (ignored, out of range): no boolean indexing and no bincount,
        # which both read the device (a host sync per batch on CUDA)
        size = n * (n + 1)
        index = torch.where(mask, (n + 1) * gt + pred, torch.where(ignored, size, size + 1))
        counts = torch.zeros(size + 2, dtype=torch.int64, device=index.device)
        counts.scatter_add_(0, index, torch.ones_like(index))
        return counts[:size].reshape(n, n + 1), counts[size:]

    def all_reduce(self) -> None:
        """Sum the matrix over the ranks of the default process group (a no-op without one)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self._counts, op=dist.ReduceOp.SUM)
            dist.all_reduce(self._skipped, op=dist.ReduceOp.SUM)

    def compute(self) -> dict[str, float]:
        # the one host copy of an evaluation (the skipped counts ride along)
        counts = torch.cat([self._counts.flatten(), self._skipped]).cpu().numpy().astype(np.float64)
        counts, (ignored, out_of_range) = counts[:-2].reshape(self._counts.shape), counts[-2:]
        cm, invalid = counts[:, :self.class_num], counts[:, self.class_num]
        if invalid.any():
            logger.warning("SegMIOU: %d predicted labels outside [0, %d)", int(invalid.sum()), self.class_num)
        tp = np.diag(cm)
        gt_count = cm.sum(axis=1) + invalid  # an invalid prediction is a miss of its gt class
        self._warn_about_ground_truth(gt_count, ignored, out_of_range)
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
        logger.debug("SegMIOU: miou %.4f, pixel_acc %.4f over %d pixels", result["miou"], result["pixel_acc"],
                     int(total))
        return result

    def _warn_about_ground_truth(self, gt_count: np.ndarray, ignored: float, out_of_range: float) -> None:
        """Masks that do not match the classes: values outside them, or a class hidden under ``ignore_val``."""
        n, labelled = self.class_num, gt_count.sum() + ignored + out_of_range
        if out_of_range:
            besides = f" that are not the ignore value {self.ignore_val}" if self.ignore_val is not None else ""
            logger.warning("SegMIOU: %d ground-truth pixels (%.1f%%) have values outside 0..%d%s: they are left "
                           "out of the metric; relabel them in the masks, or set class_num (now %d) to cover them",
                           int(out_of_range), 100 * out_of_range / labelled, n - 1, besides, n)
        absent = [name for name, count in zip(self.class_names, gt_count) if count == 0]
        share = ignored / labelled if labelled else 0.0
        # 0/255 masks: one class and the ignore value only, or a large ignored share beside an empty class
        one_class_only = n > 1 and len(absent) == n - 1
        if absent and (share > IGNORED_SHARE_WARNING or (ignored and one_class_only)):
            logger.warning("SegMIOU: classes %s have no ground-truth pixels while the ignore value %s covers "
                           "%.0f%% of the labelled pixels: do the masks use %s for a class (binary 0/255 masks)? "
                           "Convert it to the class index (e.g. 255 -> 1) in the masks", absent, self.ignore_val,
                           100 * share, self.ignore_val)
