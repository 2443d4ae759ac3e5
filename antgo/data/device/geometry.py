"""The geometric transforms of a batch as one per-sample affine map and one sampling pass.

Each standard geometric transform (Rotation, ResizeS, RandomScaleCrop, RandomFlipImage) draws its random
parameters exactly as on the CPU and becomes a 3x3 matrix from its input canvas to its output canvas (pixel
centres at integers, OpenCV's conventions). The product maps every output pixel back into the source image,
so image and mask are sampled once: the image bilinearly (``grid_sample``), the mask by nearest index. Where
the CPU chain would have filled (outside the source, a rotated-in corner, RandomScaleCrop's padding), the
fill values are used. Masks follow ``cv2.resize``'s nearest rule (``src = floor(dst * scale)``) in resize
steps, so a resize-only chain gives the CPU's mask exactly; images differ only by interpolation rounding.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from antgo.data.transforms.crop import RandomScaleCrop
from antgo.data.transforms.geometric import RandomFlipImage, ResizeS, Rotation

_NEAREST_EPS = 1e-3  # floor(x) as round(x - 0.5 + eps): cv2.resize's nearest rule as a sampling position


@dataclass
class SampleWarp:
    """One sample's chain: output -> source maps for image and mask, canvases to check, label swaps."""
    canvas: tuple[int, int]  # current (w, h)
    image: np.ndarray = field(default_factory=lambda: np.eye(3))  # source -> current canvas
    mask: np.ndarray = field(default_factory=lambda: np.eye(3))
    checks: list[tuple[np.ndarray, tuple[int, int]]] = field(default_factory=list)  # (source -> canvas, (w, h))
    swap_labels: list[np.ndarray] = field(default_factory=list)  # one label table per flip that happened

    def then(self, image: np.ndarray, mask: np.ndarray | None = None, canvas: tuple[int, int] | None = None) -> None:
        self.image = image @ self.image
        self.mask = (image if mask is None else mask) @ self.mask
        self.canvas = canvas or self.canvas

    def check_here(self) -> None:
        """Later steps may look outside the current canvas: there the CPU chain has fill values."""
        self.checks.append((self.image.copy(), self.canvas))


def _affine(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def _resize(warp: SampleWarp, w: int, h: int) -> None:
    W, H = warp.canvas
    sx, sy = w / W, h / H
    image = _affine(np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]]))
    mask = _affine(np.array([[sx, 0, (0.5 - _NEAREST_EPS) * sx], [0, sy, (0.5 - _NEAREST_EPS) * sy]]))
    warp.then(image, mask, (w, h))


def _rotation(t: Rotation, warp: SampleWarp, first: bool) -> None:
    if np.random.rand() >= t.prob:
        return
    angle = float(np.random.uniform(*t.angle_range))
    W, H = warp.canvas
    if not first:
        warp.check_here()
    warp.then(_affine(cv2.getRotationMatrix2D(((W - 1) / 2.0, (H - 1) / 2.0), angle, 1.0)))


def _scale_crop(t: RandomScaleCrop, warp: SampleWarp) -> None:
    W, H = warp.canvas
    scale = float(np.random.uniform(*t.scale_range))
    nw, nh = max(int(round(W * scale)), 1), max(int(round(H * scale)), 1)
    _resize(warp, nw, nh)
    warp.check_here()  # RandomScaleCrop pads beyond the rescaled image
    PW, PH = max(nw, t.w), max(nh, t.h)
    y0, x0 = t._window(PH, PW)
    warp.then(_affine(np.array([[1.0, 0, -x0], [0, 1.0, -y0]])), canvas=(t.w, t.h))


def _flip(t: RandomFlipImage, warp: SampleWarp) -> None:
    if not np.random.rand() < t.prob:
        return
    W, _ = warp.canvas
    warp.then(_affine(np.array([[-1.0, 0, W - 1], [0, 1.0, 0]])))
    if t.swap_labels:
        warp.swap_labels.append(label_lut(t.swap_labels))


def draw_warp(transforms: Sequence[object], width: int, height: int) -> SampleWarp:
    """Draw one sample's geometric parameters (``np.random``, in pipeline order) and compose them."""
    warp = SampleWarp(canvas=(width, height))
    for i, t in enumerate(transforms):
        if isinstance(t, Rotation):
            _rotation(t, warp, first=(i == 0))
        elif isinstance(t, ResizeS):
            _resize(warp, t.w, t.h)
        elif isinstance(t, RandomScaleCrop):
            _scale_crop(t, warp)
        elif isinstance(t, RandomFlipImage):
            _flip(t, warp)
        else:
            raise TypeError(f"draw_warp: {type(t).__name__} is not a geometric transform")
    return warp


def _output_coords(inverse: torch.Tensor, w: int, h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) source coordinates ``(B, h, w)`` of every output pixel under per-sample ``(B, 3, 3)`` inverses."""
    ys = torch.arange(h, dtype=torch.float32, device=inverse.device).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32, device=inverse.device).view(1, 1, w)
    a = inverse[:, :2].float()
    x = a[:, 0, 0, None, None] * xs + a[:, 0, 1, None, None] * ys + a[:, 0, 2, None, None]
    y = a[:, 1, 0, None, None] * xs + a[:, 1, 1, None, None] * ys + a[:, 1, 2, None, None]
    return x, y


def _inside(x: torch.Tensor, y: torch.Tensor, wh: torch.Tensor) -> torch.Tensor:
    w, h = wh[:, 0, None, None], wh[:, 1, None, None]
    return (x >= -0.5) & (y >= -0.5) & (x < w - 0.5) & (y < h - 0.5)


def _inverses(mats: list[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.linalg.inv(np.stack(mats))).to(device)


def _extra_fill(warps: Sequence[SampleWarp], device: torch.device, w: int, h: int) -> torch.Tensor | None:
    """Output pixels that an intermediate canvas of the CPU chain would have filled ``(B, h, w)``."""
    if not any(wp.checks for wp in warps):
        return None
    outside = torch.zeros((len(warps), h, w), dtype=torch.bool, device=device)
    for k in range(max(len(wp.checks) for wp in warps)):
        rows = [i for i, wp in enumerate(warps) if len(wp.checks) > k]
        # output -> canvas_k = (source -> canvas_k) @ (output -> source)
        mats = [warps[i].checks[k][0] @ np.linalg.inv(warps[i].image) for i in rows]
        x, y = _output_coords(torch.from_numpy(np.stack(mats)).to(device), w, h)
        wh = torch.tensor([warps[i].checks[k][1] for i in rows], dtype=torch.float32, device=device)
        outside[rows] |= ~_inside(x, y, wh)
    return outside


def warp_batch(image: torch.Tensor, segments: torch.Tensor | None, sizes: torch.Tensor,
               warps: Sequence[SampleWarp], fill: Sequence[float], seg_fill: int
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample the padded batch ``image`` uint8 ``(B, H, W, C)`` (valid ``sizes`` ``(B, 2)`` = h, w) and
    ``segments`` ``(B, H, W)`` through ``warps``; returns float ``(B, C, h, w)`` (not rounded) and uint8 masks."""
    B, H, W, C = image.shape
    w, h = warps[0].canvas
    if any(wp.canvas != (w, h) for wp in warps):
        raise ValueError(f"device augmentation: samples end at different sizes {sorted({wp.canvas for wp in warps})}; "
                         f"the pipeline needs a fixed-size step (ResizeS, RandomScaleCrop)")
    device = image.device
    src_wh = sizes.flip(1).to(device=device, dtype=torch.float32)  # (w, h)
    fill_t = torch.tensor(list(fill)[:C] + [0.0] * max(C - len(fill), 0), device=device).view(1, C, 1, 1)
    extra = _extra_fill(warps, device, w, h)
    x, y = _output_coords(_inverses([wp.image for wp in warps], device), w, h)
    src = image.permute(0, 3, 1, 2).float()
    rows = torch.arange(H, device=device).view(1, 1, H, 1)
    cols = torch.arange(W, device=device).view(1, 1, 1, W)
    valid = (rows < sizes[:, 0].to(device).view(B, 1, 1, 1)) & (cols < sizes[:, 1].to(device).view(B, 1, 1, 1))
    src = torch.where(valid, src - fill_t, torch.zeros((), device=device))  # 0 = fill after the shift
    grid = torch.stack([(2 * x + 1) / W - 1, (2 * y + 1) / H - 1], -1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill_t
    if extra is not None:
        out = torch.where(extra.unsqueeze(1), fill_t.expand_as(out), out)
    if segments is None:
        return out, None
    mx, my = _output_coords(_inverses([wp.mask for wp in warps], device), w, h)
    ix, iy = torch.floor(mx + 0.5).long(), torch.floor(my + 0.5).long()  # cv2's nearest: round half up
    inside = (ix >= 0) & (iy >= 0) & (ix < src_wh[:, 0, None, None]) & (iy < src_wh[:, 1, None, None])
    flat = (iy.clamp(0, H - 1) * W + ix.clamp(0, W - 1)).view(B, -1)
    seg = torch.gather(segments.reshape(B, -1), 1, flat).view(B, h, w)
    seg = torch.where(inside, seg, torch.full_like(seg, seg_fill))
    if extra is not None:
        seg = torch.where(extra, torch.full_like(seg, seg_fill), seg)
    return out, _swap_labels(seg, warps)


def label_lut(pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """RandomFlipImage._remap_labels as a 256-entry table (pairs assigned in order, from the original labels)."""
    lut = np.arange(256, dtype=np.int64)
    for a, b in pairs:
        lut[a], lut[b] = b, a
    return lut


def _swap_labels(seg: torch.Tensor, warps: Sequence[SampleWarp]) -> torch.Tensor:
    if not any(wp.swap_labels for wp in warps):
        return seg
    luts = []
    for wp in warps:
        lut = np.arange(256, dtype=np.int64)
        for table in wp.swap_labels:  # one table per flip that happened, applied in order
            lut = table[lut]
        luts.append(lut)
    table = torch.from_numpy(np.stack(luts)).to(seg.device)
    return torch.gather(table, 1, seg.reshape(len(warps), -1).long()).view_as(seg).to(seg.dtype)
