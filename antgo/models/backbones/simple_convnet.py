"""``SimpleConvNet``: a small CNN backbone for image classification."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from antgo.models.base import BaseModule
from antgo.models.layers import ConvBNAct
from antgo.registry import BACKBONES


@BACKBONES.register_module()
class SimpleConvNet(BaseModule):
    """Stages of (conv3x3 stride 2 → conv3x3), each ConvBNReLU; returns every stage's output (last at 1/2^n)."""

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64),
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        stages = []
        prev = in_channels
        for ch in channels:
            stages.append(nn.Sequential(ConvBNAct(prev, ch, 3, stride=2), ConvBNAct(ch, ch, 3)))
            prev = ch
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs
