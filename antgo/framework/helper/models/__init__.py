"""Legacy path of the model registries."""
from antgo.models import build_model
from antgo.registry import BACKBONES, HEADS, LOSSES, MODELS, NECKS

__all__ = ["MODELS", "HEADS", "BACKBONES", "NECKS", "LOSSES", "build_model"]
