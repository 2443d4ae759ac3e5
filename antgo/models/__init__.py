"""Models: ``BaseModule``, ``build_model`` and the built-in backbones, heads, segmentors, classifiers, losses.

Importing this package registers every built-in class in ``MODELS``.
"""
from antgo.models import backbones, classifiers, detectors, heads, pose, segmentors  # noqa: F401  (registration)
from antgo.models.backbones import DDRKetNetF, DDRNet23Slim, SimpleConvNet
from antgo.models.base import BaseModule
from antgo.models.builder import build_model
from antgo.models.classifiers import ImageClassifier
from antgo.models.detectors import CenterNet
from antgo.models.heads import CenterNetHead, DDRHead, HeatmapHead, LinearClsHead, SimpleHead
from antgo.models.losses import CrossEntropyLoss
from antgo.models.pose import HeatmapPose
from antgo.models.segmentors import EncoderDecoder

__all__ = [
    "BaseModule", "build_model", "CrossEntropyLoss", "EncoderDecoder", "ImageClassifier",
    "DDRKetNetF", "DDRNet23Slim", "SimpleConvNet", "SimpleHead", "DDRHead", "LinearClsHead",
    "CenterNet", "CenterNetHead", "HeatmapPose", "HeatmapHead",
]
