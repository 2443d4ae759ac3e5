"""``from antgo.framework.helper.trainer import Trainer``."""
from antgo.engine.trainer import Trainer

__all__ = ["Trainer"]
