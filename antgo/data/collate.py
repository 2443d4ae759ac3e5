"""Turn a list of sample dicts into one batch dict.

Per-instance fields (``INSTANCE_KEYS``: boxes, their labels, keypoints and per-box flags) vary in length
from image to image, so they are never stacked: the batch holds a list of B tensors, one per sample,
whatever the task and even when the lengths happen to agree. Everything else is stacked.
"""
from __future__ import annotations

import math
import numbers
import shutil
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from antgo.data.cache import RAM_DIR  # /dev/shm: where the loader's workers hand batches over

# Fields with one row per object instance (their first axis is N, which differs between samples).
INSTANCE_KEYS = ("bboxes", "labels", "joints2d", "joints_vis", "iscrowd", "areas", "difficult")


class SharedMemoryFull(RuntimeError):
    """A loader worker found no room in shared memory for a batch (a container's small ``/dev/shm``)."""


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised batch tensor; in a loader worker it is made in shared memory, as PyTorch's
    ``default_collate`` makes its batches, so that handing it to the main process copies nothing."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    like = torch.empty(0, dtype=dtype)
    try:
        storage = like._typed_storage()._new_shared(math.prod(shape), device="cpu")
    except RuntimeError as exc:
        raise _shared_memory_full(math.prod(shape) * like.element_size(), shape, exc) from exc
    return like.new(storage).view(shape)


def _shared_memory_full(nbytes: int, shape: tuple[int, ...], exc: BaseException) -> SharedMemoryFull:
    try:
        usage = shutil.disk_usage(RAM_DIR)
        room = f"{RAM_DIR} has {usage.free / 2 ** 20:.0f} MiB free of {usage.total / 2 ** 20:.0f} MiB"
    except OSError:
        room = f"{RAM_DIR} cannot be read"
    return SharedMemoryFull(
        f"a data loader worker could not make a batch tensor {list(shape)} ({nbytes / 2 ** 20:.1f} MiB) in "
        f"shared memory: {exc}. {room}; the workers hand their batches over there, up to workers_per_gpu x "
        f"prefetch_factor (default 2) batches at a time. Give the machine more shared memory (docker run "
        f"--shm-size=8g; Kubernetes: an emptyDir volume with medium: Memory mounted at /dev/shm), or lower "
        f"samples_per_gpu or workers_per_gpu in the config's data section (workers_per_gpu=0 loads in the "
        f"main process, without shared memory).")


def _as_tensor(key: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"collate: per-instance field '{key}' must be a numpy array or tensor per sample "
                    f"(e.g. float32 (N, 4) for bboxes, N may be 0), got {type(value).__name__}")


def _instance_field(key: str, values: list[Any]) -> list[torch.Tensor]:
    tensors = [_as_tensor(key, v) for v in values]
    tails = {tuple(t.shape[1:]) for t in tensors}
    if len(tails) > 1 or any(t.dim() == 0 for t in tensors):
        raise ValueError(f"collate: per-instance field '{key}' must have shape (N, ...) with the same trailing "
                         f"shape in every sample, got {[tuple(t.shape) for t in tensors]}")
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise ValueError(f"collate: field '{key}' has different dtypes in one batch: {sorted(map(str, dtypes))}")
    return tensors


def _stack_field(key: str, values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, (np.ndarray, torch.Tensor)):
        if not all(isinstance(v, (np.ndarray, torch.Tensor)) for v in values):
            raise TypeError(f"collate: field '{key}' mixes arrays with {sorted({type(v).__name__ for v in values})}")
        arrays = all(isinstance(v, np.ndarray) for v in values)
        tensors = values if arrays else [torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray)
                                         else v for v in values]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(
                f"collate: field '{key}' has different shapes in one batch: {sorted(shapes)}; "
                f"resize or crop to one size in the pipeline (e.g. ResizeS target_dim) or use batch size 1 "
                f"(per-instance fields {list(INSTANCE_KEYS)} are batched as lists instead)")
        dtypes = {t.dtype for t in tensors}
        if len(dtypes) > 1:
            raise ValueError(f"collate: field '{key}' has different dtypes in one batch: {sorted(map(str, dtypes))}")
        shape = (len(tensors), *tensors[0].shape)
        if not arrays:
            return torch.stack(tensors, 0, out=batch_tensor(shape, first.dtype))
        if torch.utils.data.get_worker_info() is None:  # the readers' output in the main process: one np.stack
            return torch.from_numpy(np.stack(tensors, 0))
        out = batch_tensor(shape, torch.from_numpy(np.empty(0, dtype=first.dtype)).dtype)
        np.stack(tensors, 0, out=out.numpy())  # in a worker: straight into shared memory
        return out
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


def collate(batch: list[dict[str, Any]], instance_keys: Iterable[str] = INSTANCE_KEYS) -> dict[str, Any]:
    """Collate sample dicts into a batch dict.

    Fields in ``instance_keys`` (default ``INSTANCE_KEYS``: ``bboxes``, ``labels``, ``joints2d``,
    ``joints_vis``, ``iscrowd``, ``areas``, ``difficult``) become a list of B tensors of shape ``(N_i, ...)``
    (``N_i`` may be 0). Other numpy arrays and tensors are stacked on a new first axis (dtype kept:
    ``uint8`` masks stay ``uint8``); Python/numpy numbers become 1-D tensors; strings, dicts, None and other
    metadata are kept as lists of length B. Differing shapes of a stacked field raise ``ValueError`` naming it.
    """
    if not batch:
        raise ValueError("collate: empty batch")
    if not all(isinstance(s, dict) for s in batch):
        raise TypeError(f"collate: expected a list of dicts, got {[type(s).__name__ for s in batch][:4]}")
    keys = list(batch[0])
    for i, sample in enumerate(batch[1:], 1):
        if set(sample) != set(keys):
            raise KeyError(f"collate: sample {i} has keys {sorted(sample)} but sample 0 has {sorted(keys)}")
    per_instance = set(instance_keys)
    return {key: (_instance_field if key in per_instance else _stack_field)(key, [s[key] for s in batch])
            for key in keys}
