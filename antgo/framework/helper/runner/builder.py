"""``from antgo.framework.helper.runner.builder import *`` (the document's measure sample) gives MEASURES."""
from antgo.registry import HOOKS, MEASURES, OPTIMIZERS

__all__ = ["MEASURES", "HOOKS", "OPTIMIZERS"]
