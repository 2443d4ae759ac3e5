"""``build_model``: build the ``model`` config and initialise its weights."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from antgo.registry import MODELS


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build ``cfg`` (the config's ``model`` dict) from ``MODELS`` and call ``init_weights()`` if present.

    ``train_cfg``/``test_cfg`` are not injected: user classes need not accept them.
    """
    model = MODELS.build(cfg, key_path="model")
    init = getattr(model, "init_weights", None)
    if callable(init):
        init()
    return model
