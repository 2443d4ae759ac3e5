"""Pascal2012 on generated mini VOC trees."""
import numpy as np
import pytest
from PIL import Image

from antgo.data.datasets import Pascal2012, make_voc_tree
from antgo.data.datasets._voc_writer import write_rgb_jpeg
from antgo.data.datasets.pascal_voc import VOC_CLASS_NAMES
from antgo.registry import DATASETS


def voc_root(d):
    return d / "VOCdevkit" / "VOC2012"


@pytest.fixture
def tree(tmp_path):
    return make_voc_tree(tmp_path / "voc", splits={"train": 4, "val": 3}, sbd=3, seed=1)


def test_sample_fields_palette_masks_and_void(tree):
    ds = Pascal2012("val", str(tree), dict(task_type="SEGMENTATION", aug=True))
    assert len(ds) == 3 and ds.ids == ["2008_000000", "2008_000001", "2008_000002"]
    assert ds.class_names == VOC_CLASS_NAMES and len(ds.class_names) == 21
    s = ds.sample(0)
    assert set(s) == {"image", "segments", "image_meta"}
    assert s["image"].dtype == np.uint8 and s["image"].ndim == 3 and s["image"].shape[2] == 3
    assert s["segments"].dtype == np.uint8 and s["segments"].shape == s["image"].shape[:2]
    assert s["image_meta"]["id"] == "2008_000000"
    assert s["image_meta"]["image_file"].endswith("JPEGImages/2008_000000.jpg")
    assert tuple(s["image_meta"]["image_shape"]) == s["image"].shape[:2]
    png = voc_root(tree) / "SegmentationClass" / "2008_000000.png"
    with Image.open(png) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(s["segments"], np.array(im))
    masks = [ds.sample(i)["segments"] for i in range(len(ds))]
    values = set(np.unique(np.concatenate([m.ravel() for m in masks])))
    assert 255 in values and values - {255} <= set(range(21)) and len(values - {0, 255}) >= 1


def test_image_is_rgb(tmp_path):
    root = make_voc_tree(tmp_path, splits={"train": 1, "val": 1})
    voc = voc_root(root)
    h, w = np.array(Image.open(voc / "SegmentationClass" / "2007_000000.png")).shape
    red = np.zeros((h, w, 3), np.uint8)
    red[..., 0] = 250  # pure red in RGB
    write_rgb_jpeg(voc / "JPEGImages" / "2007_000000.jpg", red)
    img = Pascal2012("train", str(root), dict(aug=False)).sample(0)["image"]
    assert img[..., 0].mean() > 240 and img[..., 2].mean() < 10


def test_aug_merges_sbd_without_duplicates_or_val(tree):
    ds = Pascal2012("train", tree, dict(task_type="SEGMENTATION", aug=True))
    trainaug = (tree / "trainaug.txt").read_text().split()
    val = (voc_root(tree) / "ImageSets/Segmentation/val.txt").read_text().split()
    assert any(i in val for i in trainaug)  # the generated list includes a val id, as SBD does
    assert len(ds.ids) == len(set(ds.ids)) == 4 + 3 and ds.num_sbd == 3
    assert not set(ds.ids) & set(val)
    assert ds.ids[:4] == [f"2007_{k:06d}" for k in range(4)]
    # a train id listed in trainaug keeps its VOC mask (the one with void boundaries)
    first = ds.sample(0)["segments"]
    voc_mask = np.array(Image.open(voc_root(tree) / "SegmentationClass/2007_000000.png"))
    np.testing.assert_array_equal(first, voc_mask)
    assert 255 in first
    extra = ds.sample(4)
    assert extra["image_meta"]["id"] == "2011_000000" and 255 not in extra["segments"]  # SBD grey mask


def test_aug_false_and_other_splits_skip_sbd(tree):
    assert len(Pascal2012("train", tree, dict(aug=False))) == 4
    assert len(Pascal2012("val", tree, dict(aug=True))) == 3
    assert len(Pascal2012("trainval", tree, dict(aug=True))) == 7


@pytest.mark.parametrize("layout,sub", [("devkit", ""), ("voc2012", ""), ("flat", ""), ("devkit", "VOCdevkit/VOC2012"),
                                        ("voc2012", "VOC2012")])
def test_three_dir_forms_find_data_and_sbd(tmp_path, layout, sub):
    root = make_voc_tree(tmp_path, splits={"train": 2, "val": 1}, sbd=2, layout=layout)
    ds = Pascal2012("train", str(root / sub) if sub else str(root), dict(aug=True))
    assert len(ds) == 4 and ds.sample(3)["image"].ndim == 3


def test_registered_and_built_by_name(tree):
    ds = DATASETS.build(dict(type="Pascal2012", train_or_test="val", dir=str(tree), ext_params=dict(aug=True)))
    assert isinstance(ds, Pascal2012) and len(ds) == 3


def test_missing_folder_shows_layout_and_no_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        Pascal2012("train", str(tmp_path / "nowhere"))
    msg = str(info.value)
    assert "JPEGImages" in msg and "SegmentationClass" in msg and "ImageSets/Segmentation" in msg
    assert "does not download" in msg


def test_missing_split_file(tmp_path):
    root = make_voc_tree(tmp_path, splits={"train": 1, "val": 1})
    with pytest.raises(FileNotFoundError, match="test.txt"):
        Pascal2012("test", root)
    with pytest.raises(ValueError, match="train_or_test"):
        Pascal2012("bogus", root)


def test_undecodable_image_names_file(tmp_path):
    root = make_voc_tree(tmp_path, splits={"train": 2, "val": 1})
    bad = voc_root(root) / "JPEGImages" / "2007_000001.jpg"
    bad.write_bytes(b"not a jpeg")
    ds = Pascal2012("train", root, dict(aug=False))
    with pytest.raises(ValueError, match="2007_000001.jpg"):
        ds.sample(1)


def test_rgb_mask_and_wrong_shape_are_named(tmp_path):
    root = make_voc_tree(tmp_path, splits={"train": 2, "val": 1})
    seg_dir = voc_root(root) / "SegmentationClass"
    mask0 = np.array(Image.open(seg_dir / "2007_000000.png"))
    Image.fromarray(np.stack([mask0] * 3, -1)).save(seg_dir / "2007_000000.png")  # an RGB colour mask
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(seg_dir / "2007_000001.png")
    ds = Pascal2012("train", root, dict(aug=False))
    with pytest.raises(ValueError, match=r"2007_000000\.png.*'RGB'.*palette"):
        ds.sample(0)
    with pytest.raises(ValueError, match=r"2007_000001\.png.*\(5, 5\)"):
        ds.sample(1)


def test_task_type_other_than_segmentation_or_detection(tree):
    with pytest.raises(NotImplementedError, match="SEGMENTATION.*DETECTION"):
        Pascal2012("train", tree, dict(task_type="KEYPOINTS"))


def test_test_split_without_masks_and_class_names_file(tmp_path):
    root = make_voc_tree(tmp_path, splits={"train": 1, "test": 2}, num_classes=3, class_names=["bg", "a", "b"])
    ds = Pascal2012("test", root)
    assert ds.class_names == ("bg", "a", "b") and "segments" not in ds.sample(1)
    train = Pascal2012("train", root)
    assert set(np.unique(train.sample(0)["segments"])) <= {0, 1, 2, 255}


def test_missing_folder_through_the_builder_names_the_config_key(tmp_path):
    from antgo.data import build_dataset

    with pytest.raises(FileNotFoundError) as info:
        build_dataset(dict(type="Pascal2012", train_or_test="val", dir=str(tmp_path / "nowhere")), "data.val")
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "while building data.val" in notes and "data.val.dir=" in notes


def test_aug_must_be_a_bool(tmp_path):
    root = make_voc_tree(tmp_path, splits={"train": 1, "val": 1})
    with pytest.raises(ValueError, match="ext_params.aug must be True or False"):
        Pascal2012("train", root, ext_params=dict(aug="False"))
