"""``CenterNetHead``: anchor-free detection as centre heat maps + box size + sub-cell offset (CenterNet)."""
from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F

from antgo.console import log_once
from antgo.models.base import BaseModule
from antgo.models.heads._dense import FuseFeatures, branch, draw_gaussian, focal_loss, gaussian_radius
from antgo.registry import HEADS

logger = logging.getLogger(__name__)

_PRIOR_BIAS = -2.19  # sigmoid(-2.19) ≈ 0.1: the CenterNet prior, keeps the early focal loss stable


@HEADS.register_module()
class CenterNetHead(BaseModule):
    """Fused features → three branches: ``heatmap`` (C classes, sigmoid), ``wh`` (2) and ``offset`` (2), both
    in output cells. ``loss`` = focal loss on the heat map + ``wh_weight`` · L1(size) + ``offset_weight`` ·
    L1(offset) at the object centres (``loss_heatmap``, ``loss_wh``, ``loss_offset``).
    """

    def __init__(self, in_channels: int | Sequence[int], num_classes: int, channels: int = 64,
                 in_index: int | Sequence[int] = -1, wh_weight: float = 0.1, offset_weight: float = 1.0,
                 min_overlap: float = 0.7, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = int(num_classes)
        self.fuse = FuseFeatures(in_channels, channels, in_index)
        self.heatmap = branch(channels, self.num_classes, _PRIOR_BIAS)
        self.wh = branch(channels, 2)
        self.offset = branch(channels, 2)
        self.wh_weight = float(wh_weight)
        self.offset_weight = float(offset_weight)
        self.min_overlap = float(min_overlap)

    def init_weights(self) -> None:
        super().init_weights()
        torch.nn.init.constant_(self.heatmap[-1].bias, _PRIOR_BIAS)  # BaseModule init must not undo the prior

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw head tensors: heat-map logits, size, offset (each (B, ·, h, w))."""
        x = self.fuse(inputs)
        return self.heatmap(x), self.wh(x), self.offset(x)

    def targets(self, shape: tuple[int, int, int, int], image_size: tuple[int, int], boxes: list[torch.Tensor],
                labels: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Heat map (B, C, h, w), and per centre: batch index, cell index, size and offset targets."""
        b, c, h, w = shape
        sy, sx = image_size[0] / h, image_size[1] / w
        heat = torch.zeros(shape)
        index, cells, sizes, offsets = [], [], [], []
        outside: set[int] = set()
        for i, (box, label) in enumerate(zip(boxes, labels)):
            box = box.detach().float().cpu().reshape(-1, 4)
            label = label.detach().cpu().reshape(-1).long()
            for (x1, y1, x2, y2), cls in zip(box.tolist(), label.tolist()):
                bw, bh = (x2 - x1) / sx, (y2 - y1) / sy
                if not 0 <= cls < c:
                    outside.add(cls)
                if bw <= 0 or bh <= 0 or not 0 <= cls < c:
                    continue
                cx, cy = (x1 + x2) / 2 / sx, (y1 + y2) / 2 / sy
                ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
                radius = max(0, int(gaussian_radius(bh, bw, self.min_overlap)))
                draw_gaussian(heat[i, cls], ix, iy, (2 * radius + 1) / 6)
                index.append(i)
                cells.append(iy * w + ix)
                sizes.append((bw, bh))
                offsets.append((cx - ix, cy - iy))
        if outside:  # boxes the head has no class for would be dropped silently
            log_once(logger, logging.WARNING, "CenterNetHead: boxes with labels %s are left out of training: the "
                     "head has num_classes=%d (labels 0..%d); set model.head.num_classes to the data set's class "
                     "count", sorted(outside), c, c - 1)
        n = len(index)
        return (heat, torch.tensor(index, dtype=torch.long), torch.tensor(cells, dtype=torch.long),
                torch.tensor(sizes, dtype=torch.float32).reshape(n, 2),
                torch.tensor(offsets, dtype=torch.float32).reshape(n, 2))

    def loss(self, outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], image_size: tuple[int, int],
             boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        logits, wh, offset = outputs
        heat, index, cells, sizes, offsets = (t.to(logits.device) for t in
                                              self.targets(tuple(logits.shape), image_size, boxes, labels))
        loss_heat = focal_loss(torch.sigmoid(logits.float()), heat)
        if len(index):
            flat_wh = wh.float().flatten(2)[index, :, cells]
            flat_off = offset.float().flatten(2)[index, :, cells]
            loss_wh = F.l1_loss(flat_wh, sizes, reduction="mean")
            loss_off = F.l1_loss(flat_off, offsets, reduction="mean")
        else:  # no object in the batch: zero losses that keep the graph connected
            loss_wh, loss_off = wh.sum() * 0, offset.sum() * 0
        return {"loss_heatmap": loss_heat, "loss_wh": self.wh_weight * loss_wh,
                "loss_offset": self.offset_weight * loss_off}
