"""``LinearClsHead``: global average pooling + linear classifier."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from antgo.models.base import BaseModule
from antgo.models.losses import CrossEntropyLoss
from antgo.registry import HEADS, LOSSES


@HEADS.register_module()
class LinearClsHead(BaseModule):
    """Mean over H, W of the last feature map (ONNX-friendly global pooling) → ``nn.Linear``."""

    def __init__(self, in_channels: int, num_classes: int, loss: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.fc = nn.Linear(in_channels, num_classes)
        self.loss_fn = (LOSSES.build(loss, key_path="model.head.loss") if loss is not None
                        else CrossEntropyLoss(loss_name="loss_cls"))

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[-1]
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))
        return self.fc(x)

    def loss(self, logits: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss_cls`` plus ``acc`` (top-1 fraction of the batch; logged, not summed: no 'loss' in its name)."""
        label = label.reshape(-1).long()
        acc = (logits.detach().argmax(dim=1) == label).float().mean()
        return {"loss_cls": self.loss_fn(logits, label), "acc": acc}

    def simple_test(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return F.softmax(self.forward(inputs), dim=1)
