"""``DDRKetNetF``: a light dual-resolution backbone (output stride 4) built from inverted bottlenecks."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from antgo.models.base import BaseModule
from antgo.models.layers import ConvBNAct
from antgo.registry import BACKBONES

# (planes, expansion, stride, blocks) of layer1..layer8; strides bring 1/2 → 1/4 → 1/8 → 1/16 → 1/32
ARCHITECTURES: dict[str, list[tuple[int, int, int, int]]] = {
    "resnet34": [
        (32, 3, 1, 1), (32, 3, 2, 1), (32, 6, 1, 1), (64, 6, 2, 2),
        (96, 4, 1, 2), (128, 4, 2, 1), (128, 6, 1, 4), (160, 6, 2, 4),
    ],
}


class InverseBottleneck(nn.Module):
    """MobileNetV2-style block: 1x1 expand → 3x3 depthwise (stride) → 1x1 project, residual, final ReLU.

    The hidden width is ``planes * expansion``; the expansion is an argument (not class state), so
    building one model never changes another.
    """

    def __init__(self, inplanes: int, planes: int, expansion: int, stride: int = 1) -> None:
        super().__init__()
        hidden = planes * expansion
        self.conv1 = nn.Conv2d(inplanes, hidden, 1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, planes, 1)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # size= (not scale_factor) keeps odd input sizes aligned with the high-resolution branch
    return F.interpolate(x, size=ref.shape[2:], mode="bilinear", align_corners=False)


def _check_size(x: torch.Tensor, multiple: int, name: str) -> None:
    """The low-resolution fusions add maps of stride 4 and 32; other sizes would not line up."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(f"{name}: input height and width must be multiples of {multiple}, got {h}x{w}; "
                         f"resize or pad the image (e.g. ResizeS target_dim=(256, 256))")


@BACKBONES.register_module()
class DDRKetNetF(BaseModule):
    """Dual-resolution backbone: a 32-channel branch at 1/4 fused with the 1/8, 1/16 and 1/32 features.

    Returns ``[tensor (B, 32, H/4, W/4)]``. About 2.66 M parameters.
    """

    def __init__(self, architecture: str = "resnet34", in_channels: int = 3, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if architecture not in ARCHITECTURES:
            raise KeyError(f"DDRKetNetF: unknown architecture '{architecture}'; available: {sorted(ARCHITECTURES)}")
        self.stem = ConvBNAct(in_channels, 32, kernel_size=5, stride=2)
        inplanes = 32
        stages = []
        for planes, expansion, stride, blocks in ARCHITECTURES[architecture]:
            layers = []
            for i in range(blocks):
                layers.append(InverseBottleneck(inplanes, planes, expansion, stride if i == 0 else 1))
                inplanes = planes
            stages.append(nn.Sequential(*layers))
        (self.layer1, self.layer2, self.layer3, self.layer4,
         self.layer5, self.layer6, self.layer7, self.layer8) = stages
        c8, c16, c32 = (ARCHITECTURES[architecture][i][0] for i in (4, 6, 7))
        # high-res → low-res projections: dilated 3x3 convs with strides 4 and 8 (sizes match the stages)
        self.down4_to_16 = ConvBNAct(32, c16, 3, stride=4, padding=3, dilation=4, act=False)
        self.down4_to_32 = ConvBNAct(32, c32, 3, stride=8, padding=3, dilation=6, act=False)
        self.compression8_to_4 = ConvBNAct(c8, 32, 1, act=False)
        self.compression16_to_4 = ConvBNAct(c16, 32, 1, act=False)
        self.compression32_to_4 = ConvBNAct(c32, 32, 1, act=False)
        self.high1, self.high2, self.high3, self.high4 = (ConvBNAct(32, 32, 3) for _ in range(4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _check_size(x, 32, type(self).__name__)
        x = self.layer1(self.stem(x))                       # 1/2
        x4 = self.layer3(self.layer2(x))                    # 1/4, 32
        hi = self.high1(x4)
        x8 = self.layer5(self.layer4(x4))                   # 1/8, 96
        hi = self.high2(hi) + _upsample_to(self.compression8_to_4(x8), hi)
        x16 = self.layer7(self.layer6(x8))                  # 1/16, 128
        x16_fused = F.relu(x16 + self.down4_to_16(hi))
        hi = self.high3(hi) + _upsample_to(self.compression16_to_4(x16), hi)
        x32 = F.relu(self.layer8(x16_fused) + self.down4_to_32(hi))  # 1/32, 160
        hi = self.high4(hi) + _upsample_to(self.compression32_to_4(x32), hi)
        return [hi]
