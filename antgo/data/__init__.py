"""Data layer: datasets, the Reader (pipeline + inputs_def), collate and loader builders.

Importing ``antgo.data`` registers the built-in transforms and datasets.
"""
from antgo.data.dataset import Dataset
from antgo.data.reader import Reader, register
from antgo.data.collate import collate
from antgo.data.builder import build_dataloader, build_dataset
from antgo.data import transforms  # noqa: F401  (registers TRANSFORMS)
from antgo.data import datasets  # noqa: F401  (registers DATASETS)

__all__ = ["Dataset", "Reader", "register", "collate", "build_dataset", "build_dataloader", "transforms", "datasets"]
