"""Readable prediction images: the class colours blended over the photo, enlarged, with a colour legend."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np


def voc_palette(n: int = 256) -> np.ndarray:
    """The Pascal VOC colour map, ``(n, 3)`` uint8 RGB; index 255 (void) is the VOC boundary colour."""
    palette = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    if n > 255:
        palette[255] = (224, 224, 192)
    return palette


PALETTE = voc_palette()


def colourise(mask: np.ndarray) -> np.ndarray:
    """A class-index mask ``(H, W)`` → RGB ``(H, W, 3)`` with the VOC palette."""
    return PALETTE[np.clip(np.asarray(mask).astype(np.int64), 0, 255)]


def blend(image: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Class colours over ``image`` (RGB uint8, same size as ``mask``); background (0) and void stay clear."""
    colour = colourise(mask).astype(np.float32)
    shown = ((mask > 0) & (mask != 255))[..., None]
    out = np.where(shown, (1 - alpha) * image.astype(np.float32) + alpha * colour, image.astype(np.float32))
    return out.clip(0, 255).astype(np.uint8)


def _enlarge(image: np.ndarray, min_side: int, nearest: bool = False) -> np.ndarray:
    h, w = image.shape[:2]
    if min(h, w) >= min_side:
        return image
    ratio = min_side / min(h, w)
    size = (round(w * ratio), round(h * ratio))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC)


def _titled(panel: np.ndarray, title: str) -> np.ndarray:
    bar = np.full((28, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, panel], axis=0)


def legend(class_ids: Sequence[int], class_names: Sequence[str], height: int) -> np.ndarray:
    """A white column of colour swatches with class names (one row per class id)."""
    width = 24 + 10 * max([len(_name(i, class_names)) for i in class_ids] + [6]) + 16
    panel = np.full((max(height, 30 * len(class_ids) + 40), width, 3), 255, np.uint8)
    cv2.putText(panel, "classes", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for row, index in enumerate(class_ids):
        y = 40 + 30 * row
        colour = tuple(int(c) for c in PALETTE[index])
        cv2.rectangle(panel, (8, y), (28, y + 20), colour, -1)
        cv2.rectangle(panel, (8, y), (28, y + 20), (0, 0, 0), 1)
        cv2.putText(panel, _name(index, class_names), (36, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0),
                    1, cv2.LINE_AA)
    return panel


def _name(index: int, class_names: Sequence[str]) -> str:
    return str(class_names[index]) if index < len(class_names) else str(index)


def overlay_panels(image: np.ndarray, masks: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str],
                   min_side: int = 320) -> np.ndarray:
    """``image`` | one blended panel per ``(title, mask)`` | legend of the classes shown; RGB uint8."""
    big = _enlarge(image, min_side)
    panels = [_titled(big, "image")]
    present: set[int] = set()
    for title, mask in masks:
        mask = np.asarray(mask).astype(np.uint8)
        present |= {int(v) for v in np.unique(mask) if v != 255}
        resized = cv2.resize(mask, (big.shape[1], big.shape[0]), interpolation=cv2.INTER_NEAREST)
        panels.append(_titled(blend(big, resized), title))
    row = np.concatenate(panels, axis=1)
    key = legend(sorted(present | set(range(len(class_names)))) if len(class_names) <= 24 else sorted(present),
                 class_names, row.shape[0])
    if key.shape[0] > row.shape[0]:
        row = np.pad(row, ((0, key.shape[0] - row.shape[0]), (0, 0), (0, 0)), constant_values=255)
    return np.concatenate([row, key[: row.shape[0]]], axis=1)


def _caption(pred: Mapping[str, Any]) -> str:
    if pred.get("task") == "classification":
        return " | ".join(f"{t['class']} {t['probability']:.2f}" for t in pred.get("top", [])[:3])
    if pred.get("task") == "detection":
        return f"{len(pred.get('boxes', []))} box(es)"
    return "keypoints"


def prediction_overlay(image: np.ndarray, pred: Mapping[str, Any], meta: Mapping[str, Any],
                       min_side: int = 320) -> np.ndarray:
    """The image enlarged to ``min_side`` with the prediction drawn (image pixels): boxes with class names and
    scores, keypoints with the skeleton, the top classes as the caption; RGB uint8."""
    from antgo.tracking.task_plots import draw_boxes, draw_keypoints  # numpy + OpenCV only

    big = _enlarge(image, min_side)
    sx, sy = big.shape[1] / image.shape[1], big.shape[0] / image.shape[0]
    if pred.get("task") == "detection" and pred.get("boxes"):
        boxes = np.asarray(pred["boxes"], np.float64) * [sx, sy, sx, sy]
        big = draw_boxes(big, boxes, np.asarray(pred["labels"]), (230, 40, 40),
                         list(meta.get("class_names") or []), np.asarray(pred["scores"]))
    elif pred.get("task") == "keypoints":
        joints = np.asarray([[k["x"] * sx, k["y"] * sy, 1.0] for k in pred["keypoints"]])[None]
        big = draw_keypoints(big, joints, (230, 40, 40), [list(e) for e in meta.get("skeleton") or []])
    return _titled(big, _caption(pred))


def save_rgb(path: str, image: np.ndarray) -> str:
    """Write an RGB image with OpenCV (which expects BGR)."""
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
