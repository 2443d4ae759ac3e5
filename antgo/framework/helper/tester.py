"""``from antgo.framework.helper.tester import Tester``."""
from antgo.engine.tester import Tester

__all__ = ["Tester"]
