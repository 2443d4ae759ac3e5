"""Array -> tensor conversion, normalisation and axis insertion."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from antgo.registry import TRANSFORMS


def imnormalize(img: np.ndarray, mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray,
                to_rgb: bool = False) -> np.ndarray:
    """``(img - mean) / std`` per channel on an HWC array, as float32 (mmcv semantics).

    ``to_rgb=True`` first swaps the channel order (BGR -> RGB, or RGB -> BGR: the swap is symmetric).
    The input is not modified.
    """
    out = np.array(img, dtype=np.float32, copy=True)
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1)
    stdinv = 1.0 / np.asarray(std, dtype=np.float32).reshape(1, -1)
    if to_rgb:
        if out.ndim != 3 or out.shape[2] != 3:
            raise ValueError(f"imnormalize(to_rgb=True) needs an (H, W, 3) image, got shape {out.shape}")
        out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    return ((out - mean) * stdinv).astype(np.float32)


@TRANSFORMS.register_module()
class ToTensor:
    """HWC numpy array -> CHW ``float32`` tensor; ``uint8`` input is divided by 255 (other dtypes are not scaled).

    A 2-D ``(H, W)`` array becomes ``(1, H, W)``. Tensors pass through unchanged.
    """

    def __init__(self, keys: Sequence[str] = ("image",)) -> None:
        self.keys = list(keys)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        for key in self.keys:
            v = results.get(key)
            if v is None or isinstance(v, torch.Tensor):
                continue
            a = np.asarray(v)
            if a.ndim == 2:
                a = a[:, :, None]
            if a.ndim != 3:
                raise ValueError(f"ToTensor: '{key}' must be (H, W) or (H, W, C), got shape {a.shape}")
            # one pass: the strided HWC -> CHW read and the dtype conversion happen in the same copy
            t = torch.empty((a.shape[2], a.shape[0], a.shape[1]), dtype=torch.float32)
            t.copy_(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1))
            results[key] = t.div_(255.0) if a.dtype == np.uint8 else t
        return results


@TRANSFORMS.register_module()
class Normalize:
    """Per-channel ``(x - mean) / std``; ``mean``/``std`` are in the data's scale.

    On a CHW float tensor (after ``ToTensor``, values in 0-1: the seed config's statistics) channels
    are axis 0; on an HWC numpy array (values as they are, e.g. 0-255) channels are the last axis and
    the result is float32.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], keys: Sequence[str] = ("image",)) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.std.shape or np.any(self.std == 0):
            raise ValueError(f"Normalize: mean {mean} and std {std} must have one non-zero std per mean")
        self.keys = list(keys)
        # built once: this runs for every sample in the loader
        self._mean_t = torch.from_numpy(self.mean)
        self._std_t = torch.from_numpy(self.std)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        for key in self.keys:
            v = results.get(key)
            if v is None:
                continue
            if isinstance(v, torch.Tensor):
                shape = (-1, *([1] * (v.dim() - 1)))
                results[key] = (v.float() - self._mean_t.view(shape)).div_(self._std_t.view(shape))
            else:
                results[key] = imnormalize(np.asarray(v), self.mean, self.std)
        return results


@TRANSFORMS.register_module()
class UnSqueeze:
    """Insert an axis of size 1 at ``axis`` in each key (``np.expand_dims`` / ``Tensor.unsqueeze``)."""

    def __init__(self, axis: int = 0, keys: Sequence[str] = ()) -> None:
        self.axis = int(axis)
        self.keys = list(keys)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        for key in self.keys:
            v = results.get(key)
            if v is None:
                continue
            results[key] = v.unsqueeze(self.axis) if isinstance(v, torch.Tensor) else np.expand_dims(v, self.axis)
        return results
