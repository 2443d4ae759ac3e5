"""``from antgo.framework.helper.dataset.builder import DATASETS, PIPELINES``."""
from antgo.data.builder import build_dataloader, build_dataset
from antgo.registry import DATASETS, PIPELINES

__all__ = ["DATASETS", "PIPELINES", "build_dataset", "build_dataloader"]
