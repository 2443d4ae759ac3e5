"""Training batches staged one step ahead: the order of the work, errors in their own turn, same batches."""
from __future__ import annotations

import pytest
import torch

from antgo.engine.evaluation import move_to_device
from antgo.engine.prefetch import device_batches, one_ahead


def test_the_next_item_is_staged_before_the_current_one_is_handed_on():
    events = []

    def stage(i):
        events.append(f"stage {i}")
        return i

    for i in one_ahead(range(3), stage, lambda i: i):
        events.append(f"step {i}")
    assert events == ["stage 0", "stage 1", "step 0", "stage 2", "step 1", "step 2"]


def test_a_staging_error_is_raised_in_its_own_turn():
    def stage(i):
        if i == 2:
            raise ValueError("batch 2 is bad")
        return i

    steps = []
    with pytest.raises(ValueError, match="batch 2"):
        for i in one_ahead(range(4), stage, lambda i: i):
            steps.append(i)
    assert steps == [0, 1]  # batch 1's step ran: the error belongs to batch 2


def test_on_the_cpu_batches_move_in_order_without_staging():
    batches = [{"image": torch.full((1, 3, 2, 2), float(i)), "meta": [i]} for i in range(3)]
    out = list(device_batches(batches, torch.device("cpu"), prefetch=True))
    assert [b["meta"] for b in out] == [[0], [1], [2]] and [float(b["image"][0, 0, 0, 0]) for b in out] == [0, 1, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prefetched_cuda_batches_equal_the_ones_moved_inline():
    torch.manual_seed(0)
    batches = [{"image": torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8).pin_memory(),
                "label": torch.arange(4).pin_memory(), "meta": ["x"] * 4} for _ in range(5)]

    def transform(batch):
        batch["image"] = batch["image"].float().div_(255)
        return batch

    cuda = torch.device("cuda")
    inline = [move_to_device(dict(b), cuda, True, transform) for b in batches]
    staged = []
    for b in device_batches([dict(b) for b in batches], cuda, True, transform, prefetch=True):
        b["image"].mul_(2)  # work on the compute stream, as a training step would
        staged.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in b.items()})
    torch.cuda.synchronize()
    for a, b in zip(inline, staged):
        torch.testing.assert_close(b["image"], a["image"] * 2)
        assert torch.equal(a["label"], b["label"]) and b["meta"] == a["meta"]
