"""The pre-flight check: a truncated or missing image/mask file anywhere in data.train / data.val fails before the
first epoch, naming the file, the split key, the index and the fix; it reads only each file's head and tail."""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from antgo.data import Dataset, build_dataset
from antgo.data.image_io import CorruptImageError, check_image_file, read_rgb
from antgo.data.reader import register
from antgo.engine import Trainer
from antgo.engine.loading import preflight_images


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def split_file(voc: Path, split: str, index: int, folder: str = "JPEGImages", suffix: str = ".jpg") -> Path:
    root = next(voc.rglob("ImageSets/Segmentation")).parent.parent
    ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    return root / folder / f"{ids[index]}{suffix}"


@pytest.fixture
def voc(tmp_path: Path, mini_voc: Path) -> Path:
    return Path(shutil.copytree(mini_voc, tmp_path / "voc"))


def on(cfg: dict[str, Any], voc: Path, **split_extra: Any) -> dict[str, Any]:
    for split in ("train", "val"):
        cfg["data"][split].update(dir=str(voc), **split_extra.get(split, {}))
    cfg["max_epochs"] = 1
    return cfg


def train(cfg: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    trainer = Trainer(cfg, work_dir=str(work_dir), device="cpu")
    return trainer.start_train()


@pytest.mark.parametrize("split, index, folder, suffix, error, fragment", [
    ("val", 1, "JPEGImages", ".jpg", CorruptImageError, "Premature end of JPEG file"),
    ("train", 7, "JPEGImages", ".jpg", CorruptImageError, "Premature end of JPEG file"),
    ("train", 3, "SegmentationClass", ".png", CorruptImageError, "no IEND chunk"),
    ("val", 2, "SegmentationClass", ".png", FileNotFoundError, "does not exist"),
], ids=["val-jpeg", "train-jpeg", "train-png-mask", "val-mask-missing"])
def test_bad_file_fails_before_the_first_epoch(tiny_seg_cfg, voc, tmp_path, split, index, folder, suffix, error,
                                               fragment):
    bad = split_file(voc, split, index, folder, suffix)
    truncate(bad) if error is CorruptImageError else bad.unlink()
    work = tmp_path / "run"
    with pytest.raises(error) as info:
        train(on(tiny_seg_cfg, voc), work)
    message = str(info.value)
    for part in (str(bad), f"data.{split} sample {index}", fragment, "skip_bad_samples=True", "preflight=False"):
        assert part in message, f"{part!r} not in {message}"
    assert not list(work.rglob("*.pth")), "a checkpoint was written"
    assert "Epoch [" not in (work / "train.log").read_text()


def test_skip_bad_samples_warns_and_trains(tiny_seg_cfg, voc, tmp_path, caplog):
    truncate(split_file(voc, "train", 4))
    truncate(split_file(voc, "train", 9, "SegmentationClass", ".png"), 0.7)
    cfg = on(tiny_seg_cfg, voc, train=dict(skip_bad_samples=True))
    trainer = Trainer(cfg, work_dir=str(tmp_path / "run"), device="cpu")
    with caplog.at_level(logging.WARNING):
        result = trainer.start_train()
    assert "data.train: skip_bad_samples: 2 of 12 samples have bad files" in caplog.text
    assert trainer.train_loader.dataset.skipped_indices == [4, 9]
    assert result["epochs"] == 1 and Path(result["latest_checkpoint"]).is_file()


@register
class PlainImages(Dataset):
    """A user data set without ``image_files``: not pre-flight checked, trains as before."""

    def __init__(self, train_or_test: str = "train", dir: str | None = None, ext_params: Any = None) -> None:
        super().__init__(train_or_test, dir, ext_params)
        self.voc = build_dataset(dict(type="Pascal2012", train_or_test=train_or_test, dir=dir,
                                      ext_params=dict(aug=False))).dataset

    @property
    def size(self) -> int:
        return self.voc.size

    def sample(self, id: int) -> dict[str, Any]:
        return self.voc.sample(id)


def test_user_dataset_without_the_method_trains(tiny_seg_cfg, voc, tmp_path):
    cfg = on(tiny_seg_cfg, voc)
    for split in ("train", "val"):
        cfg["data"][split] = dict(cfg["data"][split], type="PlainImages")
        cfg["data"][split].pop("ext_params")
    assert preflight_images(build_dataset(cfg["data"]["val"]), "data.val") == []
    assert train(cfg, tmp_path / "run")["epochs"] == 1


def test_preflight_false_and_bad_values(tiny_seg_cfg, voc):
    truncate(split_file(voc, "val", 0))
    reader = build_dataset(dict(on(tiny_seg_cfg, voc)["data"]["val"], preflight=False))
    assert preflight_images(reader, "data.val", False) == []
    with pytest.raises(ValueError, match=r"data.val.preflight must be True or False, got 'no'"):
        preflight_images(reader, "data.val", "no")
    with pytest.raises(CorruptImageError, match=r"data.val sample 0: image file .* is truncated"):
        preflight_images(reader, "data.val")


def test_reads_only_head_and_tail(tmp_path):
    # 8 GiB, sparse: reading it whole would take minutes; the check reads 8 bytes and the last 4 KiB
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(8 << 30)
        f.seek((8 << 30) - 2)
        f.write(b"\xff\xd9")
    start = time.perf_counter()
    check_image_file(huge)
    assert time.perf_counter() - start < 1.0
    # complete (start and end markers) but garbage inside: passes the check, fails when decoded, as before
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9")
    check_image_file(garbage)
    with pytest.raises(CorruptImageError, match="cannot decode image"):
        read_rgb(garbage)
    with pytest.raises(CorruptImageError, match="is empty"):
        check_image_file(truncate(garbage, 0))


def test_coco_and_image_folder_list_their_files(tmp_path):
    from antgo.data.datasets.synthetic_tasks import make_demo_cls, make_demo_det

    det = make_demo_det(tmp_path / "det", counts={"val": 3})
    cls = make_demo_cls(tmp_path / "cls", counts={"val": 3})
    for cfg in (dict(type="COCO2017", train_or_test="val", dir=str(det), ext_params=dict(task_type="DETECTION")),
                dict(type="ImageFolder", train_or_test="val", dir=str(cls))):
        reader = build_dataset(cfg, "data.val")
        [bad] = reader.dataset.image_files(2)
        truncate(bad)
        with pytest.raises(CorruptImageError, match=f"data.val sample 2: image file {bad} is truncated"):
            preflight_images(reader, "data.val")
