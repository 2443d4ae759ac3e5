"""``SimpleHead``: conv3x3-BN-ReLU + conv1x1 segmentation head with an ignore-aware cross-entropy."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from antgo.models.base import BaseModule
from antgo.models.layers import ConvBNAct
from antgo.models.losses import CrossEntropyLoss
from antgo.registry import HEADS, LOSSES


def build_seg_losses(loss_decode: dict | Sequence[dict] | None, ignore_index: int | None,
                     class_weight: Sequence[float] | None) -> nn.ModuleList:
    """Losses from ``loss_decode`` (a dict or list of dicts); default one ``CrossEntropyLoss``.

    The head's ``ignore_index`` is passed to each loss that does not set its own.
    """
    if loss_decode is None:
        return nn.ModuleList([CrossEntropyLoss(ignore_index=ignore_index, class_weight=class_weight)])
    cfgs = [loss_decode] if isinstance(loss_decode, dict) else list(loss_decode)
    losses = []
    for i, cfg in enumerate(cfgs):
        defaults: dict = {}
        if cfg.get("type") == "CrossEntropyLoss":
            defaults = dict(ignore_index=ignore_index, class_weight=class_weight)
        losses.append(LOSSES.build(cfg, default_args=defaults, key_path=f"model.decode_head.loss_decode[{i}]"))
    return nn.ModuleList(losses)


def seg_loss(losses: nn.ModuleList, logits: torch.Tensor, segments: torch.Tensor, align_corners: bool,
             name: str = "loss_seg") -> dict[str, torch.Tensor]:
    """Upsample ``logits`` to the label size, drop a label channel dim, and evaluate each loss.

    One loss gives ``{name}``; several give ``{name}`` for the first and ``{loss_name}`` (or
    ``{name}_<i>``) for the others, so no loss overwrites another.
    """
    if segments.dim() == 4:
        if segments.shape[1] != 1:
            raise ValueError(f"segments must be (B, H, W) or (B, 1, H, W), got {tuple(segments.shape)}")
        segments = segments[:, 0]
    segments = segments.long()
    if logits.shape[2:] != segments.shape[1:]:
        logits = F.interpolate(logits, size=segments.shape[1:], mode="bilinear", align_corners=align_corners)
    out: dict[str, torch.Tensor] = {}
    for i, loss in enumerate(losses):
        key = name if i == 0 else getattr(loss, "loss_name", f"{name}_{i}")
        if key in out:
            key = f"{name}_{i}"
        out[key] = loss(logits, segments)
    return out


@HEADS.register_module()
class SimpleHead(BaseModule):
    """Last feature map → ConvBNReLU 3x3 → Conv1x1 (bias) logits.

    ``loss`` averages cross-entropy over non-ignored pixels (0 when every pixel is ignored);
    ``simple_test`` returns softmax probabilities at feature resolution.
    """

    def __init__(self, in_channels: int, channels: int, out_channels: int, ignore_index: int | None = None,
                 loss_decode: dict | Sequence[dict] | None = None, align_corners: bool = False,
                 class_weight: Sequence[float] | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.channels = channels
        self.out_channels = out_channels
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        self.conv = ConvBNAct(in_channels, channels, 3)
        self.cls = nn.Conv2d(channels, out_channels, 1)
        self.losses = build_seg_losses(loss_decode, ignore_index, class_weight)

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[-1]
        return self.cls(self.conv(x))

    def loss(self, logits: torch.Tensor, segments: torch.Tensor) -> dict[str, torch.Tensor]:
        return seg_loss(self.losses, logits, segments, self.align_corners)

    def simple_test(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return F.softmax(self.forward(inputs), dim=1)
