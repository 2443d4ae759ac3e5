"""Decode and classification heads."""
from antgo.models.heads.center_head import CenterNetHead
from antgo.models.heads.ddr_head import DDRHead
from antgo.models.heads.heatmap_head import HeatmapHead
from antgo.models.heads.linear_cls_head import LinearClsHead
from antgo.models.heads.simple_head import SimpleHead

__all__ = ["SimpleHead", "DDRHead", "LinearClsHead", "CenterNetHead", "HeatmapHead"]
