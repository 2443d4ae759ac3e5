"""Colour transforms on RGB uint8 images."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from antgo.registry import TRANSFORMS

# ITU-R BT.601 luma weights for R, G, B: the "mean grey" that contrast blends towards.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _op(spec: Sequence[float] | None, name: str) -> tuple[float, float, float] | None:
    if spec is None:
        return None
    if len(spec) != 3:
        raise ValueError(f"ColorDistort.{name} must be [low, high, prob], got {spec!r}")
    lo, hi, prob = (float(v) for v in spec)
    if lo > hi or not 0.0 <= prob <= 1.0:
        raise ValueError(f"ColorDistort.{name} needs low <= high and 0 <= prob <= 1, got {spec!r}")
    return lo, hi, prob


@TRANSFORMS.register_module()
class ColorDistort:
    """Random photometric distortion of an RGB ``uint8`` image (``image`` by default).

    Each op is ``[low, high, prob]`` and is **applied** with probability ``prob`` (None disables it):

    - ``brightness``: multiply every pixel by ``U(low, high)``;
    - ``contrast``: blend with the image's mean grey, ``grey + U(low, high) * (img - grey)``;
    - ``saturation``: multiply the HSV saturation by ``U(low, high)``;
    - ``hue``: add ``U(low, high)`` to the OpenCV hue (units of 2 degrees, 0-179), wrapping at 180.

    Order: brightness, then contrast either before or after the HSV ops (50/50, like the
    reference implementation). Values are clipped to 0-255 and returned as ``uint8``.
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

    @staticmethod
    def _contrast(img: np.ndarray, alpha: float) -> np.ndarray:
        grey = float((img.reshape(-1, 3) @ _LUMA).mean())
        return grey + alpha * (img - grey)

    @staticmethod
    def _hsv(img: np.ndarray, sat: float | None, hue: float | None) -> np.ndarray:
        hsv = cv2.cvtColor(np.clip(img, 0, 255).round().astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        if sat is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 255)
        if hue is not None:
            hsv[..., 0] = np.mod(hsv[..., 0] + hue, 180.0)  # OpenCV 8-bit hue spans 0-179
        hsv = np.clip(hsv.round(), 0, 255).astype(np.uint8)
        hsv[..., 0] = np.minimum(hsv[..., 0], 179)  # 179.6 rounds to 180, which is not a valid hue
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)

    def _distort(self, img: np.ndarray) -> np.ndarray:
        brightness, contrast = self._draw(self.brightness), self._draw(self.contrast)
        sat, hue = self._draw(self.saturation), self._draw(self.hue)
        contrast_first = np.random.rand() < 0.5
        out = img.astype(np.float32)
        if brightness is not None:
            out = out * brightness
        if contrast is not None and contrast_first:
            out = self._contrast(out, contrast)
        if sat is not None or hue is not None:
            out = self._hsv(out, sat, hue)
        if contrast is not None and not contrast_first:
            out = self._contrast(out, contrast)
        return np.clip(out.round(), 0, 255).astype(np.uint8)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        for key in self.keys:
            img = results.get(key)
            if img is None:
                continue
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise TypeError(f"ColorDistort needs '{key}' as an RGB uint8 (H, W, 3) array, got "
                                f"{type(img).__name__} {getattr(img, 'dtype', '')} {getattr(img, 'shape', '')}; "
                                f"put it before ToTensor/Normalize")
            results[key] = self._distort(img)
        return results
