"""Rotation, flip and resize transforms (they keep image, mask, boxes and joints consistent)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from antgo.registry import TRANSFORMS
from antgo.data.transforms._geometry import (BOX_KEYS, MASK_KEYS, POINT_KEYS, affine_points, as_wh, image_hw,
                                             interp_code, resize_sample, settle_instances, spatial_keys,
                                             update_meta)


@TRANSFORMS.register_module()
class Rotation:
    """With probability ``prob``, rotate about the image centre by an angle uniform in ``[-degree, degree]``.

    ``degree`` may also be ``(low, high)``. Same canvas size, so corners are cut off and the
    uncovered area is filled: images bilinearly with ``border_value``, ``segments`` nearest with
    ``label_border_value`` (255 = void). Boxes become the box around their rotated corners, clipped
    to the image (a box rotated off the image is dropped with its labels and other per-box fields);
    joints are rotated, and those leaving the image get visibility 0. Positive angles turn counter-clockwise.
    """

    def __init__(self, degree: float | Sequence[float] = 30, prob: float = 0.5,
                 border_value: Sequence[float] | float = (0, 0, 0), label_border_value: int = 255,
                 keys: Sequence[str] | None = None) -> None:
        if isinstance(degree, (int, float)):
            self.angle_range = (-abs(float(degree)), abs(float(degree)))
        else:
            self.angle_range = (float(degree[0]), float(degree[1]))
        self.prob = float(prob)
        self.border_value = border_value
        self.label_border_value = int(label_border_value)
        self.keys = keys

    def _border(self) -> tuple[float, ...]:
        value = self.border_value
        values = [float(value)] * 4 if np.ndim(value) == 0 else [float(v) for v in value][:4]
        return tuple(values + [0.0] * (4 - len(values)))  # cv2 takes a 4-element scalar

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if np.random.rand() >= self.prob:
            return results
        angle = float(np.random.uniform(*self.angle_range))
        keys = spatial_keys(results, self.keys)
        H, W = image_hw(results, keys)
        m = cv2.getRotationMatrix2D(((W - 1) / 2.0, (H - 1) / 2.0), angle, 1.0)
        for k in keys:
            v = results[k]
            if k in BOX_KEYS:
                b = np.asarray(v, dtype=np.float32).reshape(-1, 4)
                corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [0, 3]], b[:, [2, 3]]], 1) - 0.5
                rc = affine_points(corners, m) + 0.5  # boxes are continuous coords, m is in pixel centres
                results[k] = np.concatenate([rc.min(1), rc.max(1)], 1).astype(np.float32)
            elif k in POINT_KEYS:
                p = np.asarray(v, dtype=np.float32).copy()
                p[..., :2] = affine_points(p[..., :2], m)
                results[k] = p
            elif k in MASK_KEYS:
                results[k] = cv2.warpAffine(v, m, (W, H), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                            borderValue=self.label_border_value)
            else:
                results[k] = cv2.warpAffine(v, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                            borderValue=self._border()).reshape(v.shape)
        settle_instances(results, keys, W, H)
        update_meta(results, rotation=angle)
        return results


@TRANSFORMS.register_module()
class ResizeS:
    """Stretch to ``target_dim`` = ``(w, h)`` or an int (square), ignoring the aspect ratio.

    Images use ``interp`` (NEAREST, LINEAR, CUBIC, AREA, LANCZOS4 or RANDOM); ``segments`` nearest;
    boxes, joints and ``areas`` are scaled. ``image_meta.image_shape`` becomes ``(h, w)`` and
    ``image_meta.scale_factor`` (w, h, w, h scales) is multiplied when ``image_meta`` is present.
    """

    def __init__(self, target_dim: int | Sequence[int] = (256, 256), interp: str = "LINEAR",
                 keys: Sequence[str] | None = None) -> None:
        self.w, self.h = as_wh(target_dim, "ResizeS.target_dim")
        self.interp = interp
        interp_code(interp)  # validate now, not on the first sample
        self.keys = keys

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        keys = spatial_keys(results, self.keys)
        resize_sample(results, keys, self.w, self.h, interp_code(self.interp))
        return results


@TRANSFORMS.register_module()
class ResizeByShort:
    """Resize keeping the aspect ratio so the short side is ``short_size`` (the long side at most ``max_size``)."""

    def __init__(self, short_size: int, max_size: int | None = None, interp: str = "LINEAR",
                 keys: Sequence[str] | None = None) -> None:
        self.short_size = int(short_size)
        self.max_size = None if max_size is None else int(max_size)
        self.interp = interp
        interp_code(interp)
        self.keys = keys

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        keys = spatial_keys(results, self.keys)
        H, W = image_hw(results, keys)
        scale = self.short_size / min(H, W)
        if self.max_size is not None and max(H, W) * scale > self.max_size:
            scale = self.max_size / max(H, W)
        w, h = max(int(round(W * scale)), 1), max(int(round(H * scale)), 1)
        resize_sample(results, keys, w, h, interp_code(self.interp))
        return results


_CV_FLIP_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)


def _hflip(a: np.ndarray) -> np.ndarray:
    """Columns reversed, as a new contiguous array (cv2.flip is ~30x faster than a numpy copy of a[:, ::-1])."""
    if a.ndim in (2, 3) and a.dtype in _CV_FLIP_DTYPES and (a.ndim == 2 or a.shape[2] <= 512):
        return cv2.flip(a, 1).reshape(a.shape)  # cv2 drops a trailing channel of 1
    return np.ascontiguousarray(a[:, ::-1])


def _swap_pairs(x: np.ndarray, first: Sequence[int], second: Sequence[int], axis: int) -> np.ndarray:
    idx = np.arange(x.shape[axis])
    idx[list(first)], idx[list(second)] = list(second), list(first)
    return np.take(x, idx, axis=axis)


@TRANSFORMS.register_module()
class RandomFlipImage:
    """With probability ``prob``, flip horizontally.

    Images and ``segments``: columns reversed. Boxes: ``x1' = W - x2``, ``x2' = W - x1``. Joints:
    ``x' = W - 1 - x``, then the joints ``swap_ids[0][i]`` and ``swap_ids[1][i]`` trade places
    (left/right keypoints; also in ``joints_vis``). ``swap_labels`` is a list of pairs ``[a, b]``:
    class ``a`` and ``b`` trade places in ``labels`` and ``segments`` (left/right classes). The
    defaults swap nothing. ``image_meta.flipped`` records whether the flip happened.
    """

    def __init__(self, prob: float = 0.5, swap_ids: Sequence[Sequence[int]] = (),
                 swap_labels: Sequence[Sequence[int]] = (), keys: Sequence[str] | None = None) -> None:
        self.prob = float(prob)
        swap_ids = [list(s) for s in swap_ids]
        if swap_ids and (len(swap_ids) != 2 or len(swap_ids[0]) != len(swap_ids[1])):
            raise ValueError(f"swap_ids must be [left_ids, right_ids] of equal length, got {swap_ids}")
        self.swap_ids = swap_ids
        self.swap_labels = [tuple(int(v) for v in p) for p in swap_labels]
        if any(len(p) != 2 for p in self.swap_labels):
            raise ValueError(f"swap_labels must be a list of [a, b] pairs, got {swap_labels}")
        self.keys = keys

    def _remap_labels(self, a: np.ndarray) -> np.ndarray:
        out = a.copy()
        for x, y in self.swap_labels:
            out[a == x], out[a == y] = y, x
        return out

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        flipped = bool(np.random.rand() < self.prob)
        if flipped:
            keys = spatial_keys(results, self.keys)
            H, W = image_hw(results, keys)
            for k in keys:
                v = results[k]
                if k in BOX_KEYS:
                    b = np.asarray(v, dtype=np.float32).copy()
                    b[..., 0], b[..., 2] = W - b[..., 2], W - b[..., 0]
                    results[k] = b
                elif k in POINT_KEYS:
                    p = np.asarray(v, dtype=np.float32).copy()
                    p[..., 0] = W - 1 - p[..., 0]
                    results[k] = _swap_pairs(p, *self.swap_ids, axis=-2) if self.swap_ids else p
                else:
                    out = _hflip(v)
                    results[k] = self._remap_labels(out) if (k in MASK_KEYS and self.swap_labels) else out
            if self.swap_ids and results.get("joints_vis") is not None:
                results["joints_vis"] = _swap_pairs(np.asarray(results["joints_vis"]), *self.swap_ids, axis=-1)
            if self.swap_labels and results.get("labels") is not None:
                results["labels"] = self._remap_labels(np.asarray(results["labels"]))
        update_meta(results, flipped=flipped)
        return results
