"""``from antgo.framework.helper import reader``; ``@reader.register`` registers a Dataset class."""
from antgo.data.reader import Reader, register

__all__ = ["Reader", "register"]
