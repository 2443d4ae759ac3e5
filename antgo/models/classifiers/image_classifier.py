"""``ImageClassifier``: backbone (+ neck) + classification head."""
from __future__ import annotations

from typing import Any

import torch

from antgo.models._backbone_head import BackboneHeadModel
from antgo.registry import MODELS


@MODELS.register_module()
class ImageClassifier(BackboneHeadModel):
    """Image classification for the ``pred`` task form.

    ``forward_train(image, label)`` → ``{'loss_cls', 'acc'}``; ``forward_test(image)`` →
    ``{'pred': (B, num_classes) probabilities}``; ``onnx_export(image)`` → the same probabilities.
    """

    def forward_train(self, image: torch.Tensor, label: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        return dict(self.head.loss(self.head(self.extract_feat(image)), label))

    def forward_test(self, image: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.onnx_postprocess(self.onnx_export(image), image)

    def onnx_export(self, image: torch.Tensor) -> torch.Tensor:
        return self.head.simple_test(self.extract_feat(image))

    def onnx_postprocess(self, outputs: Any, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The exported probabilities are the prediction (parity and ``forward_test`` agree by construction)."""
        return {"pred": torch.as_tensor(outputs[0] if isinstance(outputs, (list, tuple)) else outputs)}
