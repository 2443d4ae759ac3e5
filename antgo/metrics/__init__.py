"""Metrics registered in ``METRICS`` (= ``MEASURES``)."""
from antgo.metrics.base import BaseMetric
from antgo.metrics.builder import build_metrics
from antgo.metrics.classification import Accuracy
from antgo.metrics.segmentation import SegMIOU

__all__ = ["BaseMetric", "SegMIOU", "Accuracy", "build_metrics"]
