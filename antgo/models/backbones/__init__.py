"""Backbones: each returns a list of feature maps."""
from antgo.models.backbones.ddrketnet import DDRKetNetF, InverseBottleneck

__all__ = ["DDRKetNetF", "InverseBottleneck"]
