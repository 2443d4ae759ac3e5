"""The geometric transforms of a batch: per-sample affine maps, sampled the way OpenCV samples them.

Each standard geometric transform (Rotation, ResizeS, RandomScaleCrop, RandomFlipImage) draws its random
parameters exactly as on the CPU and becomes per-sample 3x3 matrices (pixel centres at integers, OpenCV's
conventions). Images: one bilinear ``grid_sample`` per resampling step (a rotation, a resize; crops and flips
are integer maps folded into it), rounded to uint8 values in between as the CPU chain does, so results
differ from the CPU only by interpolation rounding (one level). A single composed pass would blur less than
the CPU's two bilinear passes and differ by several levels at edges. Masks: one gather through the whole
chain with each step's own nearest rule on integer pixels (``cv2.warpAffine`` rounds, ``cv2.resize`` floors),
which reproduces the CPU mask. Where the CPU chain fills (outside the image, rotated-in corners,
RandomScaleCrop's padding), the fill values are used.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from antgo.data.device.transfer import to_device
from antgo.data.transforms.crop import RandomScaleCrop
from antgo.data.transforms.geometric import RandomFlipImage, ResizeS, Rotation


@dataclass
class Step:
    """One resampling step of one sample: ``kind`` (warp, resize, shift, flip), its source -> destination
    matrix, its input canvas ``(w, h)`` and, for a shift, the content ``(w, h)`` beyond which lies padding."""
    kind: str
    matrix: np.ndarray
    in_wh: tuple[int, int]
    out_wh: tuple[int, int]
    content_wh: tuple[int, int] | None = None


@dataclass
class SampleWarp:
    """One sample's geometric chain (the same kinds of steps for every sample of a batch) and label swaps."""
    canvas: tuple[int, int]  # current (w, h)
    steps: list[Step] = field(default_factory=list)
    swap_labels: list[np.ndarray] = field(default_factory=list)  # one label table per flip that happened

    def add(self, kind: str, matrix: np.ndarray, out_wh: tuple[int, int] | None = None,
            content_wh: tuple[int, int] | None = None) -> None:
        self.steps.append(Step(kind, matrix, self.canvas, out_wh or self.canvas, content_wh))
        self.canvas = out_wh or self.canvas


def _affine(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def _resize(warp: SampleWarp, w: int, h: int) -> None:
    W, H = warp.canvas
    sx, sy = w / W, h / H
    warp.add("resize", _affine(np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])), (w, h))


def _rotation(t: Rotation, warp: SampleWarp) -> None:
    W, H = warp.canvas
    angle = float(np.random.uniform(*t.angle_range)) if np.random.rand() < t.prob else None
    m = np.eye(3) if angle is None else _affine(cv2.getRotationMatrix2D(((W - 1) / 2.0, (H - 1) / 2.0), angle, 1.0))
    warp.add("warp", m)  # a skipped rotation stays in the chain as the identity: every sample has the same steps


def _scale_crop(t: RandomScaleCrop, warp: SampleWarp) -> None:
    W, H = warp.canvas
    scale = float(np.random.uniform(*t.scale_range))
    nw, nh = max(int(round(W * scale)), 1), max(int(round(H * scale)), 1)
    _resize(warp, nw, nh)
    y0, x0 = t._window(max(nh, t.h), max(nw, t.w))
    warp.add("shift", _affine(np.array([[1.0, 0, -x0], [0, 1.0, -y0]])), (t.w, t.h), content_wh=(nw, nh))


def _flip(t: RandomFlipImage, warp: SampleWarp) -> None:
    W, _ = warp.canvas
    flipped = bool(np.random.rand() < t.prob)
    warp.add("flip", _affine(np.array([[-1.0, 0, W - 1], [0, 1.0, 0]])) if flipped else np.eye(3))
    if flipped and t.swap_labels:
        warp.swap_labels.append(label_lut(t.swap_labels))


def draw_warp(transforms: Sequence[object], width: int, height: int, warp: SampleWarp | None = None) -> SampleWarp:
    """Draw one sample's geometric parameters (``np.random``, in pipeline order) and append them to ``warp``."""
    warp = warp or SampleWarp(canvas=(width, height))
    for t in transforms:
        if isinstance(t, Rotation):
            _rotation(t, warp)
        elif isinstance(t, ResizeS):
            _resize(warp, t.w, t.h)
        elif isinstance(t, RandomScaleCrop):
            _scale_crop(t, warp)
        elif isinstance(t, RandomFlipImage):
            _flip(t, warp)
        else:
            raise TypeError(f"draw_warp: {type(t).__name__} is not a geometric transform")
    return warp


class _Batched:
    """Step ``j`` of every sample as tensors: inverse matrices ``(B, 2, 3)``, input and content sizes."""

    def __init__(self, warps: Sequence[SampleWarp], j: int, device: torch.device) -> None:
        steps = [wp.steps[j] for wp in warps]
        self.kind = steps[0].kind
        inverse = np.linalg.inv(np.stack([s.matrix for s in steps]))[:, :2]
        # host facts, so that no decision waits for the device: x' depends on x only (resize, shift, flip, a
        # skipped rotation), and which samples this step leaves where they are
        self.separable = not np.any(inverse[:, 0, 1]) and not np.any(inverse[:, 1, 0])
        self.identity = np.all(inverse == np.eye(3)[:2], axis=(1, 2))
        self.inverse = to_device(torch.from_numpy(inverse).float(), device)
        self.in_wh = to_device(torch.tensor([s.in_wh for s in steps], dtype=torch.float32), device).view(-1, 2, 1, 1)
        self.out_hw = [(s.out_wh[1], s.out_wh[0]) for s in steps]
        content = [s.content_wh or s.in_wh for s in steps]
        self.content_wh = to_device(torch.tensor(content, dtype=torch.float32), device).view(-1, 2, 1, 1)

    def select(self, index: np.ndarray, device_index: torch.Tensor) -> "_Batched":
        """The same step for the samples ``index`` only (``device_index``: the same indices on the device)."""
        part = object.__new__(_Batched)
        part.kind, part.separable, part.identity = self.kind, self.separable, self.identity[index]
        part.inverse, part.in_wh, part.content_wh = (t.index_select(0, device_index)
                                                     for t in (self.inverse, self.in_wh, self.content_wh))
        part.out_hw = [self.out_hw[i] for i in index]
        return part

    def apply(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Source coordinates of ``(x, y)``; x ``(B|1, 1|h, w)`` and y ``(B|1, h, 1)`` stay that small while
        the steps are separable (the same arithmetic: the missing term is an exact ``+ 0``)."""
        a = self.inverse
        if self.separable:
            return (a[:, 0, 0, None, None] * x + a[:, 0, 2, None, None],
                    a[:, 1, 1, None, None] * y + a[:, 1, 2, None, None])
        return (a[:, 0, 0, None, None] * x + a[:, 0, 1, None, None] * y + a[:, 0, 2, None, None],
                a[:, 1, 0, None, None] * x + a[:, 1, 1, None, None] * y + a[:, 1, 2, None, None])


def _inside(x: torch.Tensor, y: torch.Tensor, wh: torch.Tensor) -> torch.Tensor:
    return (x >= -0.5) & (y >= -0.5) & (x < wh[:, 0] - 0.5) & (y < wh[:, 1] - 0.5)


def _image_coords(steps: Sequence[_Batched], w: int, h: int, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Input coordinates of a stage's output pixels and where the CPU chain has fill values there.

    A stage is one resampling step (warp or resize) plus the integer steps after it (shift, flip).
    Walking back from the output: a resize clamps to its input (``cv2.resize`` replicates the edge);
    RandomScaleCrop's padding is fill; outside the input of a warp is left to the sampler, which blends
    with the fill value as ``cv2.warpAffine`` does."""
    x = torch.arange(w, dtype=torch.float32, device=device).view(1, 1, w)
    y = torch.arange(h, dtype=torch.float32, device=device).view(1, h, 1)
    fill = None
    for s in reversed(steps):
        x, y = s.apply(x, y)
        if s.kind == "resize":
            x = torch.minimum(x.clamp(min=0), s.in_wh[:, 0] - 1)
            y = torch.minimum(y.clamp(min=0), s.in_wh[:, 1] - 1)
        elif s.kind == "shift":
            outside = ~_inside(x, y, s.content_wh)
            fill = outside if fill is None else fill | outside
    return x, y, fill


def _stages(steps: Sequence[_Batched]) -> list[list[_Batched]]:
    """Each warp or resize starts a stage; shifts and flips (integer maps) join the stage before them."""
    stages: list[list[_Batched]] = []
    for s in steps:
        if s.kind in ("warp", "resize") or not stages:
            stages.append([s])
        else:
            stages[-1].append(s)
    return stages


def _sample_stage(src: torch.Tensor, sizes: Sequence[tuple[int, int]], stage: Sequence[_Batched],
                  fill: Sequence[float], canvas: tuple[int, int] | None = None
                  ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """One bilinear pass of ``src`` ``(B, C, H, W)``, zero beyond each sample's ``sizes`` (h, w), through
    ``stage``: the output, zero beyond its own sizes (as the next stage expects), and those sizes.

    ``canvas``: the output's ``(h, w)`` (default: the largest output size). ``src`` may be overwritten. Every
    decision is taken on host values, so nothing waits for the device."""
    B, C, H, W = src.shape
    out_hw = list(stage[-1].out_hw)
    oh, ow = canvas or (max(h for h, _ in out_hw), max(w for _, w in out_hw))
    moving = _moving(stage, (oh, ow) == (H, W))
    if moving is not None:  # samples this warp leaves where they are keep their (integer) pixels
        if len(moving):
            index = to_device(torch.from_numpy(moving), src.device)
            part, _ = _sample_stage(src.index_select(0, index), [sizes[i] for i in moving],
                                    [s.select(moving, index) for s in stage], fill, (oh, ow))
            src.index_copy_(0, index, part)
        return src, out_hw
    x, y, extra = _image_coords(stage, ow, oh, src.device)
    fill_t = None
    if any(fill):
        fill_t = to_device(torch.tensor(list(fill)[:C] + [0.0] * max(C - len(fill), 0)), src.device).view(1, C, 1, 1)
        src = src - fill_t  # sample (image - fill) with zero padding: outside reads as the fill value
        if any(tuple(hw) != (H, W) for hw in sizes):  # the padding is outside the image too
            src = src.masked_fill_(_padding(sizes, H, W, src.device), 0.0)
    grid = torch.empty((B, oh, ow, 2), dtype=torch.float32, device=src.device)
    grid[..., 0] = (2 * x + 1) / W - 1  # x and y are as small as the stage allows: broadcast here
    grid[..., 1] = (2 * y + 1) / H - 1
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if extra is not None:
        out = out.masked_fill_(extra.unsqueeze(1), 0.0)
    if fill_t is not None:
        out = out + fill_t
    out = out.round_().clamp_(0, 255)  # each CPU transform hands on uint8
    if any(tuple(hw) != (oh, ow) for hw in out_hw):
        out = out.masked_fill_(_padding(out_hw, oh, ow, out.device), 0.0)
    return out, out_hw


def _padding(sizes: Sequence[tuple[int, int]], H: int, W: int, device: torch.device) -> torch.Tensor:
    """``(B, 1, H, W)`` True beyond each sample's (h, w)."""
    hw = to_device(torch.tensor(list(sizes), dtype=torch.int64), device)
    rows = torch.arange(H, device=device).view(1, 1, H, 1)
    cols = torch.arange(W, device=device).view(1, 1, 1, W)
    return (rows >= hw[:, 0].view(-1, 1, 1, 1)) | (cols >= hw[:, 1].view(-1, 1, 1, 1))


def _moving(stage: Sequence[_Batched], same_canvas: bool) -> np.ndarray | None:
    """Indices of the samples a warp stage moves, when some stay in place (a skipped rotation); else None.

    A sample whose every step is the identity would be resampled at its own pixel centres, which gives its
    pixels back after rounding; a stage with a shift (padding to fill) or another canvas is sampled whole."""
    if stage[0].kind != "warp" or not same_canvas or any(s.kind == "shift" for s in stage):
        return None
    still = np.logical_and.reduce([s.identity for s in stage])
    return np.flatnonzero(~still) if still.any() else None


def _mask_index(steps: Sequence[_Batched], w: int, h: int, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source pixel of every output mask pixel, following each CPU step's nearest rule on integer pixels:
    ``cv2.warpAffine`` rounds, ``cv2.resize`` takes ``floor(dst * in / out)``; and where the CPU fills."""
    x = torch.arange(w, dtype=torch.float64, device=device).view(1, 1, w)
    y = torch.arange(h, dtype=torch.float64, device=device).view(1, h, 1)
    fill = torch.zeros((steps[0].inverse.shape[0], h, w), dtype=torch.bool, device=device)
    out_w, out_h = float(w), float(h)
    for j in range(len(steps) - 1, -1, -1):
        s = steps[j]
        in_wh = s.in_wh.double()
        if s.kind == "resize":  # cv2: floor(x * (1 / fx)), fx = out / in
            x = torch.minimum(torch.floor(x * (1.0 / (out_w / in_wh[:, 0]))), in_wh[:, 0] - 1)
            y = torch.minimum(torch.floor(y * (1.0 / (out_h / in_wh[:, 1]))), in_wh[:, 1] - 1)
        else:
            x, y = s.apply(x, y)
            x, y = torch.floor(x.double() + 0.5), torch.floor(y.double() + 0.5)  # round half up
            bounds = s.content_wh.double() if s.kind == "shift" else in_wh
            fill |= (x < 0) | (y < 0) | (x >= bounds[:, 0]) | (y >= bounds[:, 1])
        out_w, out_h = in_wh[:, 0], in_wh[:, 1]
    return x.long(), y.long(), fill


def warp_batch(image: torch.Tensor, segments: torch.Tensor | None, sizes: Sequence[tuple[int, int]],
               warps: Sequence[SampleWarp], fill: Sequence[float], seg_fill: int
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample the padded batch ``image`` uint8 ``(B, H, W, C)`` (valid ``sizes``: (h, w) per sample, zero
    beyond them as ``pad_collate`` pads) and ``segments`` ``(B, H, W)`` through ``warps``; returns
    integer-valued float ``(B, C, h, w)`` and uint8 masks."""
    B, H, W, C = image.shape
    w, h = warps[0].canvas
    if any(wp.canvas != (w, h) for wp in warps):
        raise ValueError(f"device augmentation: samples end at different sizes {sorted({wp.canvas for wp in warps})}; "
                         f"the pipeline needs a fixed-size step (ResizeS, RandomScaleCrop)")
    device = image.device
    steps = [_Batched(warps, j, device) for j in range(len(warps[0].steps))]
    out, out_sizes = image.permute(0, 3, 1, 2).float(), [tuple(hw) for hw in sizes]
    for stage in _stages(steps):
        out, out_sizes = _sample_stage(out, out_sizes, stage, fill)
    if segments is None:
        return out, None
    ix, iy, outside = _mask_index(steps, w, h, device)
    flat = (iy.clamp(0, H - 1) * W + ix.clamp(0, W - 1)).expand(B, h, w).reshape(B, -1)
    seg = torch.gather(segments.reshape(B, -1), 1, flat).view(B, h, w)
    seg = torch.where(outside, torch.full_like(seg, seg_fill), seg)
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
    table = to_device(torch.from_numpy(np.stack(luts)), seg.device)
    return torch.gather(table, 1, seg.reshape(len(warps), -1).long()).view_as(seg).to(seg.dtype)
