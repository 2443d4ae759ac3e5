"""``from antgo.framework.helper.exporter import Exporter``."""
from antgo.engine.exporter import Exporter

__all__ = ["Exporter"]
