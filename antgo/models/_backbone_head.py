"""``BackboneHeadModel``: the backbone (+ neck) + head skeleton shared by the task models."""
from __future__ import annotations

from typing import Any

import torch

from antgo.models.base import BaseModule
from antgo.registry import HEADS, MODELS


class BackboneHeadModel(BaseModule):
    """Builds ``backbone``, optional ``neck`` and the head from their configs (key paths ``model.<part>`` in
    errors); ``extract_feat(image)`` runs backbone and neck. Subclasses add the task's train/test/export.
    ``head_attr`` names the head attribute (``decode_head`` for the seed's ``EncoderDecoder``)."""

    def __init__(self, backbone: dict, head: dict, neck: dict | None = None, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, init_cfg: dict | None = None, head_attr: str = "head") -> None:
        super().__init__(init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone, key_path="model.backbone")
        self.with_neck = neck is not None
        if neck is not None:
            self.neck = MODELS.build(neck, key_path="model.neck")
        setattr(self, head_attr, HEADS.build(head, key_path=f"model.{head_attr}"))
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    def extract_feat(self, image: torch.Tensor) -> Any:
        """Backbone (and neck) features of ``image``."""
        x = self.backbone(image)
        return self.neck(x) if self.with_neck else x
