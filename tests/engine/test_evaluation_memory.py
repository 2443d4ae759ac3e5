"""Evaluation memory does not grow with the number of samples (the confusion matrix stays on the device)."""
from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import torch

from antgo.engine.evaluation import evaluate
from antgo.metrics import SegMIOU


class TinySegmentor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward_test(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pred_segments": self.conv(image).argmax(1)}


class PerSampleIoU:
    """The design document's contract only (``keys`` + ``__call__``): it needs every sample at the end."""

    def keys(self) -> dict[str, list[str]]:
        return {"pred": ["pred_segments"], "gt": ["segments"]}

    def __call__(self, preds: list[dict], gts: list[dict]) -> dict[str, float]:
        return {"n": float(len(preds))}


def batches(n: int) -> Iterator[dict[str, Any]]:
    """``n`` generated batches, made one at a time (a long synthetic set that is never held whole)."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(n):
        yield {"image": torch.rand(2, 3, 24, 24, generator=generator),
               "segments": torch.randint(0, 4, (2, 1, 24, 24), generator=generator, dtype=torch.uint8)}


def peak_bytes(metric: Any, n: int) -> int:
    model = TinySegmentor()
    tracemalloc.start()
    try:
        evaluate(model, batches(n), [metric])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_evaluation_memory_is_constant_in_the_number_of_samples() -> None:
    peak_bytes(SegMIOU(class_num=4), 2)  # first calls allocate caches (imports, tqdm, kernels)
    short, long = peak_bytes(SegMIOU(class_num=4), 20), peak_bytes(SegMIOU(class_num=4), 400)
    assert long - short < 16 * 1024, (short, long)
    # the check can fail: a metric that keeps every sample grows with the data set
    held_short, held_long = peak_bytes(PerSampleIoU(), 20), peak_bytes(PerSampleIoU(), 400)
    assert held_long - held_short > 10 * (long - short + 4096), (held_short, held_long)
