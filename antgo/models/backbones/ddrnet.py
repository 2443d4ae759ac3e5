"""``DDRNet23Slim``: Deep Dual-resolution Network, 23-layer slim variant (Hong et al., 2021).

Stem to 1/8, then a high-resolution branch (1/8, 64 ch) and a low-resolution branch (1/16 → 1/64) exchanging
information by bilateral fusion, and a DAPPM context module on the 1/64 features.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from antgo.models.base import BaseModule
from antgo.registry import BACKBONES


class BasicBlock(nn.Module):
    """ResNet basic block; the last block of a stage skips its final ReLU (fusion adds before activating)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, no_relu: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.no_relu = no_relu
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + identity
        return out if self.no_relu else self.relu(out)


class Bottleneck(nn.Module):
    """ResNet bottleneck with expansion 2 (DDRNet's last stage)."""

    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1, no_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.no_relu = no_relu
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + identity
        return out if self.no_relu else self.relu(out)


def _shortcut(inplanes: int, outplanes: int, stride: int) -> nn.Module | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes))


def _make_layer(block: type, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    layers = []
    for i in range(blocks):
        layers.append(block(inplanes, planes, stride if i == 0 else 1, no_relu=i == blocks - 1))
        inplanes = planes * block.expansion
    return nn.Sequential(*layers)


def _bn_relu_conv(inplanes: int, outplanes: int, kernel_size: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(inplanes), nn.ReLU(inplace=True),
            nn.Conv2d(inplanes, outplanes, kernel_size, padding=kernel_size // 2, bias=False)]


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling Module.

    Pools with fixed AvgPool kernels (5/2, 9/4, 17/8) plus a global mean instead of adaptive pooling, so
    the TorchScript ONNX exporter handles any input size; each scale is refined hierarchically.
    """

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int) -> None:
        super().__init__()
        self.pools = nn.ModuleList([nn.AvgPool2d(k, s, s) for k, s in ((5, 2), (9, 4), (17, 8))])
        self.scale0 = nn.Sequential(*_bn_relu_conv(inplanes, branch_planes, 1))
        self.scales = nn.ModuleList([nn.Sequential(*_bn_relu_conv(inplanes, branch_planes, 1)) for _ in range(4)])
        self.process = nn.ModuleList([nn.Sequential(*_bn_relu_conv(branch_planes, branch_planes, 3))
                                      for _ in range(4)])
        self.compression = nn.Sequential(*_bn_relu_conv(branch_planes * 5, outplanes, 1))
        self.shortcut = nn.Sequential(*_bn_relu_conv(inplanes, outplanes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pooled = [pool(x) for pool in self.pools] + [x.mean(dim=(2, 3), keepdim=True)]
        outs = [self.scale0(x)]
        for scale, process, p in zip(self.scales, self.process, pooled):
            up = F.interpolate(scale(p), size=size, mode="bilinear", align_corners=False)
            outs.append(process(up + outs[-1]))
        return self.compression(torch.cat(outs, dim=1)) + self.shortcut(x)


@BACKBONES.register_module()
class DDRNet23Slim(BaseModule):
    """DDRNet-23-slim backbone.

    Returns ``[x3_high (B, 2*planes, H/8, W/8), fused (B, 4*planes, H/8, W/8)]``: the high-resolution
    feature after stage 3 (for the auxiliary head) and the final fusion of the high-resolution branch with
    the upsampled DAPPM context (for the main head). With the defaults, 64 and 128 channels.
    """

    def __init__(self, in_channels: int = 3, planes: int = 32, spp_planes: int = 128,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        high = planes * 2
        self.out_channels = (high, planes * 4)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, planes, 3, 2, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, 2, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
        )
        self.relu = nn.ReLU(inplace=False)
        self.layer1 = _make_layer(BasicBlock, planes, planes, 2)                    # 1/4
        self.layer2 = _make_layer(BasicBlock, planes, planes * 2, 2, stride=2)      # 1/8
        self.layer3 = _make_layer(BasicBlock, planes * 2, planes * 4, 2, stride=2)  # 1/16
        self.layer4 = _make_layer(BasicBlock, planes * 4, planes * 8, 2, stride=2)  # 1/32
        self.layer5 = _make_layer(Bottleneck, planes * 8, planes * 8, 1, stride=2)  # 1/64
        self.layer3_ = _make_layer(BasicBlock, planes * 2, high, 2)
        self.layer4_ = _make_layer(BasicBlock, high, high, 2)
        self.layer5_ = _make_layer(Bottleneck, high, high, 1)
        self.compression3 = nn.Sequential(nn.Conv2d(planes * 4, high, 1, bias=False), nn.BatchNorm2d(high))
        self.compression4 = nn.Sequential(nn.Conv2d(planes * 8, high, 1, bias=False), nn.BatchNorm2d(high))
        self.down3 = nn.Sequential(nn.Conv2d(high, planes * 4, 3, 2, 1, bias=False), nn.BatchNorm2d(planes * 4))
        self.down4 = nn.Sequential(
            nn.Conv2d(high, planes * 4, 3, 2, 1, bias=False), nn.BatchNorm2d(planes * 4), nn.ReLU(inplace=True),
            nn.Conv2d(planes * 4, planes * 8, 3, 2, 1, bias=False), nn.BatchNorm2d(planes * 8),
        )
        self.spp = DAPPM(planes * 16, spp_planes, planes * 4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        relu = self.relu
        x = self.layer1(self.stem(x))
        x2 = self.layer2(relu(x))                       # 1/8: the branches split here
        size = x2.shape[2:]
        low = self.layer3(relu(x2))                     # 1/16
        high = self.layer3_(relu(x2))                   # 1/8
        # bilateral fusion: high → low by strided convs, low → high by 1x1 compression + upsample
        low_in = low + self.down3(relu(high))
        high = high + _up(self.compression3(relu(low)), size)
        x3_high = high
        low = self.layer4(relu(low_in))                 # 1/32
        high = self.layer4_(relu(high))
        low_in = low + self.down4(relu(high))
        high = high + _up(self.compression4(relu(low)), size)
        high = self.layer5_(relu(high))
        context = _up(self.spp(self.layer5(relu(low_in))), size)
        return [x3_high, high + context]


def _up(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
