"""Pieces shared by the dense prediction heads: feature fusion, Gaussian targets, per-sample annotations."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from antgo.models.layers import ConvBNAct


class FuseFeatures(nn.Module):
    """Selected feature maps upsampled to the first one's resolution, concatenated, then ConvBNReLU 3x3.

    ``in_index`` picks maps from the backbone's list (default: the last); the output stride is the stride of
    ``inputs[in_index[0]]``.
    """

    def __init__(self, in_channels: int | Sequence[int], channels: int, in_index: int | Sequence[int] = -1) -> None:
        super().__init__()
        self.in_index = [in_index] if isinstance(in_index, int) else list(in_index)
        in_channels = [in_channels] if isinstance(in_channels, int) else list(in_channels)
        if len(in_channels) != len(self.in_index):
            raise ValueError(f"in_channels {in_channels} must give one width per in_index {self.in_index}")
        self.conv = ConvBNAct(sum(in_channels), channels, 3)

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        maps = [inputs] if isinstance(inputs, torch.Tensor) else [inputs[i] for i in self.in_index]
        size = maps[0].shape[2:]
        maps = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
        return self.conv(torch.cat(maps, 1) if len(maps) > 1 else maps[0])


def branch(channels: int, out_channels: int, bias: float = 0.0) -> nn.Sequential:
    """ConvBNReLU 3x3 → Conv1x1 with a constant bias (a prior for heat maps)."""
    out = nn.Conv2d(channels, out_channels, 1)
    nn.init.constant_(out.bias, bias)
    return nn.Sequential(ConvBNAct(channels, channels, 3), out)


def samples_of(value: Any, batch: int, what: str) -> list[torch.Tensor]:
    """Per-sample tensors from a per-sample list (variable-length collate) or a batch-first tensor."""
    items = list(value) if isinstance(value, (list, tuple)) else [value[i] for i in range(value.shape[0])]
    if len(items) != batch:
        raise ValueError(f"{what}: {len(items)} samples for a batch of {batch} images")
    return [torch.as_tensor(v) for v in items]


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: the largest centre shift keeping IoU >= ``min_overlap`` (three corner cases)."""
    a1, b1, c1 = 1, height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: torch.Tensor, cx: float, cy: float, sigma: float) -> None:
    """Max-paste an unnormalised Gaussian (peak 1 at the nearest cell) onto a (H, W) map, in place."""
    h, w = heatmap.shape
    radius = max(int(3 * sigma), 1)
    x0, y0 = int(round(cx)), int(round(cy))
    left, right = max(0, x0 - radius), min(w, x0 + radius + 1)
    top, bottom = max(0, y0 - radius), min(h, y0 + radius + 1)
    if left >= right or top >= bottom:
        return
    ys = torch.arange(top, bottom, device=heatmap.device, dtype=heatmap.dtype)[:, None]
    xs = torch.arange(left, right, device=heatmap.device, dtype=heatmap.dtype)[None, :]
    g = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))
    heatmap[top:bottom, left:right] = torch.maximum(heatmap[top:bottom, left:right], g)


def focal_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CornerNet's penalty-reduced focal loss on sigmoid heat maps, normalised by the number of peaks."""
    pred = pred.clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = torch.log(pred) * (1 - pred) ** alpha * pos
    neg_loss = torch.log(1 - pred) * pred ** alpha * (1 - target) ** beta * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)
