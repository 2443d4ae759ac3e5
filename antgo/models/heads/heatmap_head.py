"""``HeatmapHead``: SimpleBaseline-style keypoint heat maps (deconvolutions + 1x1 conv) with sub-pixel decoding."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from antgo.models.base import BaseModule
from antgo.models.heads._dense import draw_gaussian
from antgo.registry import HEADS


def to_heatmap_coords(xy: torch.Tensor, stride: tuple[float, float]) -> torch.Tensor:
    """Pixel coordinates → heat-map cell coordinates (cell centres at (i + 0.5) · stride - 0.5)."""
    return torch.stack([(xy[..., 0] + 0.5) / stride[1] - 0.5, (xy[..., 1] + 0.5) / stride[0] - 0.5], dim=-1)


def decode_heatmaps(heatmaps: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(B, K, h, w) heat maps → (B, 1, K, 3) = x, y in input pixels and the peak value.

    The argmax cell is refined per axis by the vertex of a parabola through the log values of it and its two
    neighbours (exact for a Gaussian peak), clamped to ±0.5 cell; a peak on the border is not refined.
    """
    heatmaps = heatmaps.float()
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, -1)
    score, index = flat.max(dim=2)
    ys, xs = index // w, index % w
    logs = torch.log(heatmaps.clamp(min=1e-10))
    padded = F.pad(logs, (1, 1, 1, 1), mode="replicate").reshape(b, k, -1)
    pw = w + 2

    def at(dy: int, dx: int) -> torch.Tensor:
        return padded.gather(2, ((ys + 1 + dy) * pw + (xs + 1 + dx)).unsqueeze(2)).squeeze(2)

    centre = at(0, 0)
    shifts = []
    inside = ((xs > 0) & (xs < w - 1), (ys > 0) & (ys < h - 1))  # a border peak has no neighbour to fit
    for (lo, hi), ok in zip(((at(0, -1), at(0, 1)), (at(-1, 0), at(1, 0))), inside):
        curvature = lo - 2 * centre + hi
        # only a real maximum (negative curvature) is refined; flat neighbourhoods stay at the cell
        refine = ok & (curvature < -1e-6)
        delta = torch.where(refine, 0.5 * (lo - hi) / curvature.clamp(max=-1e-6), torch.zeros_like(centre))
        shifts.append(delta.clamp(-0.5, 0.5))
    sy, sx = image_size[0] / h, image_size[1] / w
    x = (xs.float() + shifts[0] + 0.5) * sx - 0.5
    y = (ys.float() + shifts[1] + 0.5) * sy - 0.5
    return torch.stack([x, y, score], dim=2).unsqueeze(1)


@HEADS.register_module()
class HeatmapHead(BaseModule):
    """Last feature map → ``num_deconv`` × (ConvTranspose 4x4 stride 2 → BN → ReLU) → Conv1x1 to ``num_joints``.

    ``loss``: MSE against Gaussian targets (``sigma`` in heat-map cells) weighted by keypoint visibility
    (``loss_keypoint``). Only one instance per image (the top-down convention: crop per object upstream).
    """

    def __init__(self, in_channels: int, num_joints: int, channels: int = 64, num_deconv: int = 1,
                 sigma: float = 1.5, loss_weight: float = 1000.0, in_index: int = -1,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        layers: list[nn.Module] = []
        prev = in_channels
        for _ in range(num_deconv):
            layers += [nn.ConvTranspose2d(prev, channels, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            prev = channels
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(prev, num_joints, 1)
        self.num_joints = int(num_joints)
        self.sigma = float(sigma)
        self.loss_weight = float(loss_weight)
        self.in_index = in_index

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[self.in_index]
        return self.final(self.deconv(x))

    def targets(self, shape: tuple[int, ...], image_size: tuple[int, int], joints: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian heat maps (B, K, h, w) and visibility weights (B, K) from per-sample (N, K, 3) joints."""
        b, k, h, w = shape
        stride = (image_size[0] / h, image_size[1] / w)
        heat, weight = torch.zeros(shape), torch.zeros(b, k)
        for i, joint in enumerate(joints):
            joint = joint.detach().float().cpu().reshape(-1, k, 3)
            cells = to_heatmap_coords(joint[..., :2], stride)
            for inst in range(joint.shape[0]):
                for j in range(k):
                    if joint[inst, j, 2] > 0:
                        draw_gaussian(heat[i, j], float(cells[inst, j, 0]), float(cells[inst, j, 1]), self.sigma)
                        weight[i, j] = 1.0
        return heat, weight

    def loss(self, heatmaps: torch.Tensor, image_size: tuple[int, int], joints: list[torch.Tensor]
             ) -> dict[str, torch.Tensor]:
        target, weight = (t.to(heatmaps.device) for t in self.targets(tuple(heatmaps.shape), image_size, joints))
        per_joint = ((heatmaps.float() - target) ** 2).mean(dim=(2, 3))
        return {"loss_keypoint": self.loss_weight * (per_joint * weight).sum() / weight.sum().clamp(min=1.0)}
