"""``antgo.dataflow.dataset``: the Dataset base class."""
from antgo.data.dataset import Dataset

__all__ = ["Dataset"]
