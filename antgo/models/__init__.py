"""Models: ``BaseModule``, ``build_model`` and the built-in backbones, heads, segmentors, classifiers, losses.

Importing this package registers every built-in class in ``MODELS``.
"""
from antgo.models import backbones, classifiers, heads, segmentors  # noqa: F401  (registration)
from antgo.models.base import BaseModule
from antgo.models.builder import build_model
from antgo.models.losses import CrossEntropyLoss

__all__ = ["BaseModule", "build_model", "CrossEntropyLoss"]
