"""Metrics registered in ``METRICS`` (= ``MEASURES``)."""
from antgo.metrics.base import BaseMetric
from antgo.metrics.builder import build_metrics
from antgo.metrics.classification import Accuracy
from antgo.metrics.detection import DetMAP
from antgo.metrics.keypoints import PCK, KeypointAP
from antgo.metrics.segmentation import SegMIOU

__all__ = ["BaseMetric", "SegMIOU", "Accuracy", "DetMAP", "KeypointAP", "PCK", "build_metrics"]
