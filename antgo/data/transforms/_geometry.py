"""Shared helpers that apply one geometric change to every spatial key of a sample.

Conventions: ``bboxes`` are ``(N, 4)`` ``x1, y1, x2, y2`` in continuous pixel coordinates (the image
spans ``[0, W] x [0, H]``); ``joints2d`` are ``(..., K, 2+)`` pixel-index coordinates (pixel centres at
integers), only the first two columns move and a third column is the visibility. ``segments`` (and any
key in ``MASK_KEYS``) use nearest-neighbour sampling and are padded with the void label; other array keys
are treated as images. After a change, ``settle_instances`` clips the boxes, drops the rows of boxes left
without area from every per-instance field and marks keypoints outside the image invisible.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

from antgo.data.collate import INSTANCE_KEYS

MASK_KEYS = ("segments",)
BOX_KEYS = ("bboxes",)
POINT_KEYS = ("joints2d",)
IMAGE_KEYS = ("image", "image_2")
DEFAULT_KEYS = IMAGE_KEYS + MASK_KEYS + BOX_KEYS + POINT_KEYS

INTERPOLATIONS = {
    "NEAREST": cv2.INTER_NEAREST, "LINEAR": cv2.INTER_LINEAR, "CUBIC": cv2.INTER_CUBIC,
    "AREA": cv2.INTER_AREA, "LANCZOS4": cv2.INTER_LANCZOS4,
}


def interp_code(name: str) -> int:
    """OpenCV flag of an interpolation name; 'RANDOM' picks one with ``np.random``."""
    name = str(name).upper()
    if name == "RANDOM":
        return list(INTERPOLATIONS.values())[np.random.randint(len(INTERPOLATIONS))]
    if name not in INTERPOLATIONS:
        raise ValueError(f"unknown interp {name!r}; use one of {sorted(INTERPOLATIONS) + ['RANDOM']}")
    return INTERPOLATIONS[name]


def as_wh(size: int | Sequence[int], what: str) -> tuple[int, int]:
    """``int`` -> ``(n, n)``; ``(w, h)`` -> ``(w, h)``."""
    if isinstance(size, (int, np.integer)):
        w = h = int(size)
    else:
        if len(size) != 2:
            raise ValueError(f"{what} must be an int or (w, h), got {size!r}")
        w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"{what} must be positive, got {size!r}")
    return w, h


def spatial_keys(results: dict[str, Any], keys: Iterable[str] | None) -> list[str]:
    """The keys a geometric transform touches: ``keys`` (or the defaults) that are in ``results``."""
    return [k for k in (DEFAULT_KEYS if keys is None else keys) if k in results and results[k] is not None]


def image_hw(results: dict[str, Any], keys: Iterable[str]) -> tuple[int, int]:
    """Height and width of the sample, from ``image`` or else the first array key."""
    for k in ["image", *keys]:
        v = results.get(k)
        if isinstance(v, np.ndarray) and v.ndim >= 2 and k not in BOX_KEYS + POINT_KEYS:
            return int(v.shape[0]), int(v.shape[1])
    raise KeyError(f"no image-like array among {sorted(results)} to take the size from")


def _check_array(key: str, value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"'{key}' must be a numpy array (HWC) here, got {type(value).__name__}; "
                        f"put geometric transforms before ToTensor")
    return value


def update_meta(results: dict[str, Any], **changes: Any) -> None:
    """Write into a copy of ``image_meta`` (the dataset may share the original dict)."""
    meta = results.get("image_meta")
    if isinstance(meta, dict):
        results["image_meta"] = {**meta, **changes}


def resize_sample(results: dict[str, Any], keys: list[str], w: int, h: int, interp: int) -> None:
    """Stretch every spatial key to ``(w, h)``."""
    H, W = image_hw(results, keys)
    sx, sy = w / W, h / H
    for k in keys:
        v = results[k]
        if k in BOX_KEYS:
            b = np.asarray(v, dtype=np.float32).copy()
            b[..., 0::2] *= sx
            b[..., 1::2] *= sy
            results[k] = b
            if results.get("areas") is not None:
                results["areas"] = np.asarray(results["areas"], dtype=np.float32) * np.float32(sx * sy)
        elif k in POINT_KEYS:
            p = np.asarray(v, dtype=np.float32).copy()
            p[..., 0] = (p[..., 0] + 0.5) * sx - 0.5
            p[..., 1] = (p[..., 1] + 0.5) * sy - 0.5
            results[k] = p
        else:
            a = _check_array(k, v)
            if a.shape[:2] != (h, w):
                flag = cv2.INTER_NEAREST if k in MASK_KEYS else interp
                out = cv2.resize(a, (w, h), interpolation=flag)
                results[k] = out.reshape(h, w, *a.shape[2:])  # cv2 drops a trailing channel of 1
    settle_instances(results, keys, w, h)
    meta = results.get("image_meta")
    if isinstance(meta, dict):
        old = meta.get("scale_factor", (1.0, 1.0, 1.0, 1.0))
        update_meta(results, image_shape=(h, w),
                    scale_factor=(old[0] * sx, old[1] * sy, old[2] * sx, old[3] * sy))


def pad_sample(results: dict[str, Any], keys: list[str], w: int, h: int,
               pad_val: float | Sequence[float], seg_pad_val: int) -> None:
    """Pad every spatial key at the bottom/right to ``(w, h)`` (no-op where already as large)."""
    H, W = image_hw(results, keys)
    ph, pw = max(h - H, 0), max(w - W, 0)
    if ph == 0 and pw == 0:
        return
    for k in keys:
        if k in BOX_KEYS or k in POINT_KEYS:
            continue  # bottom/right padding leaves coordinates unchanged
        a = _check_array(k, results[k])
        if k in MASK_KEYS:
            value: Any = seg_pad_val
        else:
            value = pad_val if np.ndim(pad_val) == 0 else np.asarray(pad_val, dtype=a.dtype).reshape(-1)
        pad = [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2)
        if np.ndim(value) == 0:
            results[k] = np.pad(a, pad, mode="constant", constant_values=value)
        else:
            out = np.empty((H + ph, W + pw, *a.shape[2:]), dtype=a.dtype)
            out[...] = value
            out[:H, :W] = a
            results[k] = out
    update_meta(results, pad_shape=(H + ph, W + pw))


def crop_sample(results: dict[str, Any], keys: list[str], x0: int, y0: int, w: int, h: int) -> None:
    """Crop every spatial key to the window ``[x0, x0+w) x [y0, y0+h)`` (inside the image)."""
    for k in keys:
        v = results[k]
        if k in BOX_KEYS:
            b = np.asarray(v, dtype=np.float32).copy()
            b[..., 0::2] -= x0
            b[..., 1::2] -= y0
            results[k] = b
        elif k in POINT_KEYS:
            p = np.asarray(v, dtype=np.float32).copy()
            p[..., 0] -= x0
            p[..., 1] -= y0
            results[k] = p
        else:
            results[k] = np.ascontiguousarray(_check_array(k, v)[y0:y0 + h, x0:x0 + w])
    settle_instances(results, keys, w, h)
    update_meta(results, image_shape=(h, w))


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to ``(..., 2)`` points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


# Per-instance fields whose instance axis is not the only axis: only arrays of this rank are per instance
# (a single-instance ``joints2d`` of shape (K, 3) has no instance axis to drop from).
_INSTANCE_NDIM = {"joints2d": 3, "joints_vis": 2}


def _box_area(b: np.ndarray) -> np.ndarray:
    return np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)


def settle_instances(results: dict[str, Any], keys: Iterable[str], w: int, h: int) -> None:
    """After a geometric change to a ``w`` x ``h`` image: keep boxes, keypoints and per-box fields consistent.

    Boxes are clipped to the image; a box left without width or height is dropped together with its row
    of every per-instance field (``labels``, ``joints2d``, ``iscrowd``, ``areas``, ...); ``areas`` shrink with
    the part of the box that was cut off. Keypoints off the image (outside ``[-0.5, w - 0.5) x [-0.5, h - 0.5)``:
    pixel ``i`` spans ``[i - 0.5, i + 0.5)``) get visibility 0 (third column, and ``joints_vis``); their
    coordinates are kept.
    """
    keys = list(keys)
    for k in (k for k in BOX_KEYS if k in keys and results.get(k) is not None):
        b = np.asarray(results[k], dtype=np.float32).reshape(-1, 4)
        before = _box_area(b)
        clipped = np.stack([np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h), np.clip(b[:, 2], 0, w),
                            np.clip(b[:, 3], 0, h)], 1)
        after = _box_area(clipped)
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        results[k] = clipped
        if results.get("areas") is not None and len(results["areas"]) == len(b):
            ratio = np.divide(after, before, out=np.ones_like(after), where=before > 0)
            results["areas"] = (np.asarray(results["areas"], dtype=np.float32) * ratio).astype(np.float32)
        if not keep.all():
            _drop_rows(results, keep)
    for k in (k for k in POINT_KEYS if k in keys and results.get(k) is not None):
        p = np.asarray(results[k], dtype=np.float32)
        outside = (p[..., 0] < -0.5) | (p[..., 0] >= w - 0.5) | (p[..., 1] < -0.5) | (p[..., 1] >= h - 0.5)
        if p.shape[-1] >= 3 and outside.any():
            p = p.copy()
            p[..., 2][outside] = 0
            results[k] = p
        vis = results.get("joints_vis")
        if vis is not None and np.shape(vis) == outside.shape and outside.any():
            vis = np.array(vis, copy=True)
            vis[outside] = 0
            results["joints_vis"] = vis


def _drop_rows(results: dict[str, Any], keep: np.ndarray) -> None:
    """Keep the rows ``keep`` of every per-instance field that has one row per box."""
    for k in INSTANCE_KEYS:
        v = results.get(k)
        if v is None or np.ndim(v) < 1 or len(v) != len(keep):
            continue
        if k in _INSTANCE_NDIM and np.ndim(v) != _INSTANCE_NDIM[k]:
            continue
        results[k] = np.asarray(v)[keep]
