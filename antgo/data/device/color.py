"""ColorDistort on a batch of device tensors, with OpenCV's 8-bit HSV conversions reproduced exactly.

The CPU transform converts a uint8 RGB image with ``cv2.cvtColor`` (integer tables for RGB -> HSV, float32
for HSV -> RGB); the functions here follow the same arithmetic on int32/float32 tensors, so a sample with
the same factors gives the same pixels (tests compare them). Images are float tensors ``(B, 3, H, W)`` that
hold integer values 0-255.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from antgo.data.device.transfer import to_device
from antgo.data.transforms.photometric import _LUMA, ColorParams

_HSV_SHIFT = 12
_SDIV = [0] + [int(np.rint((255 << _HSV_SHIFT) / i)) for i in range(1, 256)]
_HDIV180 = [0] + [int(np.rint((180 << _HSV_SHIFT) / (6.0 * i))) for i in range(1, 256)]
# (b, g, r) picks from [v, p, q, t] per hue sector, as in OpenCV's HSV2RGB
_SECTOR = [[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]]


_TABLES: dict[torch.device, tuple[torch.Tensor, ...]] = {}


def _tables(device: torch.device) -> tuple[torch.Tensor, ...]:
    """(S divisors, H divisors, sectors, luma weights) on ``device``, copied there once."""
    if device not in _TABLES:
        _TABLES[device] = (to_device(torch.tensor(_SDIV, dtype=torch.int32), device),
                           to_device(torch.tensor(_HDIV180, dtype=torch.int32), device),
                           to_device(torch.tensor(_SECTOR, dtype=torch.long), device),
                           to_device(torch.from_numpy(_LUMA.astype(np.float64)), device))
    return _TABLES[device]


def rgb_to_hsv8(rgb: torch.Tensor) -> torch.Tensor:
    """``cv2.COLOR_RGB2HSV`` on uint8 values: ``(B, 3, H, W)`` integer-valued -> H 0-179, S and V 0-255."""
    sdiv, hdiv, _, _ = _tables(rgb.device)
    r, g, b = rgb.to(torch.int32).unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * sdiv[v] + half) >> _HSV_SHIFT
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hdiv[diff] + half) >> _HSV_SHIFT
    h = torch.where(h < 0, h + 180, h)
    return torch.stack([h, s, v], 1)


def _one_minus_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - a*b`` rounded once, as the fused multiply-add in OpenCV's compiled loop (exact in float64)."""
    return (1.0 - a.double() * b.double()).float()


def hsv8_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """``cv2.COLOR_HSV2RGB`` on 8-bit HSV (H 0-179): float32 arithmetic, truncated to integer-valued float.

    OpenCV's vectorised loop truncates; its scalar loop for the last few pixels of a row rounds, so
    those pixels may differ by one level.
    """
    return _hsv8_to_rgb(*hsv.unbind(1))


def _hsv8_to_rgb(h8: torch.Tensor, s8: torch.Tensor, v8: torch.Tensor) -> torch.Tensor:
    _, _, sector_table, _ = _tables(h8.device)
    h = h8.float() * np.float32(6.0 / 180.0)
    s = s8.float() * np.float32(1.0 / 255.0)
    v = v8.float() * np.float32(1.0 / 255.0)
    sector = torch.floor(h)
    h = h - sector
    sector = sector.long().clamp_(0, 5)
    tab = torch.stack([v, v * (1.0 - s), v * _one_minus_product(s, h), v * _one_minus_product(s, 1.0 - h)], 1)
    picks = sector_table[sector].permute(0, 3, 1, 2)  # (B, 3[b, g, r], H, W)
    bgr = torch.gather(tab, 1, picks)
    bgr = torch.where((s8 == 0).unsqueeze(1), v.unsqueeze(1).expand_as(bgr), bgr)
    return (bgr.flip(1) * 255.0).trunc_().clamp_(0, 255)  # OpenCV's SIMD path truncates


def _per_sample(values: Sequence[float | None], default: float, like: torch.Tensor) -> torch.Tensor:
    arr = np.array([default if v is None else v for v in values], dtype=np.float32)  # float32 like the CPU LUTs
    return to_device(torch.from_numpy(arr), like.device).view(-1, 1, 1, 1)


def _flags(values: Sequence[object], like: torch.Tensor) -> torch.Tensor:
    return to_device(torch.tensor([v is not None and v is not False for v in values]), like.device).view(-1, 1, 1, 1)


def _mean_grey(img: torch.Tensor) -> torch.Tensor:
    """Per-sample mean BT.601 luma in float64, as ``cv2.mean`` + the dot product on the CPU. The pixels are
    integers, so their float64 sum is exact in any order (and no float64 copy of the batch is made)."""
    means = img.sum(dim=(2, 3), dtype=torch.float64) / (img.shape[2] * img.shape[3])
    return (means @ _tables(img.device)[3]).view(-1, 1, 1, 1)


def _u8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp_(0, 255)


def _contrast(x: torch.Tensor, grey: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    grey = grey.float()  # numpy casts the Python float grey to float32 in the same expression
    return grey + alpha * (x - grey)


def color_distort_batch(img: torch.Tensor, params: Sequence[ColorParams]) -> torch.Tensor:
    """``ColorDistort.apply`` for each sample of ``img`` (integer-valued float ``(B, 3, H, W)``) with its params."""
    bright = _per_sample([p.brightness for p in params], 1.0, img)
    alpha = _per_sample([p.contrast for p in params], 1.0, img)
    sat = _per_sample([p.saturation for p in params], 1.0, img)
    hue = _per_sample([p.hue for p in params], 0.0, img)
    first = _flags([p.contrast is not None and p.contrast_first for p in params], img)
    after = _flags([p.contrast is not None and not p.contrast_first for p in params], img)
    has_hsv = _flags([p.saturation is not None or p.hue is not None for p in params], img)
    has_s, has_h = _flags([p.saturation for p in params], img), _flags([p.hue for p in params], img)
    base_grey = _mean_grey(img)
    x = img * bright  # 1.0 where a sample has no brightness step: exactly its pixels
    scale = bright.double()
    x = torch.where(first, _contrast(x, base_grey * scale, alpha), x)
    if any(p.saturation is not None or p.hue is not None for p in params):  # decided on the host: no sync
        hsv = rgb_to_hsv8(_u8(x)).float()
        h = torch.where(has_h, _u8(torch.remainder(hsv[:, 0:1] + hue, 180.0)).clamp_(max=179.0), hsv[:, 0:1])
        s = torch.where(has_s, _u8(torch.clamp(hsv[:, 1:2] * sat, 0, 255)), hsv[:, 1:2])
        rgb = _hsv8_to_rgb(h[:, 0], s[:, 0], hsv[:, 2])
        x = torch.where(has_hsv, rgb, x)
        grey_after = torch.where(has_hsv, _mean_grey(rgb), base_grey * scale)
    else:
        grey_after = base_grey * scale
    x = torch.where(after, _contrast(x, grey_after, alpha), x)
    return _u8(x)
