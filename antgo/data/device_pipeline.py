"""Where a split's augmentation runs: on the CPU in loader workers, or batched on the training device.

``split_for_device(split_cfg, device)`` returns the split config the CPU reader should build (with the
transforms that move to the device taken out) and the batch transform to run on the device after the
host-to-device copy (``None``: everything stays on the CPU, as configured).

The split's ``device_augmentation`` key chooses: ``'auto'`` (default: on when ``device`` is CUDA), ``True``
(on for any device, e.g. to test it on CPU tensors) or ``False``. When on, the CPU workers decode and run
only the transforms that cannot move (user transforms and whatever precedes them); the loader then pads
the uint8 images of a batch to its largest size (``image_hw`` carries each sample's own size) and the
batch transform does the rest on the device: one warp for all geometric steps, colour, ``/255`` and
normalisation. See ``antgo.data.device.plan`` for which transforms and options move.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from antgo.data.device.collate import pad_collate
from antgo.data.device.plan import BatchAugment, device_suffix_start, spatial_fields
from antgo.data.transforms.compose import Compose

logger = logging.getLogger(__name__)

BatchTransform = Callable[[dict[str, Any]], dict[str, Any]]
CHOICES = ("auto", True, False)


def wants_device_augmentation(split_cfg: Mapping[str, Any], device: torch.device | str,
                              key_path: str = "data.train") -> bool:
    """The split's ``device_augmentation`` choice for ``device`` ('auto' = on for CUDA)."""
    choice = split_cfg.get("device_augmentation", "auto")
    if not any(choice is c or choice == c for c in CHOICES) or isinstance(choice, int) and not isinstance(choice, bool):
        raise ValueError(f"{key_path}.device_augmentation must be 'auto', True or False, got {choice!r}")
    if choice == "auto":
        return torch.device(device).type == "cuda"
    return bool(choice)


def split_for_device(split_cfg: Mapping[str, Any], device: torch.device | str, key_path: str = "data"
                     ) -> tuple[Mapping[str, Any], BatchTransform | None]:
    """(CPU split config, device batch transform or None) for ``split_cfg`` trained on ``device``."""
    cpu_cfg = {k: v for k, v in split_cfg.items() if k != "device_augmentation"}
    if not wants_device_augmentation(split_cfg, device, key_path):
        return cpu_cfg, None
    spatial = spatial_fields(split_cfg)
    if spatial is None:
        logger.info("%s: augmentation stays on the CPU (device augmentation needs inputs_def.fields with 'image', "
                    "at most 'segments' besides among the spatial keys, and no alias)", key_path)
        return cpu_cfg, None
    pipeline = list(split_cfg.get("pipeline") or [])
    transforms = Compose(pipeline, key_path=f"{key_path}.pipeline").transforms
    start = device_suffix_start(transforms, spatial, key_path)
    if start == len(transforms):
        return cpu_cfg, None
    batch_transform = BatchAugment(transforms[start:])
    cpu_cfg.update(pipeline=pipeline[:start], collate_fn=pad_collate)
    logger.info("%s: %s run batched on %s; the CPU workers decode%s", key_path,
                " -> ".join(batch_transform.names), torch.device(device),
                (" and run " + " -> ".join(type(t).__name__ for t in transforms[:start])) if start else " only")
    return cpu_cfg, batch_transform
