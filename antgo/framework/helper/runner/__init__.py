"""``from antgo.framework.helper.runner import BaseModule``."""
from antgo.models.base import BaseModule

__all__ = ["BaseModule"]
