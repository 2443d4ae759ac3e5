"""``EncoderDecoder``: backbone (+ neck) + decode head semantic segmentor (the design document's model)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from antgo.models._backbone_head import BackboneHeadModel
from antgo.registry import MODELS


@MODELS.register_module()
class EncoderDecoder(BackboneHeadModel):
    """Semantic segmentation: ``backbone(image)`` → list of maps → optional ``neck`` → ``decode_head``.

    - ``forward_train(image, segments)`` → ``decode_head.loss(logits, segments.long())`` (``loss_seg`` and any
      auxiliary losses the head adds);
    - ``forward_test(image)`` → ``{'pred_segments': (B, H, W) int64}`` (probabilities upsampled to the input
      size, then argmax);
    - ``onnx_export(image)`` → the head's ``simple_test`` probabilities at feature resolution; with
      ``test_cfg=dict(export_upsample=True)`` they are upsampled to the input size inside the graph.
    """

    def __init__(self, backbone: dict, decode_head: dict, neck: dict | None = None, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(backbone, decode_head, neck, train_cfg, dict(test_cfg or {}), init_cfg,
                         head_attr="decode_head")
        self.align_corners = bool(getattr(self.decode_head, "align_corners", False))

    def forward_train(self, image: torch.Tensor, segments: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        logits = self.decode_head(self.extract_feat(image))
        return dict(self.decode_head.loss(logits, segments.long()))

    def forward_test(self, image: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        probs = self.decode_head.simple_test(self.extract_feat(image))
        probs = F.interpolate(probs, size=image.shape[2:], mode="bilinear", align_corners=self.align_corners)
        return {"pred_segments": torch.argmax(probs, dim=1)}

    def onnx_export(self, image: torch.Tensor) -> torch.Tensor:
        probs = self.decode_head.simple_test(self.extract_feat(image))
        if self.test_cfg.get("export_upsample", False):
            probs = F.interpolate(probs, size=image.shape[2:], mode="bilinear", align_corners=self.align_corners)
        return probs
