"""Image classification models."""
