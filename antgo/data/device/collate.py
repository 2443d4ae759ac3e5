"""Collate for device augmentation: uint8 images of different sizes padded into one batch."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from antgo.data.collate import batch_tensor, collate

IMAGE_KEY, MASK_KEY, SIZE_KEY = "image", "segments", "image_hw"
MASK_PAD = 255  # void: never counted by the loss or the metric


def _as_tensor(key: str, index: int, value: Any, ndim: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != ndim:
        shape = "(H, W, C)" if ndim == 3 else "(H, W)"
        raise TypeError(f"device augmentation: sample {index} of the batch has '{key}' as "
                        f"{type(value).__name__} {getattr(value, 'dtype', '')} {tuple(getattr(value, 'shape', ()))}; "
                        f"expected a uint8 {shape} array: the transforms left on the CPU must keep it so")
    return t


def _place(slot: torch.Tensor, value: torch.Tensor, pad: int) -> None:
    """``value`` in the top-left corner of ``slot``, ``pad`` in the rest (each byte written once)."""
    h, w = value.shape[:2]
    slot[:h, :w] = value
    slot[h:].fill_(pad)
    slot[:h, w:].fill_(pad)


def pad_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Images ``uint8 (B, Hmax, Wmax, C)`` (zero padded), ``segments`` ``uint8 (B, Hmax, Wmax)`` (padded
    with 255), ``image_hw`` a list of each sample's own ``(h, w)`` (host values: the batch transform needs
    them without reading the device); other fields as ``collate``."""
    if not batch:
        raise ValueError("collate: empty batch")
    images = [_as_tensor(IMAGE_KEY, i, s[IMAGE_KEY], 3) for i, s in enumerate(batch)]
    sizes = [(int(img.shape[0]), int(img.shape[1])) for img in images]
    H, W = max(h for h, _ in sizes), max(w for _, w in sizes)
    out = batch_tensor((len(batch), H, W, images[0].shape[2]), torch.uint8)
    for i, img in enumerate(images):
        _place(out[i], img, 0)
    result: dict[str, Any] = {IMAGE_KEY: out, SIZE_KEY: sizes}
    if MASK_KEY in batch[0]:
        masks = batch_tensor((len(batch), H, W), torch.uint8)
        for i, s in enumerate(batch):
            m = _as_tensor(MASK_KEY, i, s[MASK_KEY], 2)
            if tuple(m.shape) != tuple(images[i].shape[:2]):
                raise ValueError(f"device augmentation: sample {i} of the batch has segments {tuple(m.shape)} but "
                                 f"image {tuple(images[i].shape[:2])}; they must have the same height and width")
            _place(masks[i], m, MASK_PAD)
        result[MASK_KEY] = masks
    rest = [{k: v for k, v in s.items() if k not in (IMAGE_KEY, MASK_KEY)} for s in batch]
    if rest[0]:
        result.update(collate(rest))
    return result
