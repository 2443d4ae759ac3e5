"""2-D keypoint models for the ``{'pred_joints2d'}`` task form."""
from antgo.models.pose.heatmap_pose import HeatmapPose

__all__ = ["HeatmapPose"]
