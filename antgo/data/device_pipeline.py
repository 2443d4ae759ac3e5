"""Where a split's augmentation runs: on the CPU in loader workers, or batched on the training device.

``split_for_device(split_cfg, device)`` returns the split config the CPU reader should build (with the
transforms that move to the device taken out) and the batch transform to run on the device after the
host-to-device copy (``None``: everything stays on the CPU, as configured).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

BatchTransform = Callable[[dict[str, Any]], dict[str, Any]]


def split_for_device(split_cfg: Mapping[str, Any], device: torch.device | str
                     ) -> tuple[Mapping[str, Any], BatchTransform | None]:
    """(CPU split config, device batch transform or None) for ``split_cfg`` trained on ``device``."""
    return split_cfg, None
