"""Training batches on the device one step ahead: the copy and the device augmentation of batch i+1 run on a
side CUDA stream while step i computes (the default stream would run them between the steps).

Each batch's tensors are made on the side stream and used on the compute stream: the compute stream waits for
that batch's work only, and ``record_stream`` keeps the allocator from reusing its memory while the step still
reads it. Host random draws of the device augmentation (``np.random``) happen one batch earlier than without
prefetching; at a pass end nothing is ahead, so epoch-end checkpoints hold the same random state.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

from antgo.engine.evaluation import move_to_device

__all__ = ["device_batches", "one_ahead"]


def device_batches(batches: Iterable[Mapping[str, Any]], device: torch.device, channels_last: bool = False,
                   transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                   prefetch: bool = True) -> Iterable[dict[str, Any]]:
    """``move_to_device`` of each batch; on CUDA with ``prefetch``, staged one batch ahead on a side stream."""
    if device.type != "cuda" or not prefetch:
        return (move_to_device(batch, device, channels_last, transform) for batch in batches)
    side = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)

    def stage(batch: Mapping[str, Any]) -> dict[str, Any]:
        side.wait_stream(compute)  # inputs the transform reads (its tables) may have been made there
        with torch.cuda.stream(side):
            return move_to_device(batch, device, channels_last, transform)

    def hand_over(staged: dict[str, Any]) -> dict[str, Any]:
        compute.wait_stream(side)
        for value in staged.values():
            for t in value if isinstance(value, list) else [value]:
                if isinstance(t, torch.Tensor) and t.device.type == "cuda":
                    t.record_stream(compute)
        return staged

    return one_ahead(batches, stage, hand_over)


def one_ahead(items: Iterable[Any], stage: Callable[[Any], Any], hand_over: Callable[[Any], Any]) -> Iterator[Any]:
    """``hand_over(stage(item))`` for each item, with ``stage`` called for the next item before the current one
    is handed on (so that its work is queued first). An error of ``stage`` is raised in its item's turn."""
    ahead = None
    for item in items:
        try:
            staged = stage(item)  # queued before the previous item's step: overlaps it
        except Exception as exc:  # raised in this item's turn, so that errors name its iteration
            staged = exc
        if ahead is not None:
            yield ahead
        if isinstance(staged, Exception):
            raise staged
        ahead = hand_over(staged)
    if ahead is not None:
        yield ahead
