"""``from antgo.dataflow.dataset.dataset import Dataset``."""
from antgo.data.dataset import Dataset

__all__ = ["Dataset"]
