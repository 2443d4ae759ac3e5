"""Legacy path of the data builders."""
from antgo.data.builder import build_dataloader, build_dataset
from antgo.registry import DATASETS, PIPELINES

__all__ = ["DATASETS", "PIPELINES", "build_dataset", "build_dataloader"]
