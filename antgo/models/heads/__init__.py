"""Decode and classification heads."""
from antgo.models.heads.simple_head import SimpleHead

__all__ = ["SimpleHead"]
