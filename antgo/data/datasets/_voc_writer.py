"""Writing VOC-layout files: palette masks, JPEG images, split lists; plus shape drawing helpers."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

VOID = 255


def voc_palette() -> list[int]:
    """The 256-colour palette of VOC ``SegmentationClass`` PNGs (flat RGB list; 255 -> (224, 224, 192))."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


_PALETTE = voc_palette()


def write_palette_mask(path: Path, mask: np.ndarray) -> None:
    """A class-index mask as a palette ('P') PNG, like VOC ``SegmentationClass``."""
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    im.putpalette(_PALETTE)  # an 'L' image becomes 'P' with the same indices
    im.save(path)


def write_grey_mask(path: Path, mask: np.ndarray) -> None:
    """A class-index mask as a grey ('L') PNG, like SBD ``SegmentationClassAug``."""
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).save(path)


def write_rgb_jpeg(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    """An RGB array as a JPEG (OpenCV writes BGR, hence the swap)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"could not write {path}")


def write_ids(path: Path, ids: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def voc_dirs(voc_root: Path) -> None:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc_root / sub).mkdir(parents=True, exist_ok=True)


def void_boundaries(label: np.ndarray, width: int = 2) -> np.ndarray:
    """``label`` with a band of about ``width`` pixels set to 255 where classes meet (VOC-style)."""
    k = np.ones((width + 1, width + 1), np.uint8)  # a (w+1)-square gradient marks w pixels across the edge
    edge = cv2.dilate(label, k) != cv2.erode(label, k)
    out = label.copy()
    out[edge] = VOID
    return out


def shape_mask(kind: str, h: int, w: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """A filled shape (circle, square, triangle, cross, ellipse) as a bool mask."""
    canvas = np.zeros((h, w), np.uint8)
    if kind == "circle":
        cv2.circle(canvas, (int(round(cx)), int(round(cy))), int(round(r)), 1, -1)
        return canvas.astype(bool)
    if kind == "ellipse":
        cv2.ellipse(canvas, (int(round(cx)), int(round(cy))), (int(r), max(int(r * 0.55), 2)), angle, 0, 360, 1, -1)
        return canvas.astype(bool)
    if kind == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * r * 0.8
    elif kind == "triangle":
        pts = np.array([[0, -1], [0.866, 0.5], [-0.866, 0.5]], np.float32) * r * 1.3  # area close to the other shapes
    elif kind == "cross":
        a, b = 1.0, 0.36
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b],
                        [-a, -b], [-b, -b]], np.float32) * r
    else:
        raise ValueError(f"unknown shape {kind!r}")
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]], np.float32)
    pts = pts @ rot.T + np.array([cx, cy], np.float32)
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)


def hsv_colour(rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float],
               val: tuple[float, float]) -> np.ndarray:
    """An RGB colour (float32, 0-255) drawn from OpenCV HSV ranges (hue 0-179, wrapping)."""
    hsv = np.array([[[rng.uniform(*hue) % 180, rng.uniform(*sat), rng.uniform(*val)]]], np.float32)
    hsv = np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
