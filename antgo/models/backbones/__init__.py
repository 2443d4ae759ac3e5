"""Backbones: each returns a list of feature maps."""
from antgo.models.backbones.ddrketnet import DDRKetNetF, InverseBottleneck
from antgo.models.backbones.ddrnet import DAPPM, DDRNet23Slim
from antgo.models.backbones.simple_convnet import SimpleConvNet

__all__ = ["DDRKetNetF", "InverseBottleneck", "DDRNet23Slim", "DAPPM", "SimpleConvNet"]
