"""Colour transforms on RGB uint8 images."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np

from antgo.registry import TRANSFORMS

# ITU-R BT.601 luma weights for R, G, B: the "mean grey" that contrast blends towards.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_VALUES = np.arange(256, dtype=np.float32)  # every uint8 value: per-value maps become lookup tables


def _op(spec: Sequence[float] | None, name: str) -> tuple[float, float, float] | None:
    if spec is None:
        return None
    if len(spec) != 3:
        raise ValueError(f"ColorDistort.{name} must be [low, high, prob], got {spec!r}")
    lo, hi, prob = (float(v) for v in spec)
    if lo > hi or not 0.0 <= prob <= 1.0:
        raise ValueError(f"ColorDistort.{name} needs low <= high and 0 <= prob <= 1, got {spec!r}")
    return lo, hi, prob


class ColorParams(NamedTuple):
    """One draw of ColorDistort's factors (None: the op is skipped this time)."""
    brightness: float | None
    contrast: float | None
    saturation: float | None
    hue: float | None
    contrast_first: bool


def mean_grey(img: np.ndarray, scale: float = 1.0) -> float:
    """The mean BT.601 luma of an RGB image whose values are ``scale * img``."""
    means = np.asarray(cv2.mean(img)[:3], dtype=np.float64)
    return float(scale * means @ _LUMA.astype(np.float64))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(values.round(), 0, 255).astype(np.uint8)


@TRANSFORMS.register_module()
class ColorDistort:
    """Random photometric distortion of an RGB ``uint8`` image (``image`` by default).

    Each op is ``[low, high, prob]`` and is **applied** with probability ``prob`` (None disables it):

    - ``brightness``: multiply every pixel by ``U(low, high)``;
    - ``contrast``: blend with the image's mean grey, ``grey + U(low, high) * (img - grey)``;
    - ``saturation``: multiply the HSV saturation by ``U(low, high)``;
    - ``hue``: add ``U(low, high)`` to the OpenCV hue (units of 2 degrees, 0-179), wrapping at 180.

    Order: brightness, then contrast either before or after the HSV ops (50/50, like the
    reference implementation). Values are clipped to 0-255 and returned as ``uint8``; the HSV ops
    work on OpenCV's 8-bit HSV (the image is rounded to ``uint8`` before them).
    """

    def __init__(self, hue: Sequence[float] | None = (-18, 18, 0.5),
                 saturation: Sequence[float] | None = (0.5, 1.5, 0.5),
                 contrast: Sequence[float] | None = (0.5, 1.5, 0.5),
                 brightness: Sequence[float] | None = (0.5, 1.5, 0.5),
                 keys: Sequence[str] = ("image",)) -> None:
        self.hue = _op(hue, "hue")
        self.saturation = _op(saturation, "saturation")
        self.contrast = _op(contrast, "contrast")
        self.brightness = _op(brightness, "brightness")
        self.keys = list(keys)

    @staticmethod
    def _draw(op: tuple[float, float, float] | None) -> float | None:
        """The op's factor, or None when it is skipped this time."""
        if op is None or np.random.rand() >= op[2]:
            return None
        return float(np.random.uniform(op[0], op[1]))

    def draw_params(self) -> ColorParams:
        """Draw one set of factors from the global ``np.random`` (the batched device version uses it too)."""
        brightness, contrast = self._draw(self.brightness), self._draw(self.contrast)
        sat, hue = self._draw(self.saturation), self._draw(self.hue)
        return ColorParams(brightness, contrast, sat, hue, bool(np.random.rand() < 0.5))

    @staticmethod
    def hsv_luts(sat: float | None, hue: float | None) -> np.ndarray:
        """A (256, 1, 3) table for ``cv2.LUT`` on an 8-bit HSV image: hue shifted (wrapping), S scaled."""
        h = np.minimum(_to_uint8(np.mod(_VALUES + hue, 180.0)), 179) if hue is not None else _VALUES.astype(np.uint8)
        s = _to_uint8(np.clip(_VALUES * sat, 0, 255)) if sat is not None else _VALUES.astype(np.uint8)
        return np.stack([h, s, _VALUES.astype(np.uint8)], -1).reshape(256, 1, 3)

    @classmethod
    def apply(cls, img: np.ndarray, p: ColorParams) -> np.ndarray:
        """The distortion ``p`` on an RGB uint8 image.

        Every step before the HSV conversion (and every step after it) is a function of the pixel's
        uint8 value, so each run of steps is one 256-entry lookup table: the same float32 arithmetic as
        the per-pixel formulas, evaluated once per value.
        """
        values, scale = _VALUES, 1.0  # the pending per-value map of the current uint8 image
        if p.brightness is not None:
            values, scale = values * p.brightness, p.brightness
        if p.contrast is not None and p.contrast_first:
            grey = mean_grey(img, scale)
            values = grey + p.contrast * (values - grey)
        if p.saturation is not None or p.hue is not None:
            if values is not _VALUES:
                img = cv2.LUT(img, _to_uint8(values))
            hsv = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_RGB2HSV), cls.hsv_luts(p.saturation, p.hue))
            img, values = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), _VALUES
        if p.contrast is not None and not p.contrast_first:
            grey = mean_grey(img) if values is _VALUES else mean_grey(img, scale)
            values = grey + p.contrast * (values - grey)
        return img if values is _VALUES else cv2.LUT(img, _to_uint8(values))

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        for key in self.keys:
            img = results.get(key)
            if img is None:
                continue
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise TypeError(f"ColorDistort needs '{key}' as an RGB uint8 (H, W, 3) array, got "
                                f"{type(img).__name__} {getattr(img, 'dtype', '')} {getattr(img, 'shape', '')}; "
                                f"put it before ToTensor/Normalize")
            results[key] = self.apply(np.ascontiguousarray(img), self.draw_params())
        return results
