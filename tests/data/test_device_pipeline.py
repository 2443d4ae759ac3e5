"""Device batch augmentation against the CPU transforms, on CPU tensors (the same code runs on CUDA).

Random parameters are drawn by both paths from the global ``np.random`` in the same order, so with one
seed they draw the same values and the outputs can be compared sample by sample.
"""
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from antgo.config import Config
from antgo.data import build_dataset, collate
from antgo.data.datasets.synthetic import make_voc_tree
from antgo.data.device.collate import pad_collate
from antgo.data.device.color import color_distort_batch, hsv8_to_rgb, rgb_to_hsv8
from antgo.data.device_pipeline import split_for_device
from antgo.data.transforms import ColorDistort
from antgo.registry import TRANSFORMS

ROOT = Path(__file__).resolve().parents[2]
MEAN = (0.491400, 0.482158, 0.4465231)
STD = (0.247032, 0.243485, 0.2615877)
TAIL = [dict(type="ToTensor", keys=["image"]), dict(type="Normalize", mean=MEAN, std=STD, keys=["image"]),
        dict(type="UnSqueeze", axis=0, keys=["segments"])]
SEED = [dict(type="Rotation"), dict(type="ResizeS", target_dim=(64, 64)), dict(type="ColorDistort"),
        dict(type="RandomFlipImage", swap_ids=[], swap_labels=[])] + TAIL


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """12 JPEGs of different sizes (40-70 px) with palette masks and void borders."""
    return make_voc_tree(tmp_path_factory.mktemp("dev_voc"), splits={"train": 12, "val": 1}, size_range=(40, 70),
                         num_classes=5, seed=3)


def split_cfg(voc, pipeline, **extra):
    return dict(type="Pascal2012", train_or_test="train", dir=str(voc), ext_params=dict(aug=False),
                pipeline=pipeline, inputs_def=dict(fields=["image", "segments"]), **extra)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def both_paths(voc, pipeline, seed=0, device="cpu"):
    """(CPU batch, device batch) of all samples, each path drawing from np.random seeded with ``seed``."""
    cfg = split_cfg(voc, pipeline, device_augmentation=True)
    cpu_cfg, batch_transform = split_for_device(cfg, "cpu")
    assert batch_transform is not None and cpu_cfg["pipeline"] == []
    full, part = build_dataset(cfg), build_dataset(cpu_cfg)
    np.random.seed(seed)
    ref = collate([full[i] for i in range(len(full))])
    batch = part.collate_fn([part[i] for i in range(len(part))])
    np.random.seed(seed)
    out = batch_transform({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
    return ref, {k: v.cpu() for k, v in out.items()}


def levels(batch):
    """Normalised images back to 0-255 levels."""
    return batch["image"] * torch.tensor(STD).view(1, 3, 1, 1) * 255 + torch.tensor(MEAN).view(1, 3, 1, 1) * 255


def test_hsv_conversions_reproduce_opencv():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(256, 64, 3), dtype=np.uint8)  # rows of 64: OpenCV's vector loop only
    hsv = rgb_to_hsv8(torch.from_numpy(rgb).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(hsv, cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV))
    hsv8 = np.stack([rng.integers(0, 180, (256, 64)), rng.integers(0, 256, (256, 64)),
                     rng.integers(0, 256, (256, 64))], -1).astype(np.uint8)
    back = hsv8_to_rgb(torch.from_numpy(hsv8).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    diff = np.abs(back.astype(int) - cv2.cvtColor(hsv8, cv2.COLOR_HSV2RGB))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # exact with OpenCV's FMA build; 1 level without


def test_color_distort_batch_equals_the_cpu_transform():
    rng = np.random.default_rng(1)
    imgs = np.stack([cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (64, 32)) for _ in range(24)])
    t = ColorDistort()
    np.random.seed(5)
    params = [t.draw_params() for _ in imgs]
    assert {p.contrast_first for p in params} == {True, False} and any(p.hue is None for p in params)
    cpu = np.stack([ColorDistort.apply(img, p) for img, p in zip(imgs, params)])
    dev = color_distort_batch(torch.from_numpy(imgs).permute(0, 3, 1, 2).float(), params)
    diff = np.abs(dev.permute(0, 2, 3, 1).numpy().astype(int) - cpu)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("geometry", [
    [dict(type="ResizeS", target_dim=(48, 40))],
    [dict(type="ResizeS", target_dim=(96, 96))],
    [dict(type="Rotation", prob=1.0), dict(type="ResizeS", target_dim=(48, 48))],
    [dict(type="ResizeS", target_dim=(56, 56)), dict(type="Rotation", degree=45, prob=0.7, border_value=(10, 20, 30))],
    [dict(type="RandomScaleCrop", crop_size=(48, 40), scale_range=(0.5, 1.5), pad_val=7)],
    [dict(type="ResizeS", target_dim=(48, 48)), dict(type="RandomFlipImage", swap_labels=[[1, 2]])],
], ids=["down", "up", "rotate-resize", "resize-rotate", "scale-crop", "flip-swap"])
def test_geometry_matches_the_cpu_chain(voc, geometry):
    ref, out = both_paths(voc, geometry + TAIL)
    assert out["image"].shape == ref["image"].shape and out["image"].dtype == torch.float32
    assert out["segments"].shape == ref["segments"].shape and out["segments"].dtype == torch.uint8
    diff = (levels(out) - levels(ref)).abs()
    assert diff.max() <= 1.01 and diff.mean() < 0.3  # interpolation rounding: one level at most
    assert (out["segments"] == ref["segments"]).float().mean() >= 0.9995


@pytest.mark.parametrize("device", DEVICES)
def test_seed_pipeline_matches_the_cpu_chain(voc, device):
    ref, out = both_paths(voc, SEED, seed=2, device=device)
    diff = (levels(out) - levels(ref)).abs()
    # a one-level difference after resizing can move an HSV rounding step: a few levels on a few pixels
    assert diff.mean() < 0.5 and torch.quantile(diff.flatten(), 0.99) <= 3
    assert torch.equal(out["segments"], ref["segments"])


@pytest.mark.parametrize("device", DEVICES)
def test_uint8_to_device_normalisation_equals_cpu_to_tensor_normalize(tmp_path, device):
    root = make_voc_tree(tmp_path, splits={"train": 4, "val": 1}, size_range=(24, 24), num_classes=3, seed=1)
    ref, out = both_paths(root, list(TAIL), device=device)
    torch.testing.assert_close(out["image"], ref["image"], rtol=0, atol=1e-6)
    assert torch.equal(out["segments"], ref["segments"])


def test_random_parameters_are_drawn_as_on_the_cpu(voc):
    """The device path draws the same angles and flips as the CPU transforms (recorded in image_meta)."""
    pipeline = [dict(type="Rotation", prob=0.5), dict(type="ResizeS", target_dim=(32, 32)),
                dict(type="RandomFlipImage", prob=0.5)] + TAIL
    cfg = split_cfg(voc, pipeline, device_augmentation=True)
    _, batch_transform = split_for_device(cfg, "cpu")
    full = build_dataset(dict(cfg, inputs_def=None))
    np.random.seed(11)
    metas = [full[i % len(full)]["image_meta"] for i in range(200)]
    np.random.seed(11)
    warps, _ = batch_transform._draw([(60, 50)] * 200)
    angles = [np.degrees(np.arctan2(w.steps[0].matrix[1, 0], w.steps[0].matrix[0, 0])) for w in warps]
    cpu_angles = [m.get("rotation", 0.0) for m in metas]
    np.testing.assert_allclose(angles, [-a for a in cpu_angles], atol=1e-9)  # cv2's matrix turns clockwise in y-down
    assert [w.steps[-1].matrix[0, 0] == -1 for w in warps] == [m["flipped"] for m in metas]
    rotated = np.mean([a != 0 for a in cpu_angles])
    assert 0.4 < rotated < 0.6 and max(abs(a) for a in cpu_angles) <= 30


def test_pad_collate_pads_and_carries_sizes():
    samples = [{"image": np.full((h, w, 3), 9, np.uint8), "segments": np.full((h, w), 1, np.uint8), "label": i}
               for i, (h, w) in enumerate([(4, 6), (5, 3)])]
    b = pad_collate(samples)
    assert b["image"].shape == (2, 5, 6, 3) and b["image"].dtype == torch.uint8
    assert b["image_hw"] == [(4, 6), (5, 3)] and b["label"].tolist() == [0, 1]
    assert int(b["image"][0, 4].max()) == 0 and int(b["segments"][1, :, 3:].min()) == 255
    with pytest.raises(TypeError, match="sample 1 of the batch has 'image'"):
        pad_collate([samples[0], {**samples[1], "image": np.zeros((5, 3, 3), np.float32)}])


class _Samples(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        h, w = 5 + i, 7 - i
        return {"image": np.full((h, w, 3), i + 1, np.uint8), "segments": np.full((h, w), i, np.uint8),
                "score": np.full(2, i, np.float32)}


def _collate_and_report(batch):
    """The batch as a worker makes it, with whether each tensor was made in shared memory."""
    from antgo.data import collate as plain_collate

    out = {"padded": pad_collate(batch), "stacked": plain_collate([{"score": s["score"]} for s in batch])}
    out["shared"] = [out["padded"]["image"].is_shared(), out["padded"]["segments"].is_shared(),
                     out["stacked"]["score"].is_shared()]
    return out


def test_batches_are_made_in_shared_memory_inside_loader_workers():
    """Sending a batch from a worker moves it to shared memory; made there, it is not copied again."""
    samples = [_Samples()[i] for i in range(4)]
    inline = pad_collate(samples)
    assert not inline["image"].is_shared()  # the main process allocates normally
    loader = torch.utils.data.DataLoader(_Samples(), batch_size=4, num_workers=1, collate_fn=_collate_and_report,
                                         multiprocessing_context="fork")
    (batch,) = list(loader)
    assert batch["shared"] == [True, True, True]
    assert torch.equal(batch["padded"]["image"], inline["image"])
    assert torch.equal(batch["padded"]["segments"], inline["segments"])
    assert batch["stacked"]["score"][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert int(inline["image"][3, :, 4:].max()) == 0 and int(inline["segments"][0, 5:].min()) == 255


def test_seed_config_verbatim_gets_the_fast_path_on_cuda_only():
    cfg = Config.fromfile(str(ROOT / "configs/pascal_voc/ddrketnetf_voc.py"))
    for split in ("train", "val"):
        cpu_cfg, bt = split_for_device(cfg.data[split], "cuda")
        assert bt is not None and cpu_cfg["pipeline"] == [] and cpu_cfg["collate_fn"] is pad_collate
    assert bt.names == ["ResizeS", "ToTensor", "Normalize", "UnSqueeze"]
    cpu_cfg, bt = split_for_device(cfg.data.train, "cpu")
    assert bt is None and cpu_cfg["pipeline"] == cfg.data.train.pipeline
    assert split_for_device({**cfg.data.train, "device_augmentation": False}, "cuda")[1] is None
    with pytest.raises(ValueError, match="data.train.device_augmentation must be 'auto', True or False"):
        split_for_device({**cfg.data.train, "device_augmentation": "yes"}, "cuda", key_path="data.train")


@TRANSFORMS.register_module(force=True)
class AddOneForTest:
    def __call__(self, results):
        results["image"] = results["image"] + 1
        return results


def test_user_transform_keeps_itself_and_what_precedes_it_on_the_cpu(voc, caplog):
    middle = [dict(type="Rotation"), dict(type="AddOneForTest"), dict(type="ResizeS", target_dim=(32, 32))] + TAIL
    cpu_cfg, bt = split_for_device(split_cfg(voc, middle), "cuda")
    assert [t["type"] for t in cpu_cfg["pipeline"]] == ["Rotation", "AddOneForTest"]
    assert bt.names == ["ResizeS", "ToTensor", "Normalize", "UnSqueeze"]
    with caplog.at_level(logging.INFO, logger="antgo.data"):
        last = [dict(type="ResizeS", target_dim=(32, 32)), dict(type="ToTensor", keys=["image"]),
                dict(type="AddOneForTest")]
        cpu_cfg, bt = split_for_device(split_cfg(voc, last), "cuda", key_path="data.train")
        assert bt is None and cpu_cfg["pipeline"] == last
        cubic = [dict(type="ResizeS", target_dim=(32, 32), interp="CUBIC")] + TAIL
        cpu_cfg, bt = split_for_device(split_cfg(voc, cubic), "cuda", key_path="data.train")
        assert bt.names == ["ToTensor", "Normalize", "UnSqueeze"]
    assert "data.train: augmentation stays on the CPU (#2 AddOneForTest: not a standard transform" in caplog.text


def test_device_batches_through_the_loader(voc):
    from antgo.data import build_dataloader

    cpu_cfg, bt = split_for_device(split_cfg(voc, SEED, device_augmentation=True), "cpu")
    loader = build_dataloader(build_dataset(cpu_cfg), samples_per_gpu=5, drop_last=True)
    batches = [bt(b) for b in loader]
    assert len(batches) == 2 and all(b["image"].shape == (5, 3, 64, 64) for b in batches)
    assert all(set(b) == {"image", "segments"} and b["segments"].shape == (5, 1, 64, 64) for b in batches)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_transform_never_waits_for_the_device(voc):
    cpu_cfg, batch_transform = split_for_device(split_cfg(voc, SEED), "cuda")
    part = build_dataset(cpu_cfg)
    batch = part.collate_fn([part[i] for i in range(8)])

    def on_device():
        return {k: v.pin_memory().to("cuda", non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    batch_transform(on_device())  # the first call copies the constant tables to the device
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = batch_transform(on_device())
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert out["image"].is_cuda and out["image"].shape == (8, 3, 64, 64)
