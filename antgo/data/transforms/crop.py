"""Padding and cropping transforms (segmentation recipes: VOC, Cityscapes)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from antgo.registry import TRANSFORMS
from antgo.data.transforms._geometry import (as_wh, crop_sample, image_hw, interp_code, pad_sample, resize_sample,
                                             spatial_keys)


@TRANSFORMS.register_module()
class Pad:
    """Pad at the bottom/right to ``size`` = ``(w, h)``/int, or up to a multiple of ``size_divisor``.

    Images are filled with ``pad_val`` (a number or one per channel), ``segments`` with ``seg_pad_val``
    (255 = void). Coordinates do not change. Larger images are left as they are.
    """

    def __init__(self, size: int | Sequence[int] | None = None, size_divisor: int | None = None,
                 pad_val: float | Sequence[float] = 0, seg_pad_val: int = 255,
                 keys: Sequence[str] | None = None) -> None:
        if (size is None) == (size_divisor is None):
            raise ValueError("Pad needs exactly one of size=(w, h) and size_divisor=n")
        self.size = None if size is None else as_wh(size, "Pad.size")
        self.size_divisor = None if size_divisor is None else int(size_divisor)
        self.pad_val, self.seg_pad_val, self.keys = pad_val, int(seg_pad_val), keys

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        keys = spatial_keys(results, self.keys)
        H, W = image_hw(results, keys)
        if self.size is not None:
            w, h = self.size
        else:
            d = self.size_divisor
            w, h = -(-W // d) * d, -(-H // d) * d
        pad_sample(results, keys, w, h, self.pad_val, self.seg_pad_val)
        return results


@TRANSFORMS.register_module()
class CenterCrop:
    """Crop the centre ``crop_size`` = ``(w, h)``/int window; smaller images are padded first (``Pad`` rules)."""

    def __init__(self, crop_size: int | Sequence[int], pad_val: float | Sequence[float] = 0,
                 seg_pad_val: int = 255, keys: Sequence[str] | None = None) -> None:
        self.w, self.h = as_wh(crop_size, "CenterCrop.crop_size")
        self.pad_val, self.seg_pad_val, self.keys = pad_val, int(seg_pad_val), keys

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        keys = spatial_keys(results, self.keys)
        pad_sample(results, keys, self.w, self.h, self.pad_val, self.seg_pad_val)
        H, W = image_hw(results, keys)
        crop_sample(results, keys, (W - self.w) // 2, (H - self.h) // 2, self.w, self.h)
        return results


@TRANSFORMS.register_module()
class RandomScaleCrop:
    """Random rescale (aspect kept) by a factor uniform in ``scale_range``, pad to at least
    ``crop_size`` (images with ``pad_val``, ``segments`` with ``seg_pad_val`` = 255), then a random
    ``crop_size`` = ``(w, h)`` window.

    ``cat_max_ratio`` (mmseg): when set, up to 10 windows are tried until no single class (other
    than ``ignore_index``) covers more than that fraction of the window's labelled pixels.
    """

    def __init__(self, crop_size: int | Sequence[int] = (512, 512), scale_range: Sequence[float] = (0.5, 2.0),
                 cat_max_ratio: float | None = None, pad_val: float | Sequence[float] = 0, seg_pad_val: int = 255,
                 ignore_index: int = 255, interp: str = "LINEAR", keys: Sequence[str] | None = None) -> None:
        self.w, self.h = as_wh(crop_size, "RandomScaleCrop.crop_size")
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        self.scale_range = (lo, hi)
        self.cat_max_ratio = None if cat_max_ratio is None else float(cat_max_ratio)
        self.pad_val, self.seg_pad_val, self.ignore_index = pad_val, int(seg_pad_val), int(ignore_index)
        self.interp = interp
        interp_code(interp)
        self.keys = keys

    def _window(self, H: int, W: int) -> tuple[int, int]:
        return np.random.randint(0, H - self.h + 1), np.random.randint(0, W - self.w + 1)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        keys = spatial_keys(results, self.keys)
        H, W = image_hw(results, keys)
        scale = float(np.random.uniform(*self.scale_range))
        nw, nh = max(int(round(W * scale)), 1), max(int(round(H * scale)), 1)
        resize_sample(results, keys, nw, nh, interp_code(self.interp))
        pad_sample(results, keys, self.w, self.h, self.pad_val, self.seg_pad_val)
        H, W = image_hw(results, keys)
        y0, x0 = self._window(H, W)
        seg = results.get("segments")
        if self.cat_max_ratio is not None and self.cat_max_ratio < 1.0 and isinstance(seg, np.ndarray):
            for _ in range(10):
                labels, counts = np.unique(seg[y0:y0 + self.h, x0:x0 + self.w], return_counts=True)
                counts = counts[labels != self.ignore_index]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                y0, x0 = self._window(H, W)
        crop_sample(results, keys, x0, y0, self.w, self.h)
        return results


__all__ = ["Pad", "CenterCrop", "RandomScaleCrop"]
