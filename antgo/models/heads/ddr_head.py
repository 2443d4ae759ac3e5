"""``DDRHead``: DDRNet segmentation head with an optional auxiliary head on the stage-3 high-res feature."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from antgo.models.base import BaseModule
from antgo.models.heads.simple_head import build_seg_losses, seg_loss
from antgo.registry import HEADS


class SegmentHead(nn.Sequential):
    """DDRNet's pre-activation head: BN → ReLU → conv3x3 → BN → ReLU → conv1x1 (bias)."""

    def __init__(self, in_channels: int, channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, out_channels, 1, bias=True),
        )


@HEADS.register_module()
class DDRHead(BaseModule):
    """Main head on the last feature map; in training (with ``aux_in_channels``) also an auxiliary head on
    ``inputs[aux_index]``, whose loss is returned as ``loss_seg_aux`` scaled by ``aux_weight`` (0.4).

    ``forward`` returns logits in eval mode and ``(logits, aux_logits)`` in training mode when the
    auxiliary head is on; ``loss`` accepts both forms.
    """

    def __init__(self, in_channels: int = 128, channels: int = 64, out_channels: int = 19,
                 aux_in_channels: int | None = 64, aux_index: int = 0, aux_weight: float = 0.4,
                 ignore_index: int | None = 255, loss_decode: dict | Sequence[dict] | None = None,
                 align_corners: bool = False, class_weight: Sequence[float] | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.out_channels = out_channels
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        self.aux_index = aux_index
        self.aux_weight = float(aux_weight)
        self.head = SegmentHead(in_channels, channels, out_channels)
        self.aux_head = SegmentHead(aux_in_channels, channels, out_channels) if aux_in_channels else None
        self.losses = build_seg_losses(loss_decode, ignore_index, class_weight)

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feats = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        logits = self.head(feats[-1])
        if self.training and self.aux_head is not None and len(feats) > 1:
            return logits, self.aux_head(feats[self.aux_index])
        return logits

    def loss(self, logits: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
             segments: torch.Tensor) -> dict[str, torch.Tensor]:
        aux = None
        if isinstance(logits, (tuple, list)):
            logits, aux = logits
        losses = seg_loss(self.losses, logits, segments, self.align_corners)
        if aux is not None:
            aux_losses = seg_loss(self.losses, aux, segments, self.align_corners, name="loss_seg_aux")
            losses.update({k: v * self.aux_weight for k, v in aux_losses.items()})
        return losses

    def simple_test(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        logits = self.forward(inputs)
        if isinstance(logits, tuple):  # simple_test on a model left in training mode
            logits = logits[0]
        return F.softmax(logits, dim=1)
