"""``HeatmapPose``: backbone (+ neck) + ``HeatmapHead``, the built-in 2-D keypoint model."""
from __future__ import annotations

from typing import Any

import torch

from antgo.models._backbone_head import BackboneHeadModel
from antgo.models.heads._dense import samples_of
from antgo.models.heads.heatmap_head import decode_heatmaps
from antgo.registry import MODELS


@MODELS.register_module()
class HeatmapPose(BackboneHeadModel):
    """2-D keypoints for the ``{'pred_joints2d'}`` task form (one instance per image).

    - ``forward_train(image, joints2d)``: ``joints2d`` per sample (N, K, 3) x, y, visibility → ``loss_keypoint``;
    - ``onnx_export(image)`` → the heat maps (B, K, h, w);
    - ``onnx_postprocess(outputs, image)`` / ``forward_test(image)`` → ``pred_joints2d`` (B, 1, K, 3): x, y in
      input pixels (sub-pixel) and the peak value as confidence.
    """

    def forward_train(self, image: torch.Tensor, joints2d: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        heatmaps = self.head(self.extract_feat(image))
        return self.head.loss(heatmaps, tuple(image.shape[2:]), samples_of(joints2d, image.shape[0], "joints2d"))

    def onnx_export(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.extract_feat(image))

    def onnx_postprocess(self, outputs: Any, image: torch.Tensor) -> dict[str, torch.Tensor]:
        heatmaps = torch.as_tensor(outputs[0] if isinstance(outputs, (list, tuple)) else outputs)
        return {"pred_joints2d": decode_heatmaps(heatmaps, tuple(image.shape[2:]))}

    def forward_test(self, image: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.onnx_postprocess(self.onnx_export(image), image)
