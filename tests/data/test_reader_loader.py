"""Dataset/Reader/collate/build_dataset/build_dataloader, including the seed's YourDataset sample."""
import numpy as np
import pytest
import torch

from antgo.data import Dataset, Reader, build_dataloader, build_dataset, collate, reader
from antgo.data.datasets import make_voc_tree
from antgo.registry import DATASETS, RegistryError

SEED_PIPELINE = [
    dict(type="Rotation"),
    dict(type="ResizeS", target_dim=(32, 32)),
    dict(type="ColorDistort"),
    dict(type="RandomFlipImage", swap_ids=[], swap_labels=[]),
    dict(type="ToTensor", keys=["image"]),
    dict(type="Normalize", mean=(0.491400, 0.482158, 0.4465231), std=(0.247032, 0.243485, 0.2615877), keys=["image"]),
    dict(type="UnSqueeze", axis=0, keys=["segments"]),
]


@pytest.fixture
def your_dataset():
    """The seed's YourDataset sample (with a size), registered by the decorator; the registry is restored after."""
    previous = DATASETS._modules.pop("YourDataset", None)

    @reader.register
    class YourDataset(Dataset):
        def __init__(self, train_or_test="train", dir=None, ext_params=None):
            super().__init__(train_or_test, dir, ext_params)
            self.n = int(self.ext_params.get("n", 10))

        @property
        def size(self):
            return self.n

        def sample(self, id):
            image = np.full((8, 6, 3), id, np.uint8)
            return {"image": image, "segments": np.full((8, 6), id % 3, np.uint8), "label": id, "name": f"s{id}",
                    "image_meta": {"id": id}}

    yield YourDataset
    DATASETS._modules.pop("YourDataset", None)
    if previous is not None:
        DATASETS._modules["YourDataset"] = previous


def test_dataset_base_stores_arguments():
    class D(Dataset):
        size = 3
    d = D("val", "/x", None)
    assert (d.train_or_test, d.dir, d.ext_params, len(d)) == ("val", "/x", {}, 3)
    with pytest.raises(NotImplementedError):
        Dataset().sample(0)
    with pytest.raises(NotImplementedError):
        len(Dataset())


def test_register_returns_class_and_builds_by_name(your_dataset):
    assert your_dataset.__name__ == "YourDataset" and DATASETS.get("YourDataset") is your_dataset
    ds = DATASETS.build(dict(type="YourDataset", train_or_test="train", dir=None, ext_params=dict(n=4)))
    assert type(ds) is your_dataset and len(ds) == 4
    r = build_dataset(dict(type="YourDataset", ext_params=dict(n=5), pipeline=[dict(type="ToTensor")],
                           inputs_def=dict(fields=["image", "label"])))
    assert r.dataset.train_or_test == "train" and len(r) == 5
    item = r[2]
    assert set(item) == {"image", "label"} and item["image"].shape == (3, 8, 6)


def test_reader_inputs_def_collate_dtypes(your_dataset):
    r = Reader(your_dataset(ext_params=dict(n=4)), pipeline=SEED_PIPELINE[1:2] + SEED_PIPELINE[4:],
               inputs_def=dict(fields=["image", "segments", "image_meta", "name"]))
    batch = collate([r[i] for i in range(3)])
    assert batch["image"].dtype == torch.float32 and tuple(batch["image"].shape) == (3, 3, 32, 32)
    assert batch["segments"].dtype == torch.uint8 and tuple(batch["segments"].shape) == (3, 1, 32, 32)
    assert batch["image_meta"] == [{"id": 0, "image_shape": (32, 32), "scale_factor": pytest.approx((32 / 6, 4, 32 / 6, 4))},
                                   {"id": 1, "image_shape": (32, 32), "scale_factor": pytest.approx((32 / 6, 4, 32 / 6, 4))},
                                   {"id": 2, "image_shape": (32, 32), "scale_factor": pytest.approx((32 / 6, 4, 32 / 6, 4))}]
    assert batch["name"] == ["s0", "s1", "s2"]
    assert Reader(your_dataset(), inputs_def=None)[0].keys() == {"image", "segments", "label", "name", "image_meta"}


def test_missing_field_names_field_keys_and_chain(your_dataset):
    r = Reader(your_dataset(), pipeline=[dict(type="ToTensor")], inputs_def=dict(fields=["image", "joints2d"]))
    with pytest.raises(KeyError) as info:
        r[0]
    msg = str(info.value)
    assert "joints2d" in msg and "'segments'" in msg and "ToTensor" in msg and "YourDataset" in msg


def test_errors_propagate_with_context(your_dataset):
    def boom(results):
        raise ValueError("bad pixel")

    r = Reader(your_dataset(), pipeline=[dict(type="ToTensor"), boom])
    with pytest.raises(ValueError, match=r"YourDataset sample 3.*boom.*bad pixel"):
        r[3]

    class Broken(your_dataset):
        def sample(self, id):
            raise FileNotFoundError("missing.jpg")

    with pytest.raises(FileNotFoundError, match=r"Broken.sample\(1\).*missing.jpg"):
        Reader(Broken())[1]
    with pytest.raises(TypeError, match="returned None"):
        Reader(your_dataset(), pipeline=[lambda r: None])[0]


def test_collate_numbers_strings_and_shape_error():
    batch = collate([{"a": 1, "b": 0.5, "c": "x", "d": None, "e": np.uint8(3), "f": torch.ones(2)},
                     {"a": 2, "b": 1.5, "c": "y", "d": None, "e": np.uint8(4), "f": torch.zeros(2)}])
    assert batch["a"].dtype == torch.int64 and batch["a"].tolist() == [1, 2]
    assert batch["b"].dtype == torch.float64 and batch["c"] == ["x", "y"] and batch["d"] == [None, None]
    assert batch["e"].dtype == torch.uint8 and tuple(batch["f"].shape) == (2, 2)
    with pytest.raises(ValueError, match="'image'.*different shapes"):
        collate([{"image": np.zeros((2, 2))}, {"image": np.zeros((3, 2))}])


def test_build_dataset_does_not_mutate_cfg_and_unknown_type(your_dataset):
    cfg = dict(type="YourDataset", ext_params=dict(n=3), pipeline=[dict(type="ToTensor")],
               inputs_def=dict(fields=["image"]))
    snapshot = repr(cfg)
    build_dataset(cfg)
    assert repr(cfg) == snapshot
    with pytest.raises(RegistryError, match="data.val"):
        build_dataset(dict(type="NoSuchSet"), key_path="data.val")
    with pytest.raises(RegistryError, match=r"data.train.pipeline\[0\]"):
        build_dataset(dict(type="YourDataset", pipeline=[dict(type="NoSuchTransform")]))


def voc_reader(tmp_path, pipeline=SEED_PIPELINE):
    root = make_voc_tree(tmp_path / "voc", splits={"train": 10, "val": 2}, seed=0)
    return build_dataset(dict(type="Pascal2012", train_or_test="train", dir=str(root),
                              ext_params=dict(task_type="SEGMENTATION", aug=True), pipeline=pipeline,
                              inputs_def=dict(fields=["image", "segments"])))


def batches(loader):
    return [(b["image"].clone(), b["segments"].clone()) for b in loader]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_loaders_with_0_and_2_workers_reproducible(tmp_path):
    r = voc_reader(tmp_path)
    two = dict(samples_per_gpu=4, workers_per_gpu=2, shuffle=True, drop_last=True, multiprocessing_context="fork")
    first = batches(build_dataloader(r, seed=3, **two))
    assert len(first) == 2 and first[0][0].shape == (4, 3, 32, 32) and first[0][1].dtype == torch.uint8
    assert same(first, batches(build_dataloader(r, seed=3, **two)))  # augmentation and order reproducible
    assert not same(first, batches(build_dataloader(r, seed=4, **two)))
    # a deterministic pipeline: same content with 0 and 2 workers, same shuffled order for the same seed
    plain = voc_reader(tmp_path / "p", pipeline=[SEED_PIPELINE[1]] + SEED_PIPELINE[4:])
    zero = batches(build_dataloader(plain, samples_per_gpu=3, workers_per_gpu=0, shuffle=True, seed=5))
    assert same(zero, batches(build_dataloader(plain, samples_per_gpu=3, workers_per_gpu=2, shuffle=True, seed=5,
                                               multiprocessing_context="fork")))
    unshuffled = batches(build_dataloader(plain, samples_per_gpu=3))
    assert len(zero) == len(unshuffled) == 4 and not same(zero, unshuffled)


def test_build_dataloader_options(your_dataset):
    r = Reader(your_dataset(), inputs_def=dict(fields=["image"]))
    loader = build_dataloader(r, **dict(samples_per_gpu=4, workers_per_gpu=0, drop_last=True, shuffle=False))
    assert loader.num_workers == 0 and not loader.persistent_workers and len(loader) == 2
    loader = build_dataloader(r, samples_per_gpu=2, workers_per_gpu=2, multiprocessing_context="spawn")
    assert loader.persistent_workers and loader.prefetch_factor == 2
    assert loader.multiprocessing_context.get_start_method() == "spawn" and loader.worker_init_fn is not None
    with pytest.raises(TypeError, match="bogus_key"):
        build_dataloader(r, bogus_key=1)
    with pytest.raises(ValueError, match="multiprocessing_context"):
        build_dataloader(r, workers_per_gpu=1, multiprocessing_context="threads")


def test_non_persistent_workers_draw_new_augmentation_every_epoch(tmp_path):
    r = voc_reader(tmp_path)
    loader = build_dataloader(r, samples_per_gpu=4, workers_per_gpu=2, shuffle=False, drop_last=True, seed=3,
                              persistent_workers=False, multiprocessing_context="fork")
    epoch1, epoch2 = batches(loader), batches(loader)
    assert not same(epoch1, epoch2)  # workers restart each epoch: they must not replay the same random stream
    again = build_dataloader(r, samples_per_gpu=4, workers_per_gpu=2, shuffle=False, drop_last=True, seed=3,
                             persistent_workers=False, multiprocessing_context="fork")
    assert same(epoch1, batches(again)) and same(epoch2, batches(again))  # still a function of the seed
