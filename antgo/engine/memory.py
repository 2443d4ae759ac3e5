"""Out-of-memory errors get a note that names the batch size to lower and how (PyTorch's message names none)."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["is_out_of_memory", "note_out_of_memory"]

_CPU_ALLOCATOR_FAILED = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """A device allocation failure (``torch.OutOfMemoryError``) or the CPU allocator's."""
    return isinstance(exc, torch.OutOfMemoryError) or _CPU_ALLOCATOR_FAILED in str(exc)


def note_out_of_memory(exc: BaseException, when: str, loader: Any, batch_key: str, device: Any,
                       training: bool = False) -> None:
    """Add the note to ``exc`` when it is an out-of-memory error (once: the innermost caller's note wins)."""
    if not is_out_of_memory(exc) or getattr(exc, "antgo_memory_note", False):
        return
    batch = getattr(loader, "batch_size", None)
    smaller = max(1, int(batch) // 2) if batch else "N"
    lr = " and scale the learning rate with it" if training else ""
    exc.add_note(
        f"out of memory on {device} {when}, with batches of {batch or '?'} samples: lower {batch_key} "
        f"(e.g. --cfg-options {batch_key}={smaller}){lr}. On CUDA keep amp (bf16) and channels_last on; if "
        f"PyTorch reports much memory reserved but unallocated, set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True. "
        f"The checkpoints written so far are kept.")
    exc.antgo_memory_note = True
