"""templates/own_data's FolderSegmentation checks what the built-in readers check: bad files, masks and split or
class files are errors naming the file (and, found by the pre-flight check, the split key and the index) before the
first epoch. In-process on a copy of the template with its tiny example data."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from antgo.data import build_dataset
from antgo.data.image_io import CorruptImageError
from antgo.engine import Trainer
from antgo.engine.loading import preflight_images

TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "own_data"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the template with 4 train / 2 val example samples, as the cwd (the config's data dir is 'data')."""
    folder = Path(shutil.copytree(TEMPLATE, tmp_path / "project"))
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    import make_example_data

    make_example_data.main(["data", "--train", "4", "--val", "2"])
    return folder


def split_cfg(split: str = "train", **changes: Any) -> dict[str, Any]:
    from antgo.config import load_config

    cfg = load_config("config.py")["data"][split]
    return {**cfg, **changes}


def reader(split: str = "train", **changes: Any) -> Any:
    return build_dataset(split_cfg(split, **changes), f"data.{split}")


def write_mask(name: str, mask: np.ndarray, mode: str | None = None) -> Path:
    path = Path("data/masks") / f"{name}.png"
    Image.fromarray(mask, mode=mode).save(path) if mode else Image.fromarray(mask).save(path)
    return path


def load(split: str, index: int) -> dict[str, Any]:
    return reader(split)[index]


def test_template_reads_its_example_data(project):
    train = reader("train")
    assert len(train) == 4 and train.dataset.class_names == ("background", "disc", "box")
    assert train[0]["image"].shape == (3, 64, 64) and preflight_images(train, "data.train") == []


def test_truncated_jpeg_fails_before_the_first_epoch(project, tmp_path):
    bad = Path("data/images/val_001.jpg")
    bad.write_bytes(bad.read_bytes()[:300])
    trainer = Trainer("config.py", work_dir=str(tmp_path / "work"), device="cpu")
    with pytest.raises(CorruptImageError) as info:
        trainer.config_dataloader()
    message = str(info.value)
    assert "data.val sample 1" in message and "val_001.jpg" in message and "Premature end of JPEG file" in message


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: p.write_bytes(p.read_bytes()[:40]), "no IEND chunk"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.unlink(), "does not exist"),
], ids=["truncated", "zero-byte", "missing"])
def test_bad_mask_file_is_named_with_split_and_index(project, damage, fragment):
    damage(Path("data/masks/train_002.png"))
    with pytest.raises((CorruptImageError, FileNotFoundError)) as info:
        preflight_images(reader("train"), "data.train")
    message = str(info.value)
    assert "data.train sample 2" in message and "train_002.png" in message and fragment in message


@pytest.mark.parametrize("mask, mode, fragment", [
    (np.zeros((32, 64), np.uint8), None, r"shape \(32, 64\) but its image is \(64, 64\)"),
    (np.full((64, 64), 258, np.uint16), None, r"16/32-bit image \(PIL mode 'I;16'\)"),
    (np.zeros((64, 64, 3), np.uint8), None, r"PIL mode 'RGB'.*not colours"),
    (np.zeros((64, 64, 4), np.uint8), None, r"PIL mode 'RGBA'"),
    (np.full((64, 64), 7, np.uint8), "L", r"values \[7\] that are neither a class index \(0..2: 3 classes\) nor 255"),
], ids=["smaller", "16-bit", "rgb", "rgba", "label-7"])
def test_mask_that_does_not_fit_is_named(project, mask, mode, fragment):
    write_mask("train_001", mask, mode)
    with pytest.raises(ValueError, match=r"FolderSegmentation.sample\(1\) failed: mask \S*train_001.png.* " + fragment):
        load("train", 1)


def test_tif_images_are_read(project):
    import cv2

    image = cv2.imread("data/images/train_000.jpg")
    Path("data/images/train_000.jpg").unlink()
    cv2.imwrite("data/images/train_000.tif", image)
    sample = reader("train").dataset.sample(0)
    assert sample["image_meta"]["image_file"].endswith("train_000.tif") and sample["image"].shape == (64, 64, 3)


def test_split_names_with_extension_get_a_hint(project):
    Path("data/splits/train.txt").write_text("train_000.jpg\ntrain_001\n")
    with pytest.raises(FileNotFoundError, match=r"train.txt names 1 images .*\['train_000.jpg'\]; list names "
                                                r"without the extension \('train_000', not 'train_000.jpg'\)"):
        reader("train")


def test_no_images_says_which_suffixes(project):
    for path in Path("data/images").iterdir():
        path.rename(path.with_suffix(".gif"))
    with pytest.raises(FileNotFoundError, match=r"no images in data/images: expected files ending in .*\.tif"):
        reader("train")


def test_val_split_file_missing_beside_train_is_an_error(project):
    Path("data/splits/val.txt").unlink()
    assert len(reader("train")) == 4
    with pytest.raises(FileNotFoundError, match=r"split file data/splits/val.txt does not exist, but data/splits "
                                                r"has \['train.txt'\]; add val.txt .*or remove the folder"):
        reader("val")
    shutil.rmtree("data/splits")  # no splits folder: every image in every split, as documented
    assert len(reader("val")) == 6


def test_classes_file_must_match_the_config(project):
    Path("data/classes.txt").write_text("background\ndisc\nbox\nring\n")
    with pytest.raises(ValueError, match=r"classes.txt lists 4 classes .* but the config has 3"):
        reader("train")


def test_preflight_skip_is_logged_for_a_data_set_without_image_files(project, caplog):
    import my_dataset

    class NoFileList(my_dataset.FolderSegmentation):
        image_files = None  # a plugin that does not say which files it reads

    train = reader("train")
    train.dataset.__class__ = NoFileList
    with caplog.at_level(logging.INFO, logger="antgo.engine.loading"):
        assert preflight_images(train, "data.train") == []
    assert "data.train: pre-flight file check skipped: NoFileList has no image_files(id)" in caplog.text


def test_old_read_mask_import_path_still_works():
    from antgo.data.datasets.pascal_voc import read_mask
    from antgo.data.image_io import read_mask as public

    assert read_mask is public
