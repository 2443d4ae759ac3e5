"""Pascal2012 task_type='DETECTION' on VOC-XML trees and ImageFolder on class-folder trees, with bad input."""
import pickle

import numpy as np
import pytest

from antgo.data.datasets import ImageFolder, Pascal2012, Pascal2012Detection
from antgo.data.datasets._task_writers import write_voc_xml
from antgo.data.datasets._voc_writer import write_ids, write_rgb_jpeg
from antgo.data.datasets.pascal_voc import VOC_CLASS_NAMES
from antgo.data.datasets.synthetic_tasks import SHAPE_CLASS_NAMES, make_demo_cls, make_voc_det_tree
from antgo.registry import DATASETS

DET = dict(task_type="DETECTION")


def blank_jpeg(path, h=20, w=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rgb_jpeg(path, np.zeros((h, w, 3), np.uint8))


def hand_voc(root, objects, sid="2007_000001", split="train", class_names=None):
    voc = root / "VOC2012"
    blank_jpeg(voc / "JPEGImages" / f"{sid}.jpg")
    write_voc_xml(voc / "Annotations" / f"{sid}.xml", f"{sid}.jpg", (20, 30), objects)
    write_ids(voc / "ImageSets" / "Main" / f"{split}.txt", [sid])
    if class_names is not None:
        write_ids(voc / "class_names.txt", class_names)
    return root


def test_voc_xml_boxes_labels_and_difficult(tmp_path):
    root = hand_voc(tmp_path, [{"name": "dog", "box": (0, 1, 10, 12)}, {"name": "aeroplane", "box": (5, 5, 30, 20),
                                                                         "difficult": True}])
    ds = Pascal2012("train", root, DET)
    assert type(ds) is Pascal2012Detection and isinstance(ds, Pascal2012)
    assert ds.class_names == VOC_CLASS_NAMES[1:] and len(ds) == 1
    s = ds.sample(0)
    assert set(s) == {"image", "bboxes", "labels", "difficult", "image_meta"}
    np.testing.assert_array_equal(s["bboxes"], [[0, 1, 10, 12], [5, 5, 30, 20]])  # xmin - 1, ymin - 1, xmax, ymax
    assert s["bboxes"].dtype == np.float32 and s["labels"].dtype == np.int64
    assert s["labels"].tolist() == [VOC_CLASS_NAMES.index("dog") - 1, 0] and s["difficult"].tolist() == [False, True]
    xml = (root / "VOC2012" / "Annotations" / "2007_000001.xml").read_text()
    assert "<xmin>1</xmin>" in xml and "<xmax>10</xmax>" in xml  # VOC's 1-based inclusive pixels on disk
    kept = Pascal2012("train", root, dict(task_type="DETECTION", keep_difficult=False)).sample(0)
    assert kept["labels"].tolist() == [VOC_CLASS_NAMES.index("dog") - 1] and kept["difficult"].tolist() == [False]
    again = pickle.loads(pickle.dumps(ds))  # spawn-started loader workers pickle the dataset
    assert type(again) is Pascal2012Detection and again.sample(0)["labels"].tolist() == s["labels"].tolist()


def test_generated_tree_class_names_and_builder(tmp_path):
    root = make_voc_det_tree(tmp_path, splits={"train": 6, "val": 2}, difficult_fraction=0.5)
    ds = DATASETS.build(dict(type="Pascal2012", train_or_test="train", dir=str(root), ext_params=DET))
    assert ds.class_names == SHAPE_CLASS_NAMES and len(ds) == 6
    samples = [ds.sample(i) for i in range(6)]
    flags = np.concatenate([s["difficult"] for s in samples])
    assert flags.any() and not flags.all()
    for s in samples:
        h, w = s["image"].shape[:2]
        assert (s["bboxes"][:, 2:] <= [w, h]).all() and (s["bboxes"][:, :2] >= 0).all()
    assert Pascal2012("val", root, dict(task_type="detection")).ids == ["2008_000000", "2008_000001"]
    seg = hand_voc(tmp_path / "bg", [{"name": "cat", "box": (0, 0, 3, 3)}], class_names=["background", "cat"])
    assert Pascal2012("train", seg, DET).class_names == ("cat",)  # a segmentation class list drops background


def test_voc_detection_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)Pascal2012 \\(DETECTION\\).*Annotations/<id>.xml"):
        Pascal2012("train", tmp_path / "nope", DET)
    root = hand_voc(tmp_path, [{"name": "unicorn", "box": (0, 0, 3, 3)}])
    with pytest.raises(FileNotFoundError, match="(?s)ImageSets/Main/val.txt does not exist.*Expected layout"):
        Pascal2012("val", root, DET)
    with pytest.raises(ValueError, match="2007_000001.xml: object 0 has class 'unicorn'"):
        Pascal2012("train", root, DET).sample(0)
    (root / "VOC2012" / "Annotations" / "2007_000001.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="2007_000001.xml is not valid XML"):
        Pascal2012("train", root, DET).sample(0)
    (root / "VOC2012" / "Annotations" / "2007_000001.xml").write_text(
        "<annotation><object><name>cat</name><bndbox><xmin>1</xmin></bndbox></object></annotation>")
    with pytest.raises(ValueError, match="object 0 \\(cat\\) needs <bndbox>"):
        Pascal2012("train", root, DET).sample(0)
    (root / "VOC2012" / "Annotations" / "2007_000001.xml").unlink()
    with pytest.raises(FileNotFoundError, match="annotation file .*2007_000001.xml does not exist"):
        Pascal2012("train", root, DET).sample(0)
    (root / "VOC2012" / "Annotations").rmdir()
    with pytest.raises(FileNotFoundError, match="Annotations does not exist"):
        Pascal2012("train", root, DET)
    with pytest.raises(ValueError, match="keep_difficult must be True or False"):
        Pascal2012("train", root, dict(task_type="DETECTION", keep_difficult="no"))


def test_image_folder_labels_meta_and_class_names(tmp_path):
    root = make_demo_cls(tmp_path / "cls", counts={"train": 8, "val": 4})
    train, val = ImageFolder("train", root), ImageFolder("val", root)
    assert train.class_names == SHAPE_CLASS_NAMES and len(train) == 8 and len(val) == 4
    s = val.sample(1)
    assert set(s) == {"image", "label", "image_meta"} and s["image"].dtype == np.uint8 and s["image"].shape[2] == 3
    assert isinstance(s["label"], int) and SHAPE_CLASS_NAMES[s["label"]] == s["image_meta"]["id"].split("/")[0]
    assert sorted(train.sample(i)["label"] for i in range(8)) == [0, 0, 1, 1, 2, 2, 3, 3]
    # without class_names.txt: the class folders of every split, so a class missing from val keeps its index
    plain = tmp_path / "plain"
    for split, cls in (("train", "b"), ("train", "a"), ("val", "b")):
        blank_jpeg(plain / split / cls / "x.png", 4, 4)
    (plain / "train" / "a" / "notes.txt").write_text("ignored")
    assert ImageFolder("val", plain).class_names == ("a", "b") and ImageFolder("val", plain).sample(0)["label"] == 1
    assert len(ImageFolder("train", plain)) == 2
    assert DATASETS.get("ImageFolder") is ImageFolder


def test_image_folder_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)ImageFolder: folder .* does not exist.*train/<class_name>"):
        ImageFolder("train", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="split folder .*val does not exist"):
        ImageFolder("val", tmp_path)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images in class folders"):
        ImageFolder("val", tmp_path)
    (tmp_path / "val" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode image .*broken.jpg"):
        ImageFolder("val", tmp_path).sample(0)
    write_ids(tmp_path / "class_names.txt", ["dog"])
    with pytest.raises(ValueError, match="class folder .*cat is not listed in .*class_names.txt"):
        ImageFolder("val", tmp_path)
    with pytest.raises(ValueError, match="train_or_test"):
        ImageFolder("trainval", tmp_path)
