"""Out-of-memory errors get a note that names the setting to lower and how (PyTorch's messages name none):
an allocation that failed (CUDA's or the CPU allocator's), or a data loader worker that died, which is most often
the kernel's out-of-memory killer ending it."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["is_out_of_memory", "is_worker_death", "note_out_of_memory"]

_CPU_ALLOCATOR_FAILED = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """A device allocation failure (``torch.OutOfMemoryError``) or the CPU allocator's."""
    return isinstance(exc, torch.OutOfMemoryError) or _CPU_ALLOCATOR_FAILED in str(exc)


def is_worker_death(exc: BaseException) -> bool:
    """PyTorch's report of a loader worker that ended without a Python error (killed, or crashed)."""
    text = str(exc)
    return "DataLoader worker (pid" in text and ("exited unexpectedly" in text or "is killed by signal" in text)


def note_out_of_memory(exc: BaseException, when: str, loader: Any, loader_key: str, device: Any,
                       training: bool = False) -> bool:
    """Add the note to ``exc`` if it is one of these errors; once (the innermost caller's note wins). Returns
    whether ``exc`` has such a note. ``loader_key``: the split's loader section, e.g. 'data.train_dataloader'."""
    if getattr(exc, "antgo_memory_note", False):
        return True
    batch = getattr(loader, "batch_size", None)
    if is_out_of_memory(exc):
        key = f"{loader_key}.samples_per_gpu"
        smaller = max(1, int(batch) // 2) if batch else "N"
        lr = " and scale the learning rate with it" if training else ""
        exc.add_note(
            f"out of memory on {device} {when}, with batches of {batch or '?'} samples: lower {key} "
            f"(e.g. --cfg-options {key}={smaller}){lr}. On CUDA keep amp (bf16) and channels_last on; if PyTorch "
            f"reports much memory reserved but unallocated, set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True. "
            f"The checkpoints written so far are kept.")
    elif is_worker_death(exc):
        workers = getattr(loader, "num_workers", None)
        exc.add_note(
            f"a data loader worker died {when} ({workers if workers is not None else '?'} workers, batches of "
            f"{batch or '?'} samples). Most often the kernel's out-of-memory killer ended it (`dmesg | grep -i "
            f"'killed process'` shows it): the machine's RAM ran out. Lower {loader_key}.workers_per_gpu (each "
            f"worker holds its own copy of the data set object and its prefetched batches), its prefetch_factor or "
            f"samples_per_gpu, or give the machine (the container) more memory. A signal other than Killed means "
            f"the worker crashed in native code (an image library): run with workers_per_gpu=0 to see where. "
            f"The checkpoints written so far are kept.")
    else:
        return False
    exc.antgo_memory_note = True
    return True
