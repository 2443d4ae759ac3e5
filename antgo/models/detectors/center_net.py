"""``CenterNet``: backbone (+ neck) + ``CenterNetHead``, the built-in anchor-free detector."""
from __future__ import annotations

from typing import Any

import torch

from antgo.models._backbone_head import BackboneHeadModel
from antgo.models.detectors.postprocess import decode_centernet
from antgo.models.heads._dense import samples_of
from antgo.registry import MODELS

_DECODE_KEYS = ("topk", "score_thr", "nms_iou", "max_per_img")


@MODELS.register_module()
class CenterNet(BackboneHeadModel):
    """Object detection for the ``{'box', 'label'}`` task form (plus ``score``).

    - ``forward_train(image, bboxes, labels)``: ``bboxes`` per sample (N, 4) xyxy pixels, ``labels`` (N,)
      class indices → ``loss_heatmap``, ``loss_wh``, ``loss_offset``;
    - ``onnx_export(image)`` → ``(heatmap, wh, offset)``: sigmoid heat map and the raw size/offset maps;
    - ``onnx_postprocess(outputs, image)`` decodes them (peaks, top-k, class-wise NMS) into per-sample ``box``
      (N, 4), ``score`` (N,) and ``label`` (N,); ``forward_test(image)`` is ``onnx_postprocess(onnx_export)``.

    ``test_cfg``: ``topk`` (100), ``score_thr`` (0.05), ``nms_iou`` (0.6), ``max_per_img`` (100).
    """

    def __init__(self, backbone: dict, head: dict, neck: dict | None = None, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(backbone, head, neck, train_cfg, dict(test_cfg or {}), init_cfg)
        unknown = sorted(set(self.test_cfg) - set(_DECODE_KEYS))
        if unknown:
            raise ValueError(f"model.test_cfg.{unknown[0]} is not a CenterNet option; known: {', '.join(_DECODE_KEYS)}")

    def forward_train(self, image: torch.Tensor, bboxes: Any, labels: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        outputs = self.head(self.extract_feat(image))
        b = image.shape[0]
        return self.head.loss(outputs, tuple(image.shape[2:]), samples_of(bboxes, b, "bboxes"),
                              samples_of(labels, b, "labels"))

    def onnx_export(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, wh, offset = self.head(self.extract_feat(image))
        return torch.sigmoid(logits), wh, offset

    def onnx_postprocess(self, outputs: Any, image: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        heatmap, wh, offset = (torch.as_tensor(o) for o in outputs)
        return decode_centernet(heatmap, wh, offset, tuple(image.shape[2:]), **self.test_cfg)

    def forward_test(self, image: torch.Tensor, **kwargs: Any) -> dict[str, list[torch.Tensor]]:
        return self.onnx_postprocess(self.onnx_export(image), image)
