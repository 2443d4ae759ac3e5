"""``ImageClassifier``: backbone (+ neck) + classification head."""
from __future__ import annotations

from typing import Any

import torch

from antgo.models.base import BaseModule
from antgo.registry import HEADS, MODELS


@MODELS.register_module()
class ImageClassifier(BaseModule):
    """Image classification for the ``pred`` task form.

    ``forward_train(image, label)`` → ``{'loss_cls', 'acc'}``; ``forward_test(image)`` →
    ``{'pred': (B, num_classes) probabilities}``; ``onnx_export(image)`` → the same probabilities.
    """

    def __init__(self, backbone: dict, head: dict, neck: dict | None = None, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone, key_path="model.backbone")
        self.with_neck = neck is not None
        if neck is not None:
            self.neck = MODELS.build(neck, key_path="model.neck")
        self.head = HEADS.build(head, key_path="model.head")
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    def extract_feat(self, image: torch.Tensor) -> Any:
        x = self.backbone(image)
        return self.neck(x) if self.with_neck else x

    def forward_train(self, image: torch.Tensor, label: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        return dict(self.head.loss(self.head(self.extract_feat(image)), label))

    def forward_test(self, image: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.onnx_postprocess(self.onnx_export(image), image)

    def onnx_export(self, image: torch.Tensor) -> torch.Tensor:
        return self.head.simple_test(self.extract_feat(image))

    def onnx_postprocess(self, outputs: Any, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The exported probabilities are the prediction (parity and ``forward_test`` agree by construction)."""
        return {"pred": torch.as_tensor(outputs[0] if isinstance(outputs, (list, tuple)) else outputs)}
