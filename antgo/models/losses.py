"""Losses registered in ``LOSSES`` (the same registry as ``MODELS``)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from antgo.registry import LOSSES


@LOSSES.register_module()
class CrossEntropyLoss(nn.Module):
    """Softmax (or sigmoid) cross-entropy.

    With ``avg_non_ignore=True`` (default) the mean runs over pixels whose label is not ``ignore_index``,
    so void pixels do not dilute the loss; when every pixel is ignored the loss is 0 (not NaN) and still
    has a gradient path. ``class_weight`` weights each class; the mean is then weighted as in
    ``F.cross_entropy(reduction='mean')``.
    """

    def __init__(self, use_sigmoid: bool = False, loss_weight: float = 1.0, ignore_index: int | None = None,
                 class_weight: Sequence[float] | None = None, avg_non_ignore: bool = True,
                 loss_name: str = "loss_seg") -> None:
        super().__init__()
        self.use_sigmoid = use_sigmoid
        self.loss_weight = float(loss_weight)
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore
        self.loss_name = loss_name
        weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        self.register_buffer("class_weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
        """``logits`` (N, C, ...) and integer ``target`` (N, ...) for softmax; same shapes for sigmoid."""
        ignore = self.ignore_index if ignore_index is None else ignore_index
        if self.use_sigmoid:
            return self.loss_weight * self._sigmoid(logits, target, ignore)
        ignore = -100 if ignore is None else int(ignore)
        target = target.long()
        weight = self.class_weight.to(logits.dtype) if self.class_weight is not None else None
        per_pixel = F.cross_entropy(logits, target, weight=weight, reduction="none", ignore_index=ignore)
        valid = target != ignore
        if weight is not None:
            denom = weight[target.clamp(0, weight.numel() - 1)] * valid
            denom = denom.sum()
        elif self.avg_non_ignore:
            denom = valid.sum().to(per_pixel.dtype)
        else:
            denom = torch.tensor(float(per_pixel.numel()), dtype=per_pixel.dtype, device=per_pixel.device)
        # clamp: an all-ignored batch gives 0 / 1 = 0 with a (zero) gradient instead of NaN
        return self.loss_weight * per_pixel.sum() / denom.clamp(min=1e-12 if weight is not None else 1.0)

    def _sigmoid(self, logits: torch.Tensor, target: torch.Tensor, ignore: int | None) -> torch.Tensor:
        if target.dim() == logits.dim() - 1 and logits.shape[1] > 1:
            valid = (target != ignore) if ignore is not None else torch.ones_like(target, dtype=torch.bool)
            onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1).long(), logits.shape[1])
            target = onehot.movedim(-1, 1).to(logits.dtype)
            mask = valid.unsqueeze(1).expand_as(logits).to(logits.dtype)
        else:
            target = target.to(logits.dtype).reshape(logits.shape)
            mask = torch.ones_like(logits)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if self.class_weight is not None:
            shape = [1, -1] + [1] * (logits.dim() - 2)
            loss = loss * self.class_weight.to(logits.dtype).view(shape)
        return (loss * mask).sum() / mask.sum().clamp(min=1.0)
