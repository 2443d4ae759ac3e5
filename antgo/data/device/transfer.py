"""Small host tensors to the device without a host sync (pinned memory + non-blocking copy on CUDA)."""
from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (a CPU tensor) on ``device``; on CUDA from pinned memory, asynchronously, so the host never
    waits for the queued training work (a plain ``.to('cuda')`` of pageable memory does)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
