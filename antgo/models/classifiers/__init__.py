"""Image classification models."""
from antgo.models.classifiers.image_classifier import ImageClassifier

__all__ = ["ImageClassifier"]
