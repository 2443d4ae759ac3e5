"""Which transforms of a pipeline can run batched on the device, and the batch transform that runs them.

The device part is always a *suffix* of the pipeline (order is kept): the longest one made of standard
transforms (exact classes, not subclasses) whose options the device code reproduces, in an order it can
reproduce: geometric steps first (they compose into one warp and must end at a fixed size), ColorDistort
after them, then ToTensor, Normalize; RandomFlipImage anywhere before ToTensor, UnSqueeze of the mask after
the geometry. Everything before the suffix stays on the CPU.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from antgo.data.device.collate import IMAGE_KEY, MASK_KEY, SIZE_KEY
from antgo.data.device.color import color_distort_batch
from antgo.data.device.geometry import draw_warp, warp_batch
from antgo.data.device.transfer import to_device
from antgo.data.transforms._geometry import DEFAULT_KEYS
from antgo.data.transforms.crop import RandomScaleCrop
from antgo.data.transforms.formatting import Normalize, ToTensor, UnSqueeze
from antgo.data.transforms.geometric import RandomFlipImage, ResizeS, Rotation
from antgo.data.transforms.photometric import ColorDistort

logger = logging.getLogger(__name__)

GEOMETRIC = (Rotation, ResizeS, RandomScaleCrop, RandomFlipImage)
SIZE_FIXING = (ResizeS, RandomScaleCrop)


def _fills(t: Any) -> tuple[tuple[float, ...], int] | None:
    """(image fill per channel, mask fill) a geometric step uses where it has no source pixels."""
    if isinstance(t, Rotation):
        return tuple(t._border()[:3]), t.label_border_value
    if isinstance(t, RandomScaleCrop):
        v = t.pad_val
        return (tuple([float(v)] * 3) if np.ndim(v) == 0 else tuple(float(x) for x in v)[:3]), t.seg_pad_val
    return None


def why_not(t: Any, spatial: set[str]) -> str | None:
    """None when ``t`` runs on the device with the same semantics, else the reason it cannot."""
    kind = type(t)
    if kind not in (*GEOMETRIC, ColorDistort, ToTensor, Normalize, UnSqueeze):
        return "not a standard transform"
    if kind in GEOMETRIC and t.keys is not None and not spatial <= set(t.keys):
        return f"keys={t.keys} leaves some of {sorted(spatial)} out"
    if kind in (ResizeS, RandomScaleCrop) and str(t.interp).upper() != "LINEAR":
        return f"interp={t.interp!r} (only LINEAR runs on the device)"
    if kind is RandomScaleCrop and t.cat_max_ratio is not None and t.cat_max_ratio < 1.0:
        return "cat_max_ratio looks at the mask on the CPU"
    if kind is RandomFlipImage and t.swap_ids:
        return "swap_ids moves keypoints"
    if kind in (ColorDistort, ToTensor, Normalize) and list(t.keys) != [IMAGE_KEY]:
        return f"keys={list(t.keys)} (only ['image'] runs on the device)"
    if kind is UnSqueeze and not set(t.keys) <= {MASK_KEY}:
        return f"keys={list(t.keys)} (only ['segments'] runs on the device)"
    return None


def _order_ok(ts: Sequence[Any]) -> bool:
    kinds = [type(t) for t in ts]
    if ToTensor not in kinds or kinds.count(ToTensor) > 1 or kinds.count(ColorDistort) > 1:
        return False
    totensor = kinds.index(ToTensor)
    geo = [i for i, k in enumerate(kinds) if k in GEOMETRIC and k is not RandomFlipImage]
    colour = [i for i, k in enumerate(kinds) if k is ColorDistort]
    flips = [i for i, k in enumerate(kinds) if k is RandomFlipImage]
    normal = [i for i, k in enumerate(kinds) if k is Normalize]
    unsq = [i for i, k in enumerate(kinds) if k is UnSqueeze]
    if geo and not any(kinds[i] in SIZE_FIXING for i in geo):
        return False  # the batch could not end at one size
    fills = {_fills(t) for t in ts if _fills(t) is not None}
    return (len(fills) <= 1 and all(g < c for g in geo for c in colour + [totensor])
            and all(c < totensor for c in colour) and all(f < totensor for f in flips)
            and all(n > totensor for n in normal) and all(u > g for u in unsq for g in geo + flips))


def device_suffix_start(transforms: Sequence[Any], spatial: set[str], key_path: str) -> int:
    """Index of the first transform that runs on the device (``len(transforms)``: none)."""
    reasons = {i: why_not(t, spatial) for i, t in enumerate(transforms)}
    for start in range(len(transforms)):
        tail = transforms[start:]
        if all(reasons[i] is None for i in range(start, len(transforms))) and _order_ok(tail):
            return start
    blockers = [f"#{i} {type(t).__name__}: {reasons[i]}" for i, t in enumerate(transforms) if reasons[i]]
    logger.info("%s: augmentation stays on the CPU (%s)", key_path,
                "; ".join(blockers) or "no ToTensor at the end of a movable tail")
    return len(transforms)


class BatchAugment:
    """The device half of a split pipeline: ``__call__(batch) -> batch`` on tensors already on the device.

    Random parameters are drawn per sample from the global ``np.random`` in the same order and with the
    same calls as the CPU transforms, so their distributions are the CPU's by construction.
    """

    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)
        self.geometric = [t for t in self.transforms if isinstance(t, GEOMETRIC)]
        self.colour = next((t for t in self.transforms if isinstance(t, ColorDistort)), None)
        self.normalize = [t for t in self.transforms if isinstance(t, Normalize)]
        self.unsqueeze = [t for t in self.transforms if isinstance(t, UnSqueeze)]
        fills = [f for f in map(_fills, self.transforms) if f is not None]
        self.fill, self.seg_fill = fills[0] if fills else ((0.0, 0.0, 0.0), 255)
        self._stats: dict[torch.device, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @property
    def names(self) -> list[str]:
        return [type(t).__name__ for t in self.transforms]

    def _normalize_on(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each Normalize's (mean, std) as ``(1, C, 1, 1)`` tensors on ``device``, copied there once."""
        if device not in self._stats:
            self._stats[device] = [(to_device(t._mean_t, device).view(1, -1, 1, 1),
                                    to_device(t._std_t, device).view(1, -1, 1, 1)) for t in self.normalize]
        return self._stats[device]

    def _draw(self, sizes: Sequence[tuple[int, int]]) -> tuple[list[Any], list[Any]]:
        warps, colours = [], []
        # the CPU order: geometric draws, then ColorDistort's, then those of any flip after it
        cut = self.transforms.index(self.colour) if self.colour is not None else len(self.transforms)
        before = [t for t in self.geometric if self.transforms.index(t) < cut]
        after = [t for t in self.geometric if self.transforms.index(t) > cut]
        for h, w in sizes:
            warp = draw_warp(before, w, h)
            colours.append(self.colour.draw_params() if self.colour is not None else None)
            draw_warp(after, w, h, warp)  # flips only (the order check keeps other geometry before ColorDistort)
            warps.append(warp)
        return warps, colours

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        image, segments = batch[IMAGE_KEY], batch.get(MASK_KEY)
        sizes = batch.pop(SIZE_KEY)  # host values: (h, w) per sample
        sizes = [tuple(int(v) for v in hw) for hw in (sizes.tolist() if isinstance(sizes, torch.Tensor) else sizes)]
        warps, colours = self._draw(sizes)
        if self.geometric:
            img, segments = warp_batch(image, segments, sizes, warps, self.fill, self.seg_fill)
        else:
            img = image.permute(0, 3, 1, 2).float()
        if self.colour is not None:
            img = color_distort_batch(img, colours)
        img = img.div_(255.0)  # ToTensor
        for mean, std in self._normalize_on(img.device):
            img = (img - mean).div_(std)
        batch[IMAGE_KEY] = img
        if segments is not None:
            for t in self.unsqueeze:
                segments = segments.unsqueeze(t.axis + 1 if t.axis >= 0 else t.axis)
            batch[MASK_KEY] = segments
        return batch

    def __repr__(self) -> str:
        return f"BatchAugment({' -> '.join(self.names)})"


def spatial_fields(split_cfg: Mapping[str, Any]) -> set[str] | None:
    """The spatial keys that reach the batch (None: the device path cannot know or handle them)."""
    inputs_def = split_cfg.get("inputs_def")
    if not isinstance(inputs_def, Mapping) or inputs_def.get("alias") is not None:
        return None
    fields = set(inputs_def.get("fields") or ())
    spatial = fields & set(DEFAULT_KEYS)
    if IMAGE_KEY not in fields or not spatial <= {IMAGE_KEY, MASK_KEY}:
        return None
    return spatial
