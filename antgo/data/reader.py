"""``register`` (dataset classes into ``DATASETS``) and ``Reader`` (sample -> pipeline -> fields)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch.utils.data

from antgo.registry import DATASETS
from antgo.data.transforms.compose import Compose, reraise_with_context

logger = logging.getLogger(__name__)


def register(cls: type | None = None, *, name: str | None = None) -> Any:
    """Register a dataset class in ``DATASETS`` under its class name and return it unchanged.

    Usable as ``@reader.register`` or ``@reader.register(name='Other')``.
    """
    def _do(c: type) -> type:
        if not isinstance(c, type):
            raise TypeError(f"register expects a class, got {type(c).__name__}")
        return DATASETS.register_module(name=name, module=c)

    return _do if cls is None else _do(cls)


class MissingFieldError(KeyError):
    """An ``inputs_def`` field that the sample does not have after the pipeline."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class Reader(torch.utils.data.Dataset):
    """A torch Dataset over an antgo ``Dataset``: ``dataset.sample(i)`` -> pipeline -> ``inputs_def`` fields.

    ``pipeline``: a list of transform configs (built with ``TRANSFORMS``) or callables.
    ``inputs_def``: ``dict(fields=[...])`` (optional ``alias=[...]`` renames them in order); None keeps
    every key. Errors are raised with the dataset class, the index and the failing transform named.
    """

    def __init__(self, dataset: Any, pipeline: Sequence[Mapping[str, Any] | Callable] | None = None,
                 inputs_def: Mapping[str, Any] | None = None, key_path: str = "pipeline") -> None:
        if not hasattr(dataset, "sample"):
            raise TypeError(f"Reader needs an object with sample(id) and size, got {type(dataset).__name__}")
        self.dataset = dataset
        self.pipeline = Compose(pipeline, key_path=key_path)
        self.fields, self.alias = self._parse_inputs_def(inputs_def)

    @staticmethod
    def _parse_inputs_def(inputs_def: Mapping[str, Any] | None) -> tuple[list[str] | None, list[str] | None]:
        if inputs_def is None:
            return None, None
        if not isinstance(inputs_def, Mapping) or "fields" not in inputs_def:
            raise ValueError(f"inputs_def must be a dict with a 'fields' list, got {inputs_def!r}")
        fields = inputs_def["fields"]
        if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
            raise ValueError(f"inputs_def.fields must be a list of field names, got {fields!r}")
        alias = inputs_def.get("alias")
        if alias is not None and len(alias) != len(fields):
            raise ValueError(f"inputs_def.alias {list(alias)} must have one name per field {list(fields)}")
        return list(fields), (list(alias) if alias is not None else None)

    def __len__(self) -> int:
        return len(self.dataset) if hasattr(self.dataset, "__len__") else int(self.dataset.size)

    def _context(self, index: int) -> str:
        chain = " -> ".join(self.pipeline.names) or "(no transforms)"
        return f"{type(self.dataset).__name__} sample {index} (pipeline: {chain})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        try:
            sample = self.dataset.sample(index)
        except Exception as exc:
            reraise_with_context(exc, f"{type(self.dataset).__name__}.sample({index}) failed")
        if not isinstance(sample, dict):
            raise TypeError(f"{type(self.dataset).__name__}.sample({index}) returned {type(sample).__name__}, expected a dict")
        sample = dict(sample)  # transforms write into the dict; keep the dataset's own object untouched
        try:
            sample = self.pipeline(sample)
        except Exception as exc:
            reraise_with_context(exc, self._context(index))
        if self.fields is None:
            return sample
        missing = [f for f in self.fields if f not in sample]
        if missing:
            raise MissingFieldError(
                f"{self._context(index)}: inputs_def.fields {missing} missing from the sample; "
                f"available keys: {sorted(sample)}")
        names = self.alias or self.fields
        return {name: sample[f] for name, f in zip(names, self.fields)}

    def __repr__(self) -> str:
        return f"Reader({self.dataset!r}, {self.pipeline!r}, fields={self.fields})"
