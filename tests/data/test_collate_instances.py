"""collate batches variable-length annotations as per-sample lists (0, 1 and many boxes per image)."""
import numpy as np
import pytest
import torch

from antgo.data import Reader, build_dataloader, collate
from antgo.data.collate import INSTANCE_KEYS


def det_sample(n, k=3, h=8, w=10):
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 4, size=(n, 2)).astype(np.float32)
    return {"image": np.zeros((h, w, 3), np.uint8),
            "bboxes": np.concatenate([xy, xy + 3], 1).reshape(n, 4),
            "labels": np.arange(n, dtype=np.int64),
            "joints2d": rng.uniform(0, 5, size=(n, k, 3)).astype(np.float32),
            "iscrowd": np.zeros(n, bool), "areas": np.full(n, 9.0, np.float32),
            "label": n, "image_meta": {"id": n}}


@pytest.mark.parametrize("counts", [(0, 0), (1,), (0, 1, 5), (3, 3)])
def test_instance_fields_are_per_sample_lists(counts):
    samples = [det_sample(n) for n in counts]
    batch = collate(samples)
    assert batch["image"].shape == (len(counts), 8, 10, 3)  # images still stacked
    assert batch["label"].tolist() == list(counts)
    for key in ("bboxes", "labels", "joints2d", "iscrowd", "areas"):
        assert isinstance(batch[key], list) and len(batch[key]) == len(counts), key  # a list also when sizes agree
        for sample, t in zip(samples, batch[key]):
            assert isinstance(t, torch.Tensor) and t.shape[0] == len(sample[key])
            np.testing.assert_array_equal(t.numpy(), sample[key])
    assert batch["bboxes"][0].dtype == torch.float32 and batch["labels"][0].dtype == torch.int64
    assert batch["iscrowd"][0].dtype == torch.bool and tuple(batch["joints2d"][0].shape[1:]) == (3, 3)
    assert batch["image_meta"] == [{"id": n} for n in counts]


def test_instance_field_errors_name_the_field():
    with pytest.raises(ValueError, match="'joints2d'.*trailing"):
        collate([det_sample(2, k=3), det_sample(2, k=4)])
    bad = det_sample(1)
    bad["labels"] = bad["labels"].astype(np.int32)
    with pytest.raises(ValueError, match="'labels'.*dtypes"):
        collate([det_sample(1), bad])
    bad["labels"] = [0]
    with pytest.raises(TypeError, match="'labels'.*numpy array"):
        collate([bad])
    with pytest.raises(ValueError, match="per-instance fields"):  # other fields still must agree in shape
        collate([det_sample(1, h=8), det_sample(1, h=9)])


def test_custom_instance_keys_and_defaults():
    assert {"bboxes", "labels", "joints2d", "iscrowd", "areas", "difficult"} <= set(INSTANCE_KEYS)
    batch = collate([{"points": np.zeros((2, 2))}, {"points": np.zeros((0, 2))}], instance_keys=("points",))
    assert [tuple(t.shape) for t in batch["points"]] == [(2, 2), (0, 2)]


def test_dataloader_batches_varying_box_counts():
    class Boxes:
        size = 5

        def sample(self, i):
            return det_sample(i % 3)

    loader = build_dataloader(Reader(Boxes()), samples_per_gpu=4)
    batches = list(loader)
    assert [len(b["bboxes"]) for b in batches] == [4, 1]
    assert [t.shape[0] for t in batches[0]["bboxes"]] == [0, 1, 2, 0]
