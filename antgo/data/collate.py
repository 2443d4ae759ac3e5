"""Turn a list of sample dicts into one batch dict."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch


def _stack_field(key: str, values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, (np.ndarray, torch.Tensor)):
        if not all(isinstance(v, (np.ndarray, torch.Tensor)) for v in values):
            raise TypeError(f"collate: field '{key}' mixes arrays with {sorted({type(v).__name__ for v in values})}")
        tensors = [torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for v in values]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(
                f"collate: field '{key}' has different shapes in one batch: {sorted(shapes)}; "
                f"resize or crop to one size in the pipeline (e.g. ResizeS target_dim) or use batch size 1")
        dtypes = {t.dtype for t in tensors}
        if len(dtypes) > 1:
            raise ValueError(f"collate: field '{key}' has different dtypes in one batch: {sorted(map(str, dtypes))}")
        return torch.stack(tensors, 0)
    if isinstance(first, (numbers.Number, np.bool_)) and all(isinstance(v, (numbers.Number, np.bool_)) for v in values):
        if all(isinstance(v, np.generic) for v in values):
            return torch.from_numpy(np.array(values))  # numpy scalars keep their dtype
        if all(isinstance(v, bool) for v in values):
            return torch.tensor(values, dtype=torch.bool)
        if all(isinstance(v, numbers.Integral) for v in values):
            return torch.tensor([int(v) for v in values], dtype=torch.int64)
        if all(isinstance(v, numbers.Real) for v in values):
            return torch.tensor([float(v) for v in values], dtype=torch.float64)
    # Strings, dicts (image_meta), None and anything else: metadata, kept per sample.
    return list(values)


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate sample dicts into a batch dict.

    numpy arrays and tensors are stacked on a new first axis (dtype kept: ``uint8`` masks stay
    ``uint8``); Python/numpy numbers become 1-D tensors; strings, dicts, None and other metadata are
    kept as lists of length B. Differing shapes raise ``ValueError`` naming the field.
    """
    if not batch:
        raise ValueError("collate: empty batch")
    if not all(isinstance(s, dict) for s in batch):
        raise TypeError(f"collate: expected a list of dicts, got {[type(s).__name__ for s in batch][:4]}")
    keys = list(batch[0])
    for i, sample in enumerate(batch[1:], 1):
        if set(sample) != set(keys):
            raise KeyError(f"collate: sample {i} has keys {sorted(sample)} but sample 0 has {sorted(keys)}")
    return {key: _stack_field(key, [s[key] for s in batch]) for key in keys}
